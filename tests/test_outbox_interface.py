"""The two outboxes implement one declared interface (`events/outbox/base.py`): the same methods, one
`replay` signature, so a caller (replay_dead_letters, the flusher) never asks which outbox it holds."""

import synthralos_tests  # noqa: F401

import ast
import inspect
import os
import unittest

from synthralos_lib.events.outbox import DirectOutbox, Outbox, RedisOutbox
from synthralos_lib.state.config import PACK_ROOT


class OutboxInterfaceTest(unittest.TestCase):
    def test_both_outboxes_are_outboxes(self):
        for cls in (RedisOutbox, DirectOutbox):
            self.assertTrue(issubclass(cls, Outbox), cls)
            self.assertFalse(getattr(cls, "__abstractmethods__", None), cls)  # every method implemented
        with self.assertRaises(TypeError):
            Outbox()  # the interface itself is abstract

    def test_one_replay_signature(self):
        wanted = inspect.signature(Outbox.replay)
        for cls in (RedisOutbox, DirectOutbox):
            self.assertEqual(inspect.signature(cls.replay), wanted, cls)

    def test_each_outbox_says_its_mode_and_whether_it_requeues(self):
        self.assertEqual((RedisOutbox.mode, RedisOutbox.can_requeue), ("outbox", True))
        self.assertEqual((DirectOutbox.mode, DirectOutbox.can_requeue), ("direct", False))

    def test_the_datastore_outbox_refuses_a_requeue_before_touching_anything(self):
        outbox = DirectOutbox(store=None, rudder={}, health=object())  # no store: nothing may be read or written
        with self.assertRaises(ValueError) as caught:
            outbox.replay(ids=["x"])
        self.assertIn("needs a client", str(caught.exception))

    def test_replay_dead_letters_does_not_ask_which_outbox_it_holds(self):
        with open(os.path.join(PACK_ROOT, "actions", "replay_dead_letters.py")) as handle:
            tree = ast.parse(handle.read())
        calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        self.assertNotIn("isinstance", calls)
        self.assertNotIn("type", calls)


if __name__ == "__main__":
    unittest.main()
