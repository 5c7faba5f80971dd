"""The warehouse models over events the pack really delivered (synthralos_analytics.scenario):
every figure below follows from the script by hand, duplicates included, so the dedup is proved.

The script in short (scenario.RECOVERIES): eight recoveries over two weeks,
  week of 2026-11-02: R1 agent-a timeout rules repaired at attempt 1 in 30 s; R2 agent-a timeout rules
    attempt 2, 90 s; R3 agent-b llm_error llm attempt 2, 45 s; R4 agent-b tool_failure rules escalated
  week of 2026-11-09: R5 agent-a invalid_output llm attempt 1, 12 s; R6 agent-b llm_error rules
    escalated; R7 agent-a timeout rules attempt 1, 60 s; R8 agent-b timeout llm attempt 3, 240 s
The steps are the pack's rule plans: timeout = reduce_max_iterations, simplify_query, switch_provider;
llm_error = retry_with_backoff, switch_provider; invalid_output = regenerate_output, retry_execution.
p95 is the continuous percentile (linear interpolation): timeout [30, 60, 90, 240] -> 90 + 0.85 * 150.
"""

from decimal import Decimal

import pytest

from conftest import MODELS_SCHEMA, SCHEMA, query


def rows(built, model, order="1, 2, 3"):
    return query(built["dsn"], "select * from %s.%s order by %s" % (MODELS_SCHEMA, model, order))


def close(actual, expected):
    return actual is None and expected is None or (actual is not None and abs(float(actual) - expected) < 1e-9)


def test_the_raw_tables_hold_the_duplicates_that_the_models_drop(built):
    """Lost acknowledgements (R1, R3 with its two LLM calls) and the replay (R2, R6) land twice."""
    counts = {}
    for table in ("agent_repair", "agent_failure", "llm_cost_logged", "tracks"):
        counts[table] = query(built["dsn"], 'select count(*), count(distinct id) from %s."%s"' % (SCHEMA, table))[0]
    assert counts["agent_repair"] == (9, 6)  # R1, R3 retried; R2 replayed
    assert counts["agent_failure"] == (3, 2)  # R6 replayed
    assert counts["llm_cost_logged"] == (7, 5)  # R3's two calls retried
    assert counts["tracks"] == (32, 26)
    assert query(built["dsn"], "select count(*) from %s.recoveries" % MODELS_SCHEMA) == [(8,)]


def test_recovery_rate_and_time_to_recovery(built):
    got = {(r[0] and r[0].isoformat(), r[1], r[2]): r[3:] for r in rows(built, "recovery_performance")}
    expected = {
        # (week or None for all time, dimension, value): recoveries, repaired, escalated, rate, mean s, p95 s
        (None, "all", "all"): (8, 6, 2, 0.75, 79.5, 202.5),
        (None, "failure_type", "timeout"): (4, 4, 0, 1.0, 105.0, 217.5),
        (None, "failure_type", "llm_error"): (2, 1, 1, 0.5, 45.0, 45.0),
        (None, "failure_type", "tool_failure"): (1, 0, 1, 0.0, None, None),
        (None, "failure_type", "invalid_output"): (1, 1, 0, 1.0, 12.0, 12.0),
        (None, "agent", "agent-a"): (4, 4, 0, 1.0, 48.0, 85.5),
        (None, "agent", "agent-b"): (4, 2, 2, 0.5, 142.5, 230.25),
        (None, "plan_source", "rules"): (5, 3, 2, 0.6, 60.0, 87.0),
        (None, "plan_source", "llm"): (3, 3, 0, 1.0, 99.0, 220.5),
        ("2026-11-02", "all", "all"): (4, 3, 1, 0.75, 55.0, 85.5),
        ("2026-11-09", "all", "all"): (4, 3, 1, 0.75, 104.0, 222.0),
        ("2026-11-09", "failure_type", "timeout"): (2, 2, 0, 1.0, 150.0, 231.0),
        ("2026-11-09", "failure_type", "llm_error"): (1, 0, 1, 0.0, None, None),
        ("2026-11-02", "plan_source", "rules"): (3, 2, 1, 2.0 / 3, 60.0, 87.0),
        ("2026-11-09", "agent", "agent-b"): (2, 1, 1, 0.5, 240.0, 240.0),
    }
    for key, (recoveries, repaired, escalated, rate, mean, p95) in expected.items():
        assert key in got, key
        row = got[key]
        assert row[:3] == (recoveries, repaired, escalated), (key, row)
        assert close(row[3], rate) and close(row[4], mean) and close(row[5], p95), (key, row)
    assert len(got) == 25  # 2 weeks + all time, each: all, 4 or 3 failure types, 2 agents, 2 plan sources


def test_repair_step_effectiveness(built):
    got = [r[:5] + (round(r[5], 9),) for r in rows(built, "repair_step_effectiveness")]
    assert got == [
        # failure type, step, attempt, repairs, recoveries of that type, share
        ("invalid_output", "regenerate_output", 1, 1, 1, 1.0),
        ("llm_error", "switch_provider", 2, 1, 2, 0.5),
        ("timeout", "reduce_max_iterations", 1, 2, 4, 0.5),
        ("timeout", "simplify_query", 2, 1, 4, 0.25),
        ("timeout", "switch_provider", 3, 1, 4, 0.25),
    ]


