"""The local data plane's warehouse side: RudderStack's layout, type conflicts to rudder_discards,
the gateway's refusals. Over the session's scratch PostgreSQL, in a schema of its own."""

import gzip
import json
from base64 import b64encode
from datetime import datetime, timezone

from conftest import query
from synthralos_analytics.warehouse_sink import WarehouseLoader, WarehouseSink

RECEIVED = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def track(message_id, properties, **extra):
    event = {"type": "track", "event": "Odd Event 2", "anonymousId": "agent:x", "messageId": message_id,
             "timestamp": "2026-11-20T11:00:00.000Z", "properties": properties,
             "context": {"library": {"name": "test"}}}
    event.update(extra)
    return event


def test_layout_types_and_discards(postgres):
    loader = WarehouseLoader(postgres.dsn, "sink_test")
    loader.load([track("m1", {"count": 1, "note": "a", "at": "2026-11-20T10:00:00Z", "ok": True,
                              "nested": {"deep": {"x": 1.5}}, "list": [1, 2], "id": "not-the-id",
                              "gpt4o": "digits", "blank": "", "none": None})], RECEIVED, RECEIVED)
    loader.load([track("m2", {"count": "many", "note": 7, "at": "yesterday", "ok": "yes"})], RECEIVED, RECEIVED)
    columns = dict(query(postgres.dsn, "select column_name, data_type from information_schema.columns "
                                       "where table_schema = 'sink_test' and table_name = 'odd_event_2'"))
    assert columns["count"] == "bigint" and columns["note"] == "text" and columns["ok"] == "boolean"
    assert columns["at"] == "timestamp with time zone" and columns["nested_deep_x"] == "numeric"
    assert columns["list"] == "text" and columns["gpt_4_o"] == "text"
    assert "blank" not in columns and "none" not in columns  # blank values make no column
    rows = query(postgres.dsn, 'select id, event, event_text, count, note, list, "timestamp", received_at '
                               "from sink_test.odd_event_2 order by id")
    assert rows[0][:6] == ("m1", "odd_event_2", "Odd Event 2", 1, "a", "[1,2]")  # the messageId wins over a property `id`
    assert rows[0][6].isoformat() == "2026-11-20T11:00:00+00:00" and rows[0][7] == RECEIVED
    assert rows[1][3:5] == (None, "7")  # text column takes the number as text; the bigint column refuses "many"
    discards = query(postgres.dsn, "select table_name, column_name, column_value, row_id from "
                                   "sink_test.rudder_discards order by column_name")
    assert discards == [("odd_event_2", "at", "yesterday", "m2"), ("odd_event_2", "count", "many", "m2"),
                        ("odd_event_2", "ok", "yes", "m2")]
    assert query(postgres.dsn, "select count(*) from sink_test.tracks") == [(2,)]


def test_the_gateway_answers(postgres):
    sink = WarehouseSink(WarehouseLoader(postgres.dsn, "sink_gateway"), "key", lambda: RECEIVED)
    sink.server.server_close()  # the gateway logic is called directly; no socket needed
    auth = {"Authorization": "Basic " + b64encode(b"key:").decode()}
    body = json.dumps({"batch": [track("g1", {"a": 1})], "sentAt": "2026-11-20T12:00:00Z"}).encode()
    assert sink.handle("/v1/batch", {}, body)[0] == 401
    assert sink.handle("/v1/batch", {"Authorization": "Basic " + b64encode(b"other:").decode()}, body)[0] == 401
    assert sink.handle("/v1/batch", auth, b"{not json")[0] == 400
    assert sink.handle("/v1/batch", auth, json.dumps({"batch": []}).encode())[0] == 400
    anonymous = json.dumps({"batch": [{"type": "track", "event": "x", "messageId": "g0"}]}).encode()
    assert sink.handle("/v1/batch", auth, anonymous) == (400, "Request neither has anonymousId nor userId\n")
    zipped = dict(auth, **{"Content-Encoding": "gzip"})
    assert sink.handle("/v1/batch", zipped, gzip.compress(body)) == (200, "OK")
    sink.answer_after_write(503)
    assert sink.handle("/v1/batch", zipped, gzip.compress(body))[0] == 503  # written, then the answer is lost
    sink.outage(503)
    assert sink.handle("/v1/batch", auth, body)[0] == 503  # not written
    assert query(postgres.dsn, "select id, sent_at from sink_gateway.odd_event_2") == [
        ("g1", RECEIVED), ("g1", RECEIVED)]
