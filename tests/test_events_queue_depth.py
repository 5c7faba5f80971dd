"""Counting the st2 datastore queue without reading it: `DatastoreStore.count` and the depth hint
that each drain of the `DirectOutbox` records, on a datastore that pages like st2's API and on
st2tests' mock (which does not page), with the gateway-faithful sink."""

import synthralos_tests  # noqa: F401

import unittest

from st2tests.mocks.action import MockActionService, MockActionWrapper

from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.paging_datastore import PagingDatastoreService
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from synthralos_lib.events.builders import Correlation, custom_event
from synthralos_lib.events.outbox import DIRECT_QUEUE_DEPTH, DirectOutbox, make_client
from synthralos_lib.state.store import DatastoreStore

PROBES = 14  # one-key requests a binary search over 10,000 offsets needs at most


def fill(store, count, prefix="events.queue.", start=0):
    for n in range(start, start + count):
        store.set("%s%013d.m-%d" % (prefix, n, n), {"n": n})


class CountTest(unittest.TestCase):
    def setUp(self):
        self.service = PagingDatastoreService()
        self.store = DatastoreStore(self.service)

    def test_count_is_exact_and_reads_one_page_plus_one_key_probes(self):
        counted = 0
        for size in (0, 1, 99, 100, 101, 250, 1000):
            fill(self.store, size - counted, start=counted)
            counted = size
            before = len(self.service.list_calls)
            self.assertEqual(self.store.count("events.queue.", 10000), size)
            calls = self.service.list_calls[before:]
            self.assertEqual(calls[0], (100, 0, min(size, 100)))
            self.assertEqual([limit for limit, _, _ in calls[1:]], [1] * (len(calls) - 1))
            self.assertLessEqual(len(calls) - 1, PROBES if size >= 100 else 0)

    def test_count_stops_at_the_cap_and_ignores_other_prefixes(self):
        fill(self.store, 250)
        fill(self.store, 30, prefix="events.queued_elsewhere.")
        self.store.set("events.queue_depth", 7)
        self.assertEqual([self.store.count("events.queue.", cap) for cap in (50, 120, 249, 250, 251, 10000)],
                         [50, 120, 249, 250, 250, 250])
        self.assertEqual(self.store.count("nothing.here.", 10000), 0)


class MockDatastoreCountTest(StoreBackendMixin, unittest.TestCase):
    backend = "datastore"

    def test_a_service_that_does_not_page_is_counted_from_its_one_answer(self):
        store = self.make_store()  # st2tests' mock action service: no paging
        counted = 0
        for size in (0, 100, 150):
            fill(store, size - counted, start=counted)
            counted = size
            self.assertEqual(store.count("events.queue.", 10000), size)
            self.assertEqual(store.count("events.queue.", 120), min(size, 120))


class DrainDepthTest(unittest.TestCase):
    def setUp(self):
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)
        self.rudder = {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url, "batch_size": 20,
                       "max_retries": 0, "retry_delay_ms": 0}

    def queue(self, service, count):
        outbox = DirectOutbox(DatastoreStore(service), self.rudder)
        for n in range(count):
            self.assertTrue(outbox.enqueue(custom_event("e", {"n": n}, Correlation({}, st2_execution_id="d-%d" % n)))["queued"])
        return outbox

    def test_a_drain_records_the_true_depth_without_reading_the_queue(self):
        service = PagingDatastoreService()
        outbox = self.queue(service, 250)
        hint_before = outbox.store.get(DIRECT_QUEUE_DEPTH)
        before = len(service.list_calls)
        report = outbox.flush(make_client(self.rudder), max_batches=2, claim_alert=False)
        self.assertEqual((report["status"], report["delivered"], report["batches"]), ("ok", 40, 2))
        self.assertEqual(len(self.sink.accepted), 40)
        self.assertEqual((hint_before, outbox.store.get(DIRECT_QUEUE_DEPTH)), (250, 210))
        calls = service.list_calls[before:]
        self.assertEqual(len(outbox.waiting(10000)), 210)
        batches, depth = calls[:2], calls[2:]
        self.assertEqual(batches, [(20, 0, 20), (20, 0, 20)])
        self.assertEqual(depth[0], (100, 0, 100))
        self.assertLessEqual(sum(n for _, _, n in depth), 100 + PROBES)  # not the 210 keys a re-list reads

    def test_a_drain_that_empties_the_queue_records_zero_and_a_refusal_keeps_the_count(self):
        service = PagingDatastoreService()
        outbox = self.queue(service, 30)
        self.assertEqual(outbox.flush(make_client(self.rudder), claim_alert=False)["delivered"], 30)
        self.assertEqual(outbox.store.get(DIRECT_QUEUE_DEPTH), 0)
        self.queue(service, 5)
        self.sink.outage(503)
        report = outbox.flush(make_client(self.rudder), claim_alert=False)
        self.assertEqual((report["status"], report["retry_later"]), ("retrying", 5))
        self.assertEqual(outbox.store.get(DIRECT_QUEUE_DEPTH), 5)

    def test_on_the_mock_datastore_the_hint_is_the_true_depth_too(self):
        service = MockActionService(action_wrapper=MockActionWrapper(pack="synthralos", class_name="DepthTest"))
        outbox = self.queue(service, 130)
        outbox.flush(make_client(self.rudder), max_batches=1, claim_alert=False)
        self.assertEqual(outbox.store.get(DIRECT_QUEUE_DEPTH), 110)
        self.assertEqual(len(outbox.waiting(10000)), 110)


if __name__ == "__main__":
    unittest.main()