def test_llm_cost_per_recovery_and_agent(built):
    per_recovery = {r[0][-1]: (r[5], r[6]) for r in rows(built, "llm_cost_per_recovery")}
    # R3: 2000/1000 tokens at $0.001/$0.002 per 1k + 1000/500 at $0.003/$0.015; R5: 3000/1000 at 0.001/0.002;
    # R6: 1000/1000 at 0.003/0.015. Counted once each although R3's calls landed twice.
    assert per_recovery == {
        "1": (0, Decimal("0")), "2": (0, Decimal("0")), "3": (2, Decimal("0.0145")), "4": (0, Decimal("0")),
        "5": (1, Decimal("0.005")), "6": (1, Decimal("0.018")), "7": (0, Decimal("0")), "8": (0, Decimal("0")),
    }
    by_agent = {r[0]: r[1:] for r in rows(built, "llm_cost_by_agent", "1")}
    # agent-a also made one call outside any recovery ($0.001): in its spend, not in its recovery spend.
    assert by_agent["agent-a"] == (2, Decimal("0.006"), 4, Decimal("0.005"), Decimal("0.00125"))
    assert by_agent["agent-b"] == (3, Decimal("0.0325"), 4, Decimal("0.0325"), Decimal("0.008125"))


def test_cron_jobs(built):
    got = {r[0]: r[1:] for r in rows(built, "cron_jobs", "1")}
    # disables, failures before disable, probes, failed, succeeded, re-enables, seconds disabled, disabled now
    assert got["nightly_export"][:8] == (1, 10, 2, 1, 1, 1, 10800.0, False)
    assert got["hourly_sync"][:8] == (1, 10, 0, 0, 0, 0, 0.0, True)
    assert got["nightly_export"][8].isoformat() == "2026-11-10T03:00:00"


def test_guardrail_checks(built):
    got = [(float(r[0]), r[1], r[2], r[3], round(r[4], 9), r[5]) for r in rows(built, "guardrail_checks")]
    assert got == [
        # threshold, action, checks, above threshold, mean score, max score
        (0.8, "allowed", 3, 0, 0.3, 0.5),
        (0.8, "blocked", 1, 1, 0.95, 0.95),
        (0.8, "flagged", 1, 1, 0.85, 0.85),
        (0.9, "allowed", 1, 0, 0.3, 0.3),
        (0.9, "blocked", 1, 1, 0.92, 0.92),
        (0.9, "warned", 1, 1, 0.91, 0.91),
    ]


def test_event_delivery_health(built):
    got = {(r[0], r[1].isoformat()): r[2:] for r in rows(built, "event_delivery_hourly")}
    # rows loaded, events, duplicate rows, late events, max lateness (s)
    assert got[("agent_repair", "2026-11-02T09:00:00")] == (2, 1, 1, 0, 0)  # R1: lost acknowledgement
    assert got[("llm_cost_logged", "2026-11-04T11:00:00")] == (4, 2, 2, 0, 0)  # R3's calls: the same
    assert got[("agent_repair", "2026-11-03T14:00:00")] == (2, 1, 1, 0, 0)  # R2: replayed days later
    assert got[("agent_failure", "2026-11-10T08:00:00")] == (2, 1, 1, 0, 0)  # R6: replayed
    # Queued during the two-hour outage: every check arrived 7200 s late.
    assert got[("prompt_similarity_logged", "2026-11-11T10:00:00")] == (8, 8, 0, 8, 7200)
    assert sum(v[0] for v in got.values()) == 32 and sum(v[1] for v in got.values()) == 26
    assert sum(v[3] for v in got.values()) == 8


def test_every_value_fitted_its_column(built):
    """No property changed type between events (a mismatch would land in rudder_discards)."""
    found = query(built["dsn"], "select count(*) from information_schema.tables where table_schema = %s "
                                "and table_name = 'rudder_discards'", (SCHEMA,))
    assert found == [(0,)]


@pytest.mark.parametrize("model", ["recoveries", "recovery_performance", "repair_step_effectiveness",
                                   "repair_step_attempts", "llm_cost_per_recovery", "llm_cost_by_agent", "cron_jobs",
                                   "guardrail_checks", "event_delivery_hourly"])
def test_dbt_built_and_tested_each_model(built, model):
    assert "Completed successfully" in built["dbt_output"]
    assert "OK created sql table model %s.%s" % (MODELS_SCHEMA, model) in built["dbt_output"]


def test_repair_step_attempts(built):
    """Every step tried (the attempt logs), escalations included."""
    got = [r[:5] + (round(r[5], 9),) for r in rows(built, "repair_step_attempts", "1, 3, 2")]
    assert got == [
        # failure type, step, attempt, tries, fixes, fix rate
        ("invalid_output", "regenerate_output", 1, 1, 1, 1.0),  # R5
        ("llm_error", "retry_with_backoff", 1, 2, 0, 0.0),  # R3, R6
        ("llm_error", "switch_provider", 2, 2, 1, 0.5),  # R3 fixed, R6 escalated
        ("timeout", "reduce_max_iterations", 1, 4, 2, 0.5),  # R1, R7 fixed; R2, R8 went on
        ("timeout", "simplify_query", 2, 2, 1, 0.5),  # R2 fixed, R8 went on
        ("timeout", "switch_provider", 3, 1, 1, 1.0),  # R8
        ("tool_failure", "retry_tool", 1, 1, 0, 0.0),  # R4
        ("tool_failure", "retry_execution", 2, 1, 0, 0.0),  # R4, then escalated
    ]
