"""A scripted fortnight of self-healing, sent through the pack's own event path.

Every event is built by the pack's library (`events.builders`, `cron.events`),
its inputs produced by the pack's own code where it has any (failures from
`healing.detection.detect_failure`, plans from `healing.plans.plan_repair`,
cron transitions from a real `cron.backoff.CronBackoff` over Redis), queued
with `events.forwarding.forward` into the Redis outbox and delivered by
`RedisOutbox.flush` with the pack's `RudderStackClient` to the data plane at
`rudderstack_url`. Only the clock is scripted: the cron library and the sink
read it, so every figure is exact.

The script (RECOVERIES, LLM_CALLS, SIMILARITY_CHECKS, the cron story) and its
faults:

* a lost acknowledgement: the data plane writes the batches of R1 and R3 and
  then answers 503, so the client's retry lands them twice;
* a replay: the forwarding rule fires again for R2 and R6 at the end (same
  st2 execution, so the same messageIds), landing them once more;
* an outage: the similarity checks are queued while the data plane answers
  503 and are delivered two hours later (late arrivals).

`expected()` in the tests spells out the figures this implies.
"""

from datetime import datetime, timedelta, timezone

from synthralos_lib.cron.backoff import CronBackoff
from synthralos_lib.cron.events import transition_event
from synthralos_lib.events import builders
from synthralos_lib.events.forwarding import correlation, forward, open_outbox
from synthralos_lib.events.rudderstack import RudderStackClient
from synthralos_lib.healing.detection import detect_failure
from synthralos_lib.healing.plans import plan_repair
from synthralos_lib.state.config import load_config
from synthralos_lib.state.store import RedisStore

WRITE_KEY = "analytics-write-key"
WEEK_1 = datetime(2026, 11, 2, tzinfo=timezone.utc)  # a Monday
WEEK_2 = WEEK_1 + timedelta(days=7)

# Agent execution results that detection classifies as each failure type.
FAILED_RESULTS = {
    "timeout": {"status": "timeout", "duration_ms": 310000, "timeout_ms": 300000, "max_iterations": 20},
    "llm_error": {"status": "failed", "llm_error": {"status_code": 503, "message": "upstream unavailable"},
                  "provider": "openai", "model": "gpt-4o"},
    "tool_failure": {"status": "failed", "tool_results": [{"tool": "search", "status": "error", "error": "HTTP 502"}]},
    "invalid_output": {"status": "succeeded", "output": ""},
}

# (name, st2 execution id, ended at, agent, failure type, plan source, repaired at attempt (None: escalated
#  after every step), seconds from detection to the end)
RECOVERIES = [
    ("R1", "6a0000000000000000000001", WEEK_1 + timedelta(days=0, hours=9), "agent-a", "timeout", "rules", 1, 30.0),
    ("R2", "6a0000000000000000000002", WEEK_1 + timedelta(days=1, hours=14), "agent-a", "timeout", "rules", 2, 90.0),
    ("R3", "6a0000000000000000000003", WEEK_1 + timedelta(days=2, hours=11), "agent-b", "llm_error", "llm", 2, 45.0),
    ("R4", "6a0000000000000000000004", WEEK_1 + timedelta(days=3, hours=16), "agent-b", "tool_failure", "rules", None, 120.0),
    ("R5", "6a0000000000000000000005", WEEK_2 + timedelta(days=0, hours=10), "agent-a", "invalid_output", "llm", 1, 12.0),
    ("R6", "6a0000000000000000000006", WEEK_2 + timedelta(days=1, hours=8), "agent-b", "llm_error", "rules", None, 75.0),
    ("R7", "6a0000000000000000000007", WEEK_2 + timedelta(days=3, hours=13), "agent-a", "timeout", "rules", 1, 60.0),
    ("R8", "6a0000000000000000000008", WEEK_2 + timedelta(days=4, hours=15), "agent-b", "timeout", "llm", 3, 240.0),
]
# (recovery name or None for a call outside any recovery, agent, call id, model, input tokens, output tokens,
#  input $/1k, output $/1k)
LLM_CALLS = [
    ("R3", "agent-b", "call-3a", "gpt-4o", 2000, 1000, 0.001, 0.002),
    ("R3", "agent-b", "call-3b", "claude-3-5-haiku", 1000, 500, 0.003, 0.015),
    ("R5", "agent-a", "call-5a", "gpt-4o", 3000, 1000, 0.001, 0.002),
    ("R6", "agent-b", "call-6a", "claude-3-5-haiku", 1000, 1000, 0.003, 0.015),
    (None, "agent-a", "call-x1", "gpt-4o", 1000, 0, 0.001, 0.002),
]
# (threshold, score, action taken or None for the builder's default)
SIMILARITY_CHECKS = [
    (0.8, 0.95, "blocked"), (0.8, 0.85, None), (0.8, 0.5, None), (0.8, 0.2, None), (0.8, 0.2, None),
    (0.9, 0.92, "blocked"), (0.9, 0.3, None), (0.9, 0.91, "warned"),
]
SIMILARITY_AT = WEEK_2 + timedelta(days=2, hours=10)
OUTAGE_S = 7200
LOST_ACK_FOR = ("R1", "R3")
REPLAYED = ("R2", "R6")
CRON_DISABLED_AT = WEEK_2 + timedelta(days=1, hours=3)
CRON_STILL_DISABLED_AT = WEEK_2 + timedelta(days=3, hours=8)


