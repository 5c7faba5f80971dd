"""A static HTML report over the warehouse models: one file, inline CSS and SVG, no script, no CDN.

    python -m synthralos_analytics.report --dsn "host=... dbname=..." --schema analytics --out report.html

Every figure sits in an element with `data-metric="<name>"` (and the raw value in
`data-value`), so a browser test, or a scraper, can read the numbers back.
"""

import argparse
import html
from datetime import datetime, timezone

import psycopg2

WIDTH = 600
BAR_HEIGHT = 22
LABEL_WIDTH = 240
COLORS = {"good": "#2e7d32", "bad": "#c62828", "neutral": "#1565c0", "muted": "#90a4ae", "warn": "#ef6c00"}


def fetch(dsn, schema):
    """The rows the report shows, read from the models in `schema`."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            def rows(statement):
                cur.execute(statement.replace("{s}", '"%s"' % schema.replace('"', '""')))
                return cur.fetchall()

            return {
                "overall": rows("select recoveries, repaired, escalated, recovery_rate, mean_time_to_recovery_s, "
                                "p95_time_to_recovery_s from {s}.recovery_performance "
                                "where week is null and dimension = 'all'"),
                "by_type": rows("select dimension_value, recoveries, repaired, recovery_rate, mean_time_to_recovery_s, "
                                "p95_time_to_recovery_s from {s}.recovery_performance "
                                "where week is null and dimension = 'failure_type' order by dimension_value"),
                "by_week": rows("select week, recoveries, repaired, recovery_rate from {s}.recovery_performance "
                                "where week is not null and dimension = 'all' order by week"),
                "by_source": rows("select dimension_value, recoveries, recovery_rate from {s}.recovery_performance "
                                  "where week is null and dimension = 'plan_source' order by dimension_value"),
                "steps": rows("select failure_type, step, attempt, repairs, share_of_failure_type "
                              "from {s}.repair_step_effectiveness order by failure_type, attempt, step"),
                "cost_by_agent": rows("select agent_id, llm_calls, llm_cost_usd, recoveries, llm_cost_per_recovery_usd "
                                      "from {s}.llm_cost_by_agent order by agent_id"),
                "recovery_cost": rows("select coalesce(sum(llm_cost_usd), 0), count(*) from {s}.llm_cost_per_recovery"),
                "cron": rows("select job_id, disables, failures_before_disable, probes, probes_failed, "
                             "probes_succeeded, reenables, disabled_s, disabled_now from {s}.cron_jobs order by job_id"),
                "guardrails": rows("select threshold, action_taken, checks, above_threshold, mean_score "
                                   "from {s}.guardrail_checks order by threshold, action_taken"),
                "delivery": rows("select event, sum(rows_loaded), sum(events), sum(duplicate_rows), sum(late_events), "
                                 "max(max_lateness_s) from {s}.event_delivery_hourly group by event order by event"),
            }
    finally:
        conn.close()


def esc(value):
    return html.escape(str(value), quote=True)


def metric(name, text, value):
    return '<span class="figure" data-metric="%s" data-value="%s">%s</span>' % (esc(name), esc(value), esc(text))


def pct(value):
    return "n/a" if value is None else "%.1f%%" % (float(value) * 100)


def secs(value):
    return "n/a" if value is None else "%.1f s" % float(value)


def usd(value):
    return "$%.4f" % float(value or 0)


def bar_chart(name, title, bars, max_value=None):
    """A horizontal bar chart as inline SVG; bars: [(label, value, text, color)]."""
    top = max_value if max_value is not None else max([float(v or 0) for _, v, _, _ in bars] + [1e-9])
    height = 28 + BAR_HEIGHT * len(bars) + 8
    parts = ['<svg class="chart" data-chart="%s" role="img" aria-label="%s" width="%d" height="%d" '
             'viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg">' % (esc(name), esc(title), WIDTH, height,
                                                                          WIDTH, height),
             '<text x="0" y="16" class="chart-title">%s</text>' % esc(title)]
    room = WIDTH - LABEL_WIDTH - 200  # the rest is for the value text
    for index, (label, value, text, color) in enumerate(bars):
        y = 28 + index * BAR_HEIGHT
        length = 0 if not top else max(0.0, float(value or 0)) / top * room
        parts.append('<text x="%d" y="%d" class="bar-label" text-anchor="end">%s</text>'
                     % (LABEL_WIDTH - 8, y + 15, esc(label)))
        parts.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s" rx="2"/>'
                     % (LABEL_WIDTH, y + 3, length, BAR_HEIGHT - 6, color))
        parts.append('<text x="%.1f" y="%d" class="bar-value" data-metric="%s.%s" data-value="%s">%s</text>'
                     % (LABEL_WIDTH + length + 6, y + 15, esc(name), esc(label), esc(value), esc(text)))
    parts.append("</svg>")
    return "\n".join(parts)


def table(name, headers, rows):
    head = "".join("<th>%s</th>" % esc(h) for h in headers)
    body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % cell for cell in row) for row in rows)
    return '<table data-table="%s"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (esc(name), head, body)


def render(data, generated_at=None):
    generated_at = generated_at or datetime.now(timezone.utc)
    overall = data["overall"][0] if data["overall"] else (0, 0, 0, None, None, None)
    recoveries, repaired, escalated, rate, mean_ttr, p95_ttr = overall
    total_cost = sum(float(r[2] or 0) for r in data["cost_by_agent"])
    recovery_cost, recovery_count = data["recovery_cost"][0] if data["recovery_cost"] else (0, 0)
    duplicates = sum(int(r[3] or 0) for r in data["delivery"])
    late = sum(int(r[4] or 0) for r in data["delivery"])
    cards = [
        ("Recoveries", metric("recoveries", recoveries, recoveries)),
        ("Recovery rate", metric("recovery_rate", pct(rate), rate)),
        ("Mean time to recovery", metric("mean_time_to_recovery_s", secs(mean_ttr), mean_ttr)),
        ("p95 time to recovery", metric("p95_time_to_recovery_s", secs(p95_ttr), p95_ttr)),
        ("Escalated", metric("escalated", escalated, escalated)),
        ("LLM spend", metric("llm_cost_usd", usd(total_cost), total_cost)),
        ("LLM spend per recovery", metric("llm_cost_per_recovery_usd",
                                          usd(float(recovery_cost) / recovery_count if recovery_count else 0),
                                          float(recovery_cost) / recovery_count if recovery_count else 0)),
        ("Duplicate rows dropped", metric("duplicate_rows", duplicates, duplicates)),
        ("Late events", metric("late_events", late, late)),
    ]
    sections = []
    sections.append(bar_chart("recovery_rate_by_failure_type", "Recovery rate by failure type", [
        ("%s (%d)" % (t, n), float(r), pct(r), COLORS["good"] if float(r) >= 0.8 else COLORS["bad"] if float(r) < 0.5
         else COLORS["warn"]) for t, n, _, r, _, _ in data["by_type"]], max_value=1.0))
    sections.append(bar_chart("time_to_recovery_by_failure_type", "Mean / p95 time to recovery (s)", [
        bar for t, _, _, _, mean, p95 in data["by_type"] if mean is not None
        for bar in (("%s mean" % t, float(mean), secs(mean), COLORS["neutral"]),
                    ("%s p95" % t, float(p95), secs(p95), COLORS["muted"]))]))
    sections.append(bar_chart("recovery_rate_by_week", "Recovery rate by week", [
        ("week of %s" % w.isoformat(), float(r), "%s (%d/%d)" % (pct(r), rep, n), COLORS["neutral"])
        for w, n, rep, r in data["by_week"]], max_value=1.0))
    sections.append(bar_chart("recovery_rate_by_plan_source", "Recovery rate by plan source", [
        ("%s (%d)" % (s, n), float(r), pct(r), COLORS["neutral"]) for s, n, r in data["by_source"]], max_value=1.0))
    sections.append(bar_chart("repairs_by_step", "Repairs by step and attempt", [
        ("%s: %s #%d" % (t, s, a), int(n), "%d (%s of %s)" % (n, pct(share), t), COLORS["good"])
        for t, s, a, n, share in data["steps"]]))
    sections.append(bar_chart("llm_cost_by_agent", "LLM spend by agent (USD)", [
        (a, float(c), "%s, %d calls, %s/recovery" % (usd(c), calls, usd(per) if per is not None else "n/a"),
         COLORS["neutral"]) for a, calls, c, _, per in data["cost_by_agent"]]))
    sections.append(bar_chart("delivery_by_event", "Rows loaded per event (duplicates in the label)", [
        ("%s (%d dup)" % (e, dup), int(rows), "%d rows, %d events, %d late" % (rows, events, late_n),
         COLORS["warn"] if dup else COLORS["neutral"]) for e, rows, events, dup, late_n, _ in data["delivery"]]))
    cron = table("cron_jobs", ["job", "disables", "failures before disable", "probes (failed / ok)", "re-enables",
                               "time disabled", "disabled now"],
                 [[esc(j), esc(d), esc(f), "%s (%s / %s)" % (esc(p), esc(pf), esc(ps)), esc(r),
                   metric("cron.%s.disabled_s" % j, secs(s), s), "yes" if now else "no"]
                  for j, d, f, p, pf, ps, r, s, now in data["cron"]])
    guard = table("guardrail_checks", ["threshold", "action", "checks", "above threshold", "mean score"],
                  [[esc(t), esc(a), metric("guardrails.%s.%s" % (t, a), n, n), esc(above), "%.3f" % float(score)]
                   for t, a, n, above, score in data["guardrails"]])
    card_html = "".join('<div class="card"><div class="card-title">%s</div>%s</div>' % (esc(t), v) for t, v in cards)
    return """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>synthralos self-healing report</title>
