"""The pack installed in live st2 services (see e2e/lab.py), checked through st2's API.

Each test starts at the outside (a Redis XADD, a real bullmq Worker, an HTTP POST to st2's
webhook endpoint, an `st2 run`) and checks what st2 recorded (trigger instances,
executions and their children) and what reached the local agent platform / RudderStack sink.
The flusher test runs first: the outbox is empty then, so no inline flush can deliver its event.
"""

import datetime

import requests

from harness import unique, wait_until
from lab import API_URL

def agent_failures(api, agent_id):
    return [t for t in api.trigger_instances("synthralos.agent_failure")
            if t.get("payload", {}).get("agent_id") == agent_id]


def assert_repaired_once(harness, api, agent_id, execution_id, source):
    recovery = harness.wait_recovery(agent_id)
    assert recovery["status"] == "succeeded", recovery.get("result")
    output = recovery["result"]["output"]
    assert output["outcome"] == "repaired" and output["repaired"] is True, output
    assert recovery["parameters"]["execution_id"] == execution_id
    # One trigger instance, from the expected way in, and one re-run the platform accepted.
    instances = agent_failures(api, agent_id)
    assert [t["payload"]["source"] for t in instances] == [source], instances
    reruns = harness.reruns(agent_id)
    assert len(reruns) == 1, [r.json for r in reruns]
    assert reruns[0].json["retry_of"] == execution_id
    assert len(harness.recoveries(agent_id)) == 1
    # The re-run came from inside the workflow: a child execution had started before it.
    children = api.children(recovery["id"])
    assert children and min(c["start_timestamp"] for c in children) < iso(reruns[0].timestamp), children
    return recovery


def iso(epoch):
    """An epoch time as st2 writes timestamps (UTC, microseconds), comparable as text."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_flusher_sensor_delivers_events_with_no_timer_rule(harness, api):
    timer = api.get("/rules/synthralos.flush_events_timer")
    assert timer["enabled"] is False
    source = unique("e2e-forward")
    execution = api.run("synthralos.forward_event", {
        "event_type": "custom", "event_name": "e2e_probe", "properties": {"probe": source},
        "source_execution_id": source, "agent_id": "e2e-flusher"})
    done = wait_until(lambda: (lambda e: e if e["status"] in ("succeeded", "failed") else None)(
        api.execution(execution["id"])), "forward_event to end", 180, interval=1.0)
    assert done["status"] == "succeeded", done.get("result")
    result = done["result"]["result"]
    # Queued in the Redis outbox, not delivered by the action itself.
    assert result["mode"] == "outbox" and result["status"] == "queued" and "flush" not in result, result
    message_id = result["message_id"]
    wait_until(lambda: message_id in harness.sink.message_ids(), "the event at the RudderStack sink", 120)
    delivered = [r for r in harness.sink.requests("POST") if r.status == 200
                 and message_id in [e.get("messageId") for e in (r.json or {}).get("batch", [])]]
    assert delivered[0].basic_auth()[0] == "e2e-write-key"
    # Nothing but the sensor flushed: no flush action ran in st2.
    assert api.executions("synthralos.flush_events") == []
    assert api.executions("synthralos.flush_events_scheduled") == []


def test_stream_failure_is_repaired_through_sensor_and_rule(harness, api):
    agent_id, execution_id = unique("e2e-stream-agent"), unique("exec")
    harness.add_failed_execution(agent_id, execution_id)
    harness.xadd_failure(agent_id, execution_id)
    recovery = assert_repaired_once(harness, api, agent_id, execution_id, "redis_stream")
    # The entry was acked after dispatch: nothing pending in the sensor's group.
    assert harness.redis.xpending("synthralos:agent_executions", "synthralos")["pending"] == 0
    # The recovery's end events came from its own task (begin), delivered by the flusher sensor:
    # no forward_event execution was spent on them.
    def end_events():
        events = [e for e in harness.sink.accepted if e["properties"].get("st2_execution_id") == recovery["id"]]
        return events if len(events) >= 2 else None
    events = wait_until(end_events, "the recovery's end events at the RudderStack sink", 120)
    assert sorted(e["event"] for e in events) == ["agent_execution", "agent_repair"], events
    assert all(e["properties"]["result"] == {"output": recovery["result"]["output"]} for e in events)
    assert [e for e in api.executions("synthralos.forward_event")
            if e["parameters"].get("source_execution_id") == recovery["id"]] == []


def test_bullmq_job_failed_by_real_worker_reaches_recovery(harness, api):
    agent_id, execution_id = unique("e2e-bullmq-agent"), unique("exec")
    harness.add_failed_execution(agent_id, execution_id)
    jobs = harness.fail_bullmq_job(agent_id, execution_id)
    assert jobs[0]["state"] == "failed", jobs
    recovery = assert_repaired_once(harness, api, agent_id, execution_id, "bullmq")
    trigger = agent_failures(api, agent_id)[0]["payload"]
    assert trigger["source_id"] == "%s:%s" % (harness.bullmq_queue, jobs[0]["id"])
    assert "tool timeout" in recovery["parameters"]["result"]["error"]


def test_webhook_post_runs_the_chain(harness, api):
    api.set_rule_enabled("synthralos.agent_failure_webhook", True)
    try:
        agent_id, execution_id = unique("e2e-webhook-agent"), unique("exec")
        harness.add_failed_execution(agent_id, execution_id)
        body = {"agent_id": agent_id, "execution_id": execution_id,
                "result": harness.failure_result(), "trace_context": {"trace_id": unique("trace")}}
        reply = requests.post(API_URL + "/webhooks/synthralos_agent_failure", json=body,
                              headers={"X-Auth-Token": api.token}, timeout=60)
        assert reply.status_code == 202, reply.text
        recovery = assert_repaired_once(harness, api, agent_id, execution_id, "webhook")
        assert recovery["parameters"]["trace_context"]["trace_id"] == body["trace_context"]["trace_id"]
        accepted = [e for e in api.executions("synthralos.accept_agent_failure")
                    if e["parameters"]["body"]["agent_id"] == agent_id]
        assert [e["status"] for e in accepted] == ["succeeded"]
    finally:
        api.set_rule_enabled("synthralos.agent_failure_webhook", False)


def test_guarded_run_disables_a_job_after_its_limit(harness, api):
    # The harness config: cron_backoff.max_consecutive_failures 2, no backoff between runs.
    job_id = unique("e2e-nightly")

    def guarded_run():
        started = api.run("synthralos.guarded_run", {
            "job_id": job_id, "action_ref": "core.local", "parameters": {"cmd": "echo failing; exit 3"}})
        return wait_until(lambda: (lambda e: e if e["status"] in ("succeeded", "failed") else None)(
            api.execution(started["id"])), "guarded_run of %s to end" % job_id, 180, interval=1.0)

    first, second = guarded_run(), guarded_run()
    assert first["status"] == second["status"] == "failed"
    disabled = wait_until(lambda: [t for t in api.trigger_instances("synthralos.cron_job_disabled")
                                   if t["payload"].get("job_id") == job_id],
                          "synthralos.cron_job_disabled for %s" % job_id, 60)
    assert len(disabled) == 1
    assert disabled[0]["payload"]["consecutive_failures"] == 2, disabled[0]["payload"]
    # Disabled: the next run is skipped and the job's action does not run.
    third = guarded_run()
    assert third["status"] == "succeeded"
    assert third["result"]["output"]["skipped"] is True, third["result"]["output"]
    assert "core.local" not in {c["action"]["ref"] for c in api.children(third["id"])}