def trace_id(name):
    return "%032x" % (0xA0 + int(name[1:]))


def recovery_event(settings, recovery):
    """The agent_repair / agent_failure event the forwarding rules build for one RECOVERIES entry."""
    name, execution_id, ended_at, agent, failure_type, source, repaired_at, duration_s = recovery
    failure = detect_failure(FAILED_RESULTS[failure_type])
    assert failure["failure_type"] == failure_type, failure
    plan = plan_repair(failure, settings, clock=lambda: ended_at.timestamp() - duration_s)
    plan["source"] = source  # the script decides which planner's plan this recovery ran
    steps = plan["steps"]
    tried = steps[:repaired_at] if repaired_at else steps
    attempt_log = [{"attempt": i + 1, "action": step["action"], "params": step["params"],
                    "repaired": repaired_at == i + 1, "new_execution_id": "%s-a%d" % (execution_id, i + 1),
                    "error_class": None if repaired_at == i + 1 else "still_failing",
                    "error_message": None, "failure_type": failure_type, "duration_s": 5.0}
                   for i, step in enumerate(tried)]
    repaired = repaired_at is not None
    output = {
        "outcome": "repaired" if repaired else "escalated",
        "repaired": repaired,
        "repaired_by": tried[-1]["action"] if repaired else None,
        "attempts": len(attempt_log),
        "attempt_log": attempt_log,
        "duration_s": duration_s,
        "plan": plan,
        "failure": failure,
    }
    # What st2's actiontrigger carries as the workflow's result; a failed Orquesta workflow adds errors.
    result = {"output": output}
    if not repaired:
        result["errors"] = [{"type": "error", "message": "Execution failed. See result for details.",
                             "task_id": "escalate"}]
    corr = correlation(settings, source_execution_id=execution_id, agent_id=agent, trace_id=trace_id(name))
    started_at = ended_at - timedelta(seconds=duration_s + 2)
    return builders.agent_event(
        builders.EVENT_AGENT_REPAIR if repaired else builders.EVENT_AGENT_FAILURE, corr,
        "succeeded" if repaired else "failed", started_at=started_at, ended_at=ended_at,
        details={"workflow": "synthralos.agent_recovery", "result": result})


def cost_event(settings, call, at):
    """The llm_cost_logged event of one LLM_CALLS entry."""
    name, agent, call_id, model, tokens_in, tokens_out, price_in, price_out = call
    corr = correlation(settings, source_execution_id="llm-%s" % call_id, agent_id=agent,
                       trace_id=trace_id(name) if name else "%032x" % 0xFFF)
    provider = "openai" if model.startswith("gpt") else "anthropic"
    prices = {"model_prices": settings.section("model_prices"), "llm_targets": settings.llm_targets()}
    return builders.llm_cost_event(corr, provider, model, tokens_in, tokens_out, prices,
                                   workflow_execution_id="wf-%s" % (name or "none"), node_id="node-1",
                                   timestamp=at, discriminator=call_id, input_price_per_1k=price_in,
                                   output_price_per_1k=price_out)