<style>
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px; color: #263238; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
.sub { color: #607d8b; font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 16px 0; }
.card { border: 1px solid #cfd8dc; border-radius: 6px; padding: 10px 14px; min-width: 150px; }
.card-title { font-size: 11px; color: #607d8b; text-transform: uppercase; }
.card .figure { font-size: 22px; font-weight: bold; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; }
.chart-title { font-size: 13px; font-weight: bold; fill: #263238; }
.bar-label, .bar-value { font-size: 10px; fill: #37474f; }
table { border-collapse: collapse; font-size: 12px; } th, td { border: 1px solid #cfd8dc; padding: 4px 8px; }
th { background: #eceff1; text-align: left; }
</style></head>
<body>
<h1>synthralos self-healing report</h1>
<div class="sub">From the warehouse models (deduplicated on messageId), generated %s.</div>
<div class="cards">%s</div>
<h2>Recoveries</h2>
<div class="charts">%s</div>
<h2>Cron jobs</h2>
%s
<h2>Guardrails (prompt similarity)</h2>
%s
</body></html>
""" % (esc(generated_at.strftime("%Y-%m-%d %H:%M UTC")), card_html, "\n".join(sections), cron, guard)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True, help="libpq connection string of the warehouse")
    parser.add_argument("--schema", default="analytics", help="schema holding the dbt models")
    parser.add_argument("--out", required=True, help="HTML file to write")
    args = parser.parse_args(argv)
    with open(args.out, "w") as handle:
        handle.write(render(fetch(args.dsn, args.schema)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
