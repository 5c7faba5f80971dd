"""A local RudderStack data plane that lands events in PostgreSQL the way RudderStack's warehouse does.

`POST /v1/batch` (HTTP Basic auth with the write key, optional gzip body, the
gateway's answers: 401 unknown key, 400 bad JSON or an event without
userId/anonymousId, 200 "OK") and, for each accepted track event, an append
into the RudderStack layout in one schema:

* `tracks`: one row per event with the standard columns (`id` = messageId,
  `anonymous_id`, `user_id`, `event` (the table name), `event_text` (the event
  name as sent), `sent_at`, `timestamp`, `original_timestamp`, `received_at`,
  `channel`, `uuid_ts`) and the flattened `context_*` columns; no properties.
* one table per event name (`warehouse_names.table_name`), with the same
  columns plus every property, flattened and named by `warehouse_names`.

Time fields follow rudder-server's processor: `received_at` is when the
request arrived (the injected `clock`, so tests are exact), `sent_at` is the
batch's `sentAt`, `original_timestamp` the event's `originalTimestamp` or else
`received_at`, and `timestamp` the event's own `timestamp` when it has one
(the pack always sets it) or else `received_at - (sent_at - original_timestamp)`.

Loads are appends, as RudderStack's default load of event tables: a request the
client sends twice lands twice. Columns are added as new keys appear, typed by
the first value seen (bool -> boolean, integer -> bigint, other number ->
numeric, ISO-8601 datetime text -> timestamptz, other text -> text, arrays ->
JSON text); a later value that does not fit its column goes to
`rudder_discards` (table, column, value as text, row id, received_at) and the
cell stays null, as RudderStack does.

Scripted faults for tests: `outage(status)` answers every request with
`status` without writing until `recover()`; `answer_after_write(status, times)`
writes the next requests' events and then answers `status`, the lost
acknowledgement that makes a client resend what already landed.
"""

import gzip
import json
import re
import threading
from base64 import b64decode
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
from psycopg2 import sql

from synthralos_analytics.warehouse_names import (LOADER_COLUMNS, TRACK_RESERVED_COLUMNS, column_name, flatten,
                                                  table_name)

PG_TYPES = {
    "boolean": "boolean",
    "int": "bigint",
    "float": "numeric",
    "datetime": "timestamp with time zone",
    "string": "text",
}
STANDARD_COLUMNS = (
    ("id", "string"), ("anonymous_id", "string"), ("user_id", "string"), ("event", "string"),
    ("event_text", "string"), ("sent_at", "datetime"), ("timestamp", "datetime"),
    ("original_timestamp", "datetime"), ("received_at", "datetime"), ("channel", "string"), ("uuid_ts", "datetime"),
)
DISCARDS_TABLE = "rudder_discards"
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")


def value_type(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str) and _ISO_DATETIME.match(value):
        return "datetime"
    return "string"


def parse_time(value):
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def fits(value, kind):
    """The value to store in a column of `kind`, or raise ValueError (a discard)."""
    found = value_type(value)
    if kind == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else json.dumps(value)
    if kind == found or (kind == "float" and found == "int"):
        return value
    if kind == "int" and found == "float" and float(value).is_integer():
        return int(value)
    raise ValueError("%s value for a %s column" % (found, kind))