def scenario_settings(rudderstack_url, redis_url):
    """The pack config the script runs with (two LLM targets, so plans can switch provider)."""
    return load_config({
        "rudderstack": {"write_key": WRITE_KEY, "data_plane_url": rudderstack_url, "max_retries": 2,
                        "retry_delay_ms": 1, "batch_size": 20},
        "redis": {"url": redis_url},
        "observability": {"workspace_id": "ws-1", "organization_id": "org-1",
                          "langfuse_base_url": "https://langfuse.example.com"},
        "llm_targets": [
            {"name": "oa", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o"},
            {"name": "an", "kind": "anthropic", "base_url": "http://127.0.0.1:9/v1", "model": "claude-3-5-haiku"},
        ],
    })


def similarity_events(settings):
    """The prompt_similarity_logged events of SIMILARITY_CHECKS."""
    events = []
    for number, (threshold, score, action) in enumerate(SIMILARITY_CHECKS, 1):
        corr = correlation(settings, source_execution_id="sim-%d" % number,
                           agent_id="agent-a" if number % 2 else "agent-b")
        events.append(builders.similarity_event(corr, threshold, score=score, action_taken=action,
                                                prompt="prompt %d" % number, timestamp=SIMILARITY_AT))
    return events


class ScriptedClock(object):
    """Wall time the script moves; `now()` for the sink (datetime), `__call__` for the library (epoch)."""

    def __init__(self, start):
        self.moment = start

    def set(self, moment):
        self.moment = moment

    def advance(self, seconds):
        self.moment += timedelta(seconds=seconds)

    def now(self):
        return self.moment

    def __call__(self):
        return self.moment.timestamp()


class Scenario(object):
    def __init__(self, rudderstack_url, redis_url, clock, sink):
        self.clock = clock
        self.sink = sink
        self.settings = scenario_settings(rudderstack_url, redis_url)
        self.store = RedisStore(redis_url, key_prefix="synthralos-analytics:")
        self.outbox = open_outbox(self.settings, self.store, clock=clock)
        # The pack's client; its retry sleeps are skipped so the scripted clock stays put.
        self.client = RudderStackClient.from_settings(self.settings.section("rudderstack"), sleep=lambda s: None)
        self.flushes = []
        self.built = {}  # recovery name -> the events built for it (for the replay)

    # -- the event path ------------------------------------------------------------
    def send(self, events):
        for event in events:
            queued = forward(self.settings, self.store, event, client=self.client, inline_flush=False)
            if queued["status"] != "queued":
                raise AssertionError("event not queued: %r" % queued)

    def flush(self):
        report = self.outbox.flush(self.client)
        self.flushes.append(report)
        return report

    # -- the story ---------------------------------------------------------------------
    def run(self):
        for recovery in RECOVERIES:
            name, ended_at = recovery[0], recovery[2]
            self.clock.set(ended_at)
            events = [self.recovery_event(recovery)] + [self.cost_event(call, ended_at) for call in LLM_CALLS
                                                        if call[0] == name]
            self.built[name] = events
            self.send(events)
            if name in LOST_ACK_FOR:
                self.sink.answer_after_write(503)
            self.flush()
        self.clock.set(WEEK_2 + timedelta(days=4, hours=20))
        self.send([self.cost_event(call, self.clock.now()) for call in LLM_CALLS if call[0] is None])
        self.flush()
        self.cron_story()
        self.similarity_outage()
        # The forwarding rule fires again for two recoveries: same executions, same messageIds.
        self.clock.set(WEEK_2 + timedelta(days=5, hours=9))
        self.send([self.recovery_event(r) for r in RECOVERIES if r[0] in REPLAYED])
        self.flush()
        return self

    def recovery_event(self, recovery):
        return recovery_event(self.settings, recovery)

    def cost_event(self, call, at):
        return cost_event(self.settings, call, at)

    def cron_story(self):
        """nightly_export: 10 failures disable it, a probe fails, the next succeeds (re-enabled after 3 h).
        hourly_sync: disabled later and still disabled at the end."""
        backoff = CronBackoff.from_config(self.settings, self.store, clock=self.clock)
        corr = correlation(self.settings)

        def record(job, ok, error=None):
            transitions = backoff.record(job, ok, error)["transitions"]
            self.send([transition_event(corr, t) for t in transitions])
            self.flush()

        for minutes in range(9, -1, -1):  # failures every minute up to the tenth, which disables the job
            self.clock.set(CRON_DISABLED_AT - timedelta(minutes=minutes))
            record("nightly_export", False, "export failed: HTTP 500")
        self.clock.set(CRON_DISABLED_AT + timedelta(hours=1))  # the quiet period (1 h) is over: one probe
        assert backoff.check("nightly_export")["probe"]
        record("nightly_export", False, "export failed: HTTP 500")
        self.clock.set(CRON_DISABLED_AT + timedelta(hours=3))  # the doubled quiet period (2 h) is over
        assert backoff.check("nightly_export")["probe"]
        record("nightly_export", True)
        for minutes in range(9, -1, -1):
            self.clock.set(CRON_STILL_DISABLED_AT - timedelta(minutes=minutes))
            record("hourly_sync", False, "sync failed: timeout")

    def similarity_outage(self):
        """The checks are queued while the data plane is down and land OUTAGE_S later."""
        self.clock.set(SIMILARITY_AT)
        events = similarity_events(self.settings)
        self.send(events)
        self.sink.outage(503)
        failed = self.flush()
        self.clock.advance(OUTAGE_S)
        self.sink.recover()
        delivered = self.flush()
        return failed, delivered
