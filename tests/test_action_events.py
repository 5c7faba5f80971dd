"""The event actions, on both store backends (st2 datastore: direct delivery; Redis: outbox),
against the gateway-faithful sink."""

import json
import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from flush_events import FlushEvents
from forward_event import ForwardEvent
from get_queue_stats import GetQueueStats
from log_llm_cost import LogLlmCost
from log_prompt_similarity import LogPromptSimilarity
from replay_dead_letters import ReplayDeadLetters
from synthralos_lib.events.builders import message_id

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class EventActionsContract(StoreBackendMixin):
    def setUp(self):
        super(EventActionsContract, self).setUp()
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)

    def config(self, **rudder):
        settings = {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url, "max_retries": 1, "retry_delay_ms": 0}
        settings.update(rudder)
        return {"rudderstack": settings, "observability": {"workspace_id": "ws-1", "organization_id": "org-1"}}

    def run_action(self, cls, config=None, **params):
        """Instances share this test's action service, so they see one st2 datastore, as in st2."""
        action = cls(config=self.make_config(**(config or self.config())), action_service=self.action_service)
        return action.run(**params)

    def flush(self, config=None):
        return self.run_action(FlushEvents, config=config, force=True, max_batches=50, reclaim_idle_ms=None)

    def forward(self, config=None, **params):
        params.setdefault("event_type", "agent_execution")
        params.setdefault("status", "succeeded")
        params.setdefault("source_execution_id", "exec-1")
        params.setdefault("agent_id", "agent-1")
        return self.run_action(ForwardEvent, config=config, **params)

    def delivered_after_flush(self):
        if self.backend == "redis":
            self.flush()
        return self.sink.accepted

    # -- forward_event -------------------------------------------------------

    def test_forward_event_delivers_an_agent_event(self):
        result = self.forward(start_timestamp="2026-01-01 10:00:00.000000+00:00", traceparent=TRACEPARENT,
                              result={"output": "ok"}, properties={"workflow": "synthralos.llm_retry"})
        expected_id = message_id("exec-1", "agent_execution", "")
        self.assertEqual(result["message_id"], expected_id)
        if self.backend == "redis":
            self.assertEqual((result["mode"], result["status"], result["forwarded"]), ("outbox", "queued", True))
        else:
            self.assertEqual((result["mode"], result["status"], result["forwarded"]), ("direct", "delivered", True))
        accepted = self.delivered_after_flush()
        self.assertEqual([e["messageId"] for e in accepted], [expected_id])
        props = accepted[0]["properties"]
        self.assertEqual(
            {k: props[k] for k in ("status", "agent_id", "workflow", "result", "st2_execution_id", "workspace_id",
                                   "organization_id", "trace_id", "started_at")},
            {"status": "succeeded", "agent_id": "agent-1", "workflow": "synthralos.llm_retry", "result": {"output": "ok"},
             "st2_execution_id": "exec-1", "workspace_id": "ws-1", "organization_id": "org-1",
             "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "started_at": "2026-01-01T10:00:00.000Z"},
        )
        self.assertEqual(accepted[0]["anonymousId"], "agent:agent-1")

    def test_forward_event_custom(self):
        result = self.forward(event_type="custom", event_name="deployment_rolled_back", properties={"service": "api"},
                              status=None)
        self.assertTrue(result["forwarded"])
        accepted = self.delivered_after_flush()
        self.assertEqual([(e["event"], e["properties"]["service"]) for e in accepted], [("deployment_rolled_back", "api")])

    def test_forward_event_bad_input_fails_clearly(self):
        self.assertEqual(self.forward(event_type="custom", event_name=None),
                         (False, {"error": "event_name is required for event_type custom"}))
        self.assertEqual(self.forward(status=""), (False, {"error": "status is required for agent_execution"}))
        ok, result = self.forward(traceparent="garbage")
        self.assertFalse(ok)
        self.assertIn("traceparent", result["error"])
        self.assertEqual(self.sink.request_log, [])

    def test_telemetry_down_never_fails_the_action(self):
        self.sink.outage(503)
        result = self.forward()
        self.assertTrue(isinstance(result, dict), result)
        if self.backend == "redis":
            self.assertEqual((result["status"], result["forwarded"]), ("queued", True))  # waits in the outbox
            self.assertEqual(self.flush()["status"], "retrying")
        else:
            self.assertEqual(
                {k: result[k] for k in ("status", "forwarded", "where", "reason")},
                {"status": "pending_retry", "forwarded": True, "where": "st2_datastore:synthralos.events.queue.*",
                 "reason": "HTTP 503: scripted failure"},
            )
            self.assertEqual(self.flush()["status"], "retrying")
        stats = self.run_action(GetQueueStats, include_dead_letters=True, limit=20)
        self.assertEqual((stats["depth"], stats["dead_letters"]), (1, 0))  # kept, nothing dead
        self.sink.recover()
        self.assertEqual(self.flush()["delivered"], 1)
        self.assertEqual([e["messageId"] for e in self.sink.accepted], [result["message_id"]])
        self.assertEqual(self.run_action(GetQueueStats, include_dead_letters=False, limit=20)["depth"], 0)

    def test_wrong_write_key_is_kept_for_the_fix_window_then_delivered_once_fixed(self):
        bad = self.config(write_key="wrong-key")
        result = self.forward(config=bad)
        if self.backend == "redis":
            flush = self.flush(config=bad)
            self.assertEqual((flush["status"], flush["dead_lettered"], flush["retry_later"], flush["alert"]),
                             ("config_error", 0, 1, True))
        else:
            self.assertEqual((result["status"], result["where"]), ("pending_retry", "st2_datastore:synthralos.events.queue.*"))
            self.assertEqual(result["reason"], "HTTP 401 from the data plane")
        stats = self.run_action(GetQueueStats, include_dead_letters=False, limit=20)
        self.assertEqual((stats["depth"], stats["dead_letters"]), (1, 0))
        fixed = self.flush()  # the operator fixed the write key: no replay needed
        self.assertEqual((fixed["status"], fixed["delivered"]), ("ok", 1))
        self.assertEqual([e["messageId"] for e in self.sink.accepted], [result["message_id"]])

    def test_no_write_key_skips(self):
        config = self.config()
        del config["rudderstack"]["write_key"]
        result = self.forward(config=config)
        self.assertEqual((result["status"], result["forwarded"]), ("skipped", False))
        self.assertEqual(result["reason"], "rudderstack.write_key is not set; events are not sent")

    def test_wrong_write_key_after_the_fix_window_is_dead_lettered_reported_and_replayable(self):
        bad = self.config(write_key="wrong-key", config_error_fix_window_s=0)
        result = self.forward(config=bad)
        if self.backend == "redis":
            flush = self.flush(config=bad)
            self.assertEqual((flush["status"], flush["alert"], flush["data_plane_url"]), ("config_error", True, self.sink.url))
            self.assertEqual(flush["config_error"], {"status": 401, "body": "Invalid Write Key"})
            self.assertEqual(flush["alert_payload"], {"status": 401, "body": "Invalid Write Key",
                                                      "data_plane_url": self.sink.url, "dead_lettered": 1, "refused": 1})
        else:
            self.assertEqual(
                (result["status"], result["reason"]),
                ("dead_lettered", "HTTP 401 from the data plane: Invalid Write Key (still refused after the fix window)"),
            )
            self.assertEqual(result["delivery"]["config_error"], {"status": 401, "body": "Invalid Write Key"})
        text = json.dumps(result)
        self.assertNotIn("wrong-key", text)
        stats = self.run_action(GetQueueStats, include_dead_letters=True, limit=20)
        self.assertEqual(stats["dead_letters"], 1)
        self.assertEqual(stats["config_errors"], 1)
        self.assertEqual([d["message_id"] for d in stats["dead_letter_entries"]], [result["message_id"]])
        replay = self.run_action(ReplayDeadLetters, ids=[stats["dead_letter_entries"][0]["id"]], limit=1000, flush=True)
        self.assertEqual(replay["replayed"], 1)
        self.assertEqual([e["messageId"] for e in self.sink.accepted], [result["message_id"]])
        self.assertEqual(self.run_action(GetQueueStats, include_dead_letters=False, limit=20)["dead_letters"], 0)

    def test_results_never_carry_the_write_key(self):
        config = self.config(write_key="wk-secret-123", data_plane_url=self.sink.url + "/wk-secret-123")
        result = self.forward(config=config)
        self.assertNotIn("wk-secret-123", json.dumps(result))

    # -- log_llm_cost / log_prompt_similarity ----------------------------------

    def test_log_llm_cost(self):
        config = self.config()
        config["llm_targets"] = [{"name": "oa", "kind": "openai", "base_url": "http://x", "model": "gpt-4o",
                                  "output_price_per_1k": 0.02}]
        result = self.run_action(LogLlmCost, config=config, provider="openai", model="gpt-4o", input_tokens=2000,
                                 output_tokens=500, target="oa", node_id="plan", workflow_execution_id="wf-9",
                                 source_execution_id="exec-7", discriminator="call-1")
        self.assertEqual(
            result["cost"],
            {"input_tokens": 2000, "output_tokens": 500, "total_tokens": 2500, "input_price_per_1k": 0.0025,
             "output_price_per_1k": 0.02, "price_source": "builtin:gpt-4o,llm_target:oa", "input_cost_usd": 0.005,
             "output_cost_usd": 0.01, "cost_usd": 0.015, "cost_usd_cents": 1.5},
        )
        self.assertEqual(result["message_id"], message_id("exec-7", "llm_cost_logged", "call-1"))
        accepted = self.delivered_after_flush()
        self.assertEqual([(e["event"], e["properties"]["cost_usd"], e["properties"]["node_id"]) for e in accepted],
                         [("llm_cost_logged", 0.015, "plan")])

    def test_log_llm_cost_flag_off_and_bad_input(self):
        config = self.config()
        config["features"] = {"track_model_costs": False}
        self.assertEqual(
            self.run_action(LogLlmCost, config=config, provider="openai", model="gpt-4o", input_tokens=1, output_tokens=1),
            {"status": "skipped", "forwarded": False, "reason": "features.track_model_costs is off"},
        )
        self.assertEqual(
            self.run_action(LogLlmCost, provider="openai", model="gpt-4o", input_tokens=-5, output_tokens=1),
            (False, {"error": "input_tokens must be at least 0"}),
        )
        self.assertEqual(self.sink.request_log, [])

    def test_log_prompt_similarity(self):
        result = self.run_action(LogPromptSimilarity, threshold=0.8, method="euclidean", vector_a=[0, 0], vector_b=[0, 0.25],
                                 prompt="q" * 1200, source_execution_id="exec-3", traceparent=TRACEPARENT,
                                 guardrail="dedupe")
        self.assertEqual(result["similarity"], {"score": 0.8, "percent": 80.0, "threshold": 0.8, "method": "euclidean",
                                                "action_taken": "flagged", "above_threshold": True})
        accepted = self.delivered_after_flush()
        props = accepted[0]["properties"]
        self.assertEqual(len(props["prompt"]), 1000)
        # guardrails tracing is off by default: no trace context, no guardrail name
        self.assertEqual((props["traceparent"], props["langfuse_trace_url"], "guardrail" in props), (None, None, False))

    def test_log_prompt_similarity_with_guardrails_tracing(self):
        config = self.config()
        config["features"] = {"enable_guardrails_tracing": True}
        config["observability"]["langfuse_base_url"] = "https://lf.example.com"
        self.run_action(LogPromptSimilarity, config=config, threshold=0.5, score=0.2, traceparent=TRACEPARENT,
                        guardrail="dedupe", source_execution_id="exec-4")
        props = self.delivered_after_flush()[0]["properties"]
        self.assertEqual(
            (props["traceparent"], props["langfuse_trace_url"], props["guardrail"], props["action_taken"]),
            (TRACEPARENT, "https://lf.example.com/trace/4bf92f3577b34da6a3ce929d0e0e4736", "dedupe", "allowed"),
        )

    def test_log_prompt_similarity_flag_off_and_bad_input(self):
        config = self.config()
        config["features"] = {"enable_similarity_logging": False}
        self.assertEqual(
            self.run_action(LogPromptSimilarity, config=config, threshold=0.5, score=0.4),
            {"status": "skipped", "forwarded": False, "reason": "features.enable_similarity_logging is off"},
        )
        self.assertEqual(self.run_action(LogPromptSimilarity, threshold=0.5),
                         (False, {"error": "give either score or both vectors"}))


class EventActionsOnDatastore(object):
    """Only in DatastoreEventActionsTest."""

    def test_flush_events_without_redis_has_nothing_to_do(self):
        result = self.flush()
        self.assertEqual((result["status"], result["mode"], result["delivered"], result["alert"]), ("ok", "direct", 0, False))


class EventActionsOnRedis(object):
    """Only in RedisEventActionsTest."""

    def test_forward_event_flushes_inline_when_a_full_batch_waits(self):
        config = self.config(batch_size=3)
        results = [self.forward(config=config, source_execution_id="exec-%d" % i) for i in range(3)]
        self.assertEqual(["flush" in r for r in results], [False, False, True])
        self.assertEqual(results[2]["flush"]["delivered"], 3)
        self.assertEqual(len(self.sink.accepted), 3)

    def test_inline_flush_does_not_wait_out_retries(self):
        config = self.config(batch_size=2, max_retries=3, retry_delay_ms=2000)
        self.sink.outage(503)
        self.forward(config=config, source_execution_id="a")
        result = self.forward(config=config, source_execution_id="b")
        self.assertEqual(
            {k: result["flush"][k] for k in ("status", "requests", "retries", "retry_later")},
            {"status": "retrying", "requests": 1, "retries": 0, "retry_later": 2},
        )
        self.sink.recover()
        self.assertEqual(self.flush(config=config)["delivered"], 2)  # the timer's flush picks them up at once

    def test_same_source_twice_is_sent_with_the_same_message_id(self):
        first = self.forward()
        second = self.forward()
        self.flush()
        self.assertEqual(first["message_id"], second["message_id"])
        self.assertEqual(self.sink.message_ids(), [first["message_id"]] * 2)  # RudderStack dedups on messageId

    def test_queue_stats_shape(self):
        self.forward()
        stats = self.run_action(GetQueueStats, include_dead_letters=True, limit=5)
        self.assertEqual(
            {k: stats[k] for k in ("backend", "depth", "pending", "waiting", "dead_letters", "enqueued", "delivered",
                                   "overflow_policy", "max_queue_length", "dead_letter_entries")},
            {"backend": "redis_stream", "depth": 1, "pending": 0, "waiting": 1, "dead_letters": 0, "enqueued": 1,
             "delivered": 0, "overflow_policy": "reject_new", "max_queue_length": 100000, "dead_letter_entries": []},
        )
        self.assertGreaterEqual(stats["oldest_age_s"], 0)

    def test_redis_down_falls_back_to_direct_delivery(self):
        config = self.config()
        config["redis"] = {"url": "redis://127.0.0.1:1/0"}
        action = ForwardEvent(config=config, action_service=self.action_service)
        result = action.run(event_type="agent_failure", status="failed", source_execution_id="exec-x")
        self.assertEqual((result["mode"], result["status"], result["forwarded"]), ("direct_fallback", "delivered", True))
        self.assertEqual(self.sink.message_ids(), [message_id("exec-x", "agent_failure", "")])

    def test_redis_down_and_data_plane_down_queues_in_the_datastore(self):
        config = self.config()
        config["redis"] = {"url": "redis://127.0.0.1:1/0"}
        self.sink.outage(503)
        action = ForwardEvent(config=config, action_service=self.action_service)
        result = action.run(event_type="agent_failure", status="failed", source_execution_id="exec-y")
        self.assertEqual(
            {k: result[k] for k in ("mode", "status", "forwarded", "where", "outbox_error")},
            {"mode": "direct_fallback", "status": "pending_retry", "forwarded": True,
             "where": "st2_datastore:synthralos.events.queue.*", "outbox_error": "ConnectionError"},
        )
        stats = GetQueueStats(config=config, action_service=self.action_service).run(include_dead_letters=True, limit=5)
        self.assertEqual((stats["status"], stats["backend"], stats["datastore_queue"]["depth"]),
                         ("redis_unavailable", "redis_stream", 1))
        self.assertTrue(stats["error"].startswith("Redis outbox unreachable: ConnectionError"), stats["error"])
        self.sink.recover()
        flush = FlushEvents(config=config, action_service=self.action_service).run(force=True, max_batches=5)
        self.assertEqual((flush["status"], flush["delivered"], flush["datastore_queue"]["delivered"]),
                         ("redis_unavailable", 1, 1))
        self.assertEqual(self.sink.message_ids(), [message_id("exec-y", "agent_failure", "")])


on_both_backends(EventActionsContract, "{backend}EventActionsTest",
                 datastore=EventActionsOnDatastore, redis=EventActionsOnRedis)
