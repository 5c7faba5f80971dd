"""Every input st2 accepts gets a clear answer (issue 9 item 7, the LLM actions): what
JSON schema cannot express (NaN, Infinity, a resume that is not a hand-back, duplicate
target names) is refused in code with the field named, never misclassified."""

import synthralos_tests  # noqa: F401

import unittest

from synthralos_tests.base import SynthralosActionTestCase
from synthralos_tests.llm_provider import ProviderServerMixin

from llm_call import LLMCall
from llm_request import LLMRequest
from synthralos_lib.llm.breaker import Breakers
from synthralos_lib.llm.routing import make_policy, next_step, resolve_chain
from synthralos_lib.state.config import ConfigError, load_config

KEY = "sk-inputs-5555eeee"
USER = [{"role": "user", "content": "hi"}]
INF = float("inf")
NAN = float("nan")


class ProviderCase(ProviderServerMixin, SynthralosActionTestCase):
    def setUp(self):
        super(ProviderCase, self).setUp()
        self.server.add_endpoint("oa", "openai", KEY)
        self.base_config = {"llm_targets": [self.server.target("oa")]}


class LLMCallInputsTest(ProviderCase):
    action_cls = LLMCall

    def test_non_finite_and_out_of_range_numbers_are_bad_requests_naming_the_field(self):
        cases = [
            ({"temperature": NAN}, "temperature must be a finite number (not NaN or Infinity)"),
            ({"temperature": INF}, "temperature must be a finite number (not NaN or Infinity)"),
            ({"temperature": 3}, "temperature must be at most 2"),
            ({"call_timeout_s": NAN}, "timeout_s must be a finite number (not NaN or Infinity)"),
            ({"call_timeout_s": -INF}, "timeout_s must be a finite number (not NaN or Infinity)"),
            ({"call_timeout_s": 0}, "timeout_s must be at least 0.001"),
            ({"max_tokens": True}, "max_tokens must be an integer"),
            ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ]
        for params, message in cases:
            out = self.action().run(target="oa", messages=USER, **params)
            self.assertEqual((out["ok"], out["status"], out["error_class"], out["error_message"]),
                             (False, None, "bad_request", message), params)
        self.assertEqual(self.server.calls(), [])  # nothing reached the provider


class NextStepInputsTest(ProviderCase):
    action_cls = LLMRequest

    def test_a_local_bad_request_does_not_touch_the_breaker(self):
        outcome = LLMCall(config=self.make_config()).run(target="oa", messages=USER, temperature=NAN)
        action = self.action()
        chain = resolve_chain(action.settings, None)
        decision = next_step(action.settings, action.store, chain, outcome, [], make_policy(action.settings, None))
        self.assertEqual((decision["action"], decision["reason"]),
                         ("give_up", "bad_request: the request itself is invalid"))
        self.assertEqual(Breakers(self.make_store(), {}).status("oa")["window_requests"], 0)


class LLMRequestInputsTest(ProviderCase):
    action_cls = LLMRequest

    def test_infinite_timeout_gives_up_at_once_without_calling(self):
        out = self.action().run(messages=USER, call_timeout_s=INF)
        self.assertEqual((out["action"], out["calls"], out["attempts"][0]["error_message"]),
                         ("give_up", 1, "timeout_s must be a finite number (not NaN or Infinity)"))
        self.assertEqual(self.server.calls(), [])


    def test_a_resume_that_is_not_a_hand_back_is_refused(self):
        for resume, message in (({"pending": {"action": "done"}}, "resume.pending must be the pending decision"),
                                ({"pending": {"action": "retry", "target": "zz"}}, "resume.pending.target 'zz'"),
                                ({"pending": {"action": "retry", "target": "oa", "delay_s": "x", "wait_s": 1}},
                                 "resume.pending.delay_s must be a number"),
                                ({"pending": {"action": "retry", "target": "oa", "delay_s": 1, "wait_s": NAN}},
                                 "resume.pending.wait_s must be a finite number (not NaN or Infinity)"),
                                ({"pending": {"action": "retry", "target": "oa", "delay_s": 1, "wait_s": 1},
                                  "total_delay_s": INF}, "resume.total_delay_s must be a finite number")):
            with self.assertRaises(ValueError) as caught:
                self.action().run(messages=USER, resume=resume)
            self.assertIn(message, str(caught.exception))
        self.assertEqual(self.server.calls(), [])


class DuplicateTargetNamesTest(unittest.TestCase):
    def test_duplicate_llm_target_names_are_a_config_error(self):
        target = {"name": "a", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}
        with self.assertRaises(ConfigError) as caught:
            load_config({"llm_targets": [target, dict(target, model="other"), dict(target, name="b")]})
        self.assertEqual(str(caught.exception),
                         "invalid synthralos config: llm_targets: duplicate name(s) 'a' (each name must be unique)")


if __name__ == "__main__":
    unittest.main()