class WarehouseLoader(object):
    """Appends event rows into one PostgreSQL schema, adding tables and columns as needed."""

    def __init__(self, dsn, schema):
        self.dsn = dsn
        self.schema = schema
        self._columns = {}  # table -> {column: kind}
        self._lock = threading.Lock()
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        conn.close()

    def rows_for(self, event, received_at, sent_at):
        """[(table, {column: value})]: the tracks row and the event table's row."""
        original = parse_time(event.get("originalTimestamp")) or received_at
        own = parse_time(event.get("timestamp"))
        sent = parse_time(event.get("sentAt")) or sent_at or received_at
        timestamp = own or received_at - (sent - original)
        standard = {
            "id": event.get("messageId"),
            "anonymous_id": event.get("anonymousId"),
            "user_id": event.get("userId"),
            "event": table_name(event["event"]),
            "event_text": event["event"],
            "sent_at": _iso(sent),
            "timestamp": _iso(timestamp),
            "original_timestamp": _iso(original),
            "received_at": _iso(received_at),
            "channel": event.get("channel"),
            "uuid_ts": _iso(received_at),
        }
        context = {}
        for raw, value, _ in flatten(event.get("context") or {}, "context_"):
            name = column_name(raw)
            if name and name not in TRACK_RESERVED_COLUMNS:
                context[name] = value
        properties = {}
        for raw, value, _ in flatten(event.get("properties") or {}):
            name = column_name(raw)
            # A property RudderStack fills itself (id, timestamp, ...) is dropped; the standard value wins.
            if name and name not in TRACK_RESERVED_COLUMNS and name not in LOADER_COLUMNS:
                properties[name] = value
        track = dict(context, **{k: v for k, v in standard.items() if v is not None})
        own_table = dict(context, **properties)
        own_table.update({k: v for k, v in standard.items() if v is not None})
        return [("tracks", track), (standard["event"], own_table)]

    def load(self, events, received_at, sent_at):
        """Append the rows of `events` in one transaction."""
        with self._lock:
            conn = psycopg2.connect(self.dsn)
            try:
                with conn, conn.cursor() as cur:
                    for event in events:
                        for table, row in self.rows_for(event, received_at, sent_at):
                            self._insert(cur, table, row, received_at)
            finally:
                conn.close()

    def _table_columns(self, cur, table):
        if table not in self._columns:
            cur.execute("select column_name, data_type from information_schema.columns "
                        "where table_schema = %s and table_name = %s", (self.schema, table))
            found = {name: _kind(pg_type) for name, pg_type in cur.fetchall()}
            if not found:
                cur.execute(sql.SQL("create table {}.{} ({})").format(
                    sql.Identifier(self.schema), sql.Identifier(table),
                    sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(PG_TYPES[kind]))
                                       for name, kind in STANDARD_COLUMNS)))
                found = dict(STANDARD_COLUMNS)
            self._columns[table] = found
        return self._columns[table]

    def _insert(self, cur, table, row, received_at):
        columns = self._table_columns(cur, table)
        values = {}
        for name, value in row.items():
            if name not in columns:
                kind = "datetime" if name in dict(STANDARD_COLUMNS) else value_type(value)
                cur.execute(sql.SQL("alter table {}.{} add column {} {}").format(
                    sql.Identifier(self.schema), sql.Identifier(table), sql.Identifier(name),
                    sql.SQL(PG_TYPES[kind])))
                columns[name] = kind
            try:
                values[name] = fits(value, columns[name])
            except ValueError:
                self._discard(cur, table, name, value, row.get("id"), received_at)
        names = sorted(values)
        cur.execute(sql.SQL("insert into {}.{} ({}) values ({})").format(
            sql.Identifier(self.schema), sql.Identifier(table),
            sql.SQL(", ").join(sql.Identifier(n) for n in names),
            sql.SQL(", ").join(sql.Placeholder() for _ in names)), [values[n] for n in names])

    def _discard(self, cur, table, column, value, row_id, received_at):
        cur.execute(sql.SQL("create table if not exists {}.{} (table_name text, column_name text, column_value text, "
                            "row_id text, received_at timestamp with time zone, uuid_ts timestamp with time zone)")
                    .format(sql.Identifier(self.schema), sql.Identifier(DISCARDS_TABLE)))
        cur.execute(sql.SQL("insert into {}.{} values (%s, %s, %s, %s, %s, %s)").format(
            sql.Identifier(self.schema), sql.Identifier(DISCARDS_TABLE)),
            (table, column, json.dumps(value) if not isinstance(value, str) else value, row_id,
             _iso(received_at), _iso(received_at)))


def _kind(pg_type):
    for kind, name in PG_TYPES.items():
        if name == pg_type:
            return kind
    return "string"


def _iso(moment):
    return moment.astimezone(timezone.utc).isoformat() if moment else None


class WarehouseSink(object):
    """The HTTP side: answers /v1/batch like rudder-server's gateway and loads what it accepts."""

    def __init__(self, loader, write_key, clock):
        self.loader = loader
        self.write_key = write_key
        self.clock = clock  # () -> aware datetime: received_at
        self.requests = []  # (status, events in the request)
        self._outage = None
        self._after_write = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                status, body = sink.handle(self.path, self.headers, self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="warehouse-sink", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    # -- scripting ---------------------------------------------------------------
    def outage(self, status=503):
        self._outage = status

    def recover(self):
        self._outage = None

    def answer_after_write(self, status, times=1):
        with self._lock:
            self._after_write.extend([status] * times)

    # -- the gateway -----------------------------------------------------------------
    def handle(self, path, headers, raw):
        status, body, count = self._handle(path, headers, raw)
        with self._lock:
            self.requests.append((status, count))
        return status, body

    def _handle(self, path, headers, raw):
        if path.split("?", 1)[0] != "/v1/batch":
            return 404, "404 page not found\n", 0
        if self._outage is not None:
            return self._outage, "scripted outage\n", 0
        if _write_key(headers.get("Authorization")) != self.write_key:
            return 401, "Invalid Write Key\n", 0
        try:
            if (headers.get("Content-Encoding") or "").lower() == "gzip":
                raw = gzip.decompress(raw)
            payload = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError):
            return 400, "Invalid JSON\n", 0
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list) or not batch or not all(isinstance(e, dict) for e in batch):
            return 400, "Event is not a valid rudder event\n", 0
        if not all(str(e.get("userId") or e.get("anonymousId") or "").strip() for e in batch):
            return 400, "Request neither has anonymousId nor userId\n", len(batch)
        tracks = [e for e in batch if e.get("type") == "track" and e.get("event")]
        self.loader.load(tracks, self.clock(), parse_time(payload.get("sentAt")))
        with self._lock:
            lost_ack = self._after_write.pop(0) if self._after_write else None
        if lost_ack is not None:
            return lost_ack, "scripted failure after the write\n", len(batch)
        return 200, "OK", len(batch)


def _write_key(header):
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        return b64decode(header.split(" ", 1)[1]).decode("utf-8").split(":", 1)[0]
    except (ValueError, UnicodeDecodeError):
        return None
