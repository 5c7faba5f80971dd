"""The store contract, run against both backends: the st2 datastore (through
st2tests' mock action service) and a real redis-server."""

import threading
import time
import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.polling import wait_until

from synthralos_lib.state.store import DatastoreStore, LockNotAcquired, RedisStore, StoreError, get_store
from synthralos_lib.state.config import load_config


class StoreContract(StoreBackendMixin):
    """Behaviour both backends must share; mixed into one TestCase per backend."""

    def test_get_set_delete_round_trips_json(self):
        store = self.make_store()
        self.assertIsNone(store.get("missing"))
        self.assertEqual(store.get("missing", default={"d": 1}), {"d": 1})
        store.set("doc", {"state": "open", "failures": [1, 2], "rate": 0.5})
        self.assertEqual(store.get("doc"), {"state": "open", "failures": [1, 2], "rate": 0.5})
        store.delete("doc")
        self.assertIsNone(store.get("doc"))
        store.delete("doc")  # deleting a missing key is fine

    # TTLs: what must still be there gets minutes, what must expire gets a
    # fraction of a second and a generous wait, so a busy machine cannot tell.
    def test_ttl_expires_values(self):
        store = self.make_store()
        store.set("short", "v", ttl=0.2)
        store.set("long", "v", ttl=600)
        wait_until(lambda: store.get("short") is None, what="the 0.2 s value to expire")
        self.assertEqual(store.get("long"), "v")

    def test_incr_counts_and_keeps_first_expiry(self):
        store = self.make_store()
        self.assertEqual(store.incr("count"), 1)
        self.assertEqual(store.incr("count", 4), 5)
        self.assertEqual(store.incr("count", -2), 3)
        self.assertEqual(store.incr("ttl-count", ttl=600), 1)
        self.assertEqual(store.incr("ttl-count", ttl=0.1), 2)
        time.sleep(0.3)  # past the second ttl: had it replaced the first, the counter would be gone
        self.assertEqual(store.incr("ttl-count", ttl=0.1), 3)
        self.assertEqual(store.incr("expiring", ttl=0.2), 1)
        wait_until(lambda: store.get("expiring") is None, what="the 0.2 s counter to expire")
        self.assertEqual(store.incr("expiring", ttl=0.2), 1)

    def test_lock_is_exclusive_until_released_or_expired(self):
        store = self.make_store()
        token = store.acquire_lock("agent-1", ttl=5)
        self.assertTrue(token)
        self.assertIsNone(store.acquire_lock("agent-1", ttl=5))
        self.assertTrue(store.acquire_lock("agent-2", ttl=5))
        self.assertFalse(store.release_lock("agent-1", "not-the-owner"))
        self.assertIsNone(store.acquire_lock("agent-1", ttl=5))
        self.assertTrue(store.release_lock("agent-1", token))
        self.assertTrue(store.acquire_lock("agent-1", ttl=0.2))
        time.sleep(0.3)
        self.assertTrue(store.acquire_lock("agent-1", ttl=5))

    def test_lock_context_manager(self):
        store = self.make_store()
        with store.lock("job", ttl=5):
            with self.assertRaises(LockNotAcquired):
                with store.lock("job", ttl=5, wait_s=0.1):
                    pass
        with store.lock("job", ttl=5):
            pass

    def test_bounded_list_is_newest_first(self):
        store = self.make_store()
        for n in range(7):
            store.list_push("history", {"n": n}, max_len=5)
        self.assertEqual([item["n"] for item in store.list_range("history")], [6, 5, 4, 3, 2])
        self.assertEqual([item["n"] for item in store.list_range("history", 0, 1)], [6, 5])
        self.assertEqual([item["n"] for item in store.list_range("history", 3, -1)], [3, 2])
        self.assertEqual(store.list_range("empty"), [])


class StoreOnDatastore(object):
    """Only in DatastoreStoreTest."""

    def test_keys_are_global_and_prefixed(self):
        store = self.make_store()
        store.set("breaker.openai", {"state": "closed"})
        names = [kvp.name for kvp in self.action_service.list_values(local=False, prefix="synthralos.")]
        self.assertEqual(names, ["synthralos.breaker.openai"])
        # local=False: not namespaced to the action class, so every action and sensor sees it
        self.assertIsNotNone(self.action_service.get_value("synthralos.breaker.openai", local=False))
        self.assertIsNone(self.action_service.get_value("synthralos.breaker.openai", local=True))

    def test_foreign_value_is_a_clear_error(self):
        self.action_service.set_value("synthralos.junk", "not json", local=False)
        with self.assertRaisesRegex(StoreError, "does not hold synthralos JSON"):
            self.make_store().get("junk")

    def test_not_atomic(self):
        self.assertFalse(self.make_store().atomic)


class StoreOnRedis(object):
    """Only in RedisStoreTest."""

    def test_keys_carry_the_prefix(self):
        store = self.make_store()
        store.set("breaker.openai", {"state": "closed"})
        self.assertEqual(self.redis.client().keys("*"), ["synthralos:breaker.openai"])

    def test_lock_is_atomic_under_contention(self):
        store = self.make_store()
        winners = []
        barrier = threading.Barrier(8)

        def contend():
            barrier.wait()
            token = store.acquire_lock("hot", ttl=5)
            if token:
                winners.append(token)

        threads = [threading.Thread(target=contend) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(winners), 1)

    def test_incr_is_atomic_under_contention(self):
        store = self.make_store()

        def bump():
            for _ in range(50):
                store.incr("hits")

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(store.get("hits"), 200)

    def test_dead_redis_is_a_store_error(self):
        store = RedisStore("redis://127.0.0.1:1/0")
        with self.assertRaisesRegex(StoreError, "redis GET failed"):
            store.get("anything")


on_both_backends(StoreContract, "{backend}StoreTest", datastore=StoreOnDatastore, redis=StoreOnRedis)


class GetStoreTest(StoreBackendMixin, unittest.TestCase):
    backend = "redis"

    def test_redis_when_url_configured(self):
        store = get_store(load_config({"redis": {"url": self.redis.url, "key_prefix": "x:"}}), self.action_service)
        self.assertIsInstance(store, RedisStore)
        self.assertEqual(store.key("a"), "x:a")

    def test_datastore_by_default(self):
        self.assertIsInstance(get_store(load_config({}), self.action_service), DatastoreStore)

    def test_datastore_needs_a_service(self):
        with self.assertRaises(StoreError):
            get_store(load_config({}), None)
