"""RudderStack's warehouse naming rules, as the pack's events meet them.

What rudder-server's warehouse transformer does to a track event's names
(read from `warehouse/transformer/safe.go`, `internal/snakecase/`,
`internal/rules/` and `internal/reservedkeywords/` in rudderlabs/rudder-server;
written here from that description, not copied):

* Nested objects are flattened: `{"result": {"output": {"x": 1}}}` becomes the
  key `result_output_x` (raw keys joined with `_`, then transformed as one).
  Arrays are not flattened: they land as one JSON text column. Null and empty
  string values produce no column for that row.
* A key becomes a column name in steps: keep the runs of ASCII letters and
  digits and join them with `_` (so `Cízǔ` -> `C_z`, spaces and dots split);
  lodash's `snakeCase` over that (words are split at case changes AND at
  letter/digit boundaries: `gpt4o` -> `gpt_4_o`, `st2_execution_id` ->
  `st_2_execution_id`); leading underscores of the raw key survive; a
  leading digit gets a `_` prefix; PostgreSQL cuts the name to 63 characters;
  then it is lower-cased and a reserved keyword of the warehouse gets a `_`
  prefix (`group` -> `_group`). Table names (the event name) follow the same
  steps.
* A property whose column equals one RudderStack fills itself (`id`,
  `received_at`, `timestamp`, `event_text`, ...) is dropped: the standard
  column wins.

`snake_case` covers ASCII only, which is all it ever sees after the first step.
"""

import json
import re

POSTGRES_MAX_IDENTIFIER = 63
MAX_IDENTIFIER = 127

# rudder-server's reserved table/column keywords for POSTGRES
# (warehouse/transformer/internal/reservedkeywords, key "POSTGRES").
POSTGRES_RESERVED = frozenset("""
all analyse analyze and any array as asc asymmetric authorization binary both case cast check
collate column constraint create cross current_date current_role current_time current_timestamp
current_user default deferrable desc distinct do else end except false for foreign freeze from
full grant group having ilike in initially inner intersect into is isnull join leading left like
limit localtime localtimestamp natural new not notnull null off offset old on only or order outer
overlaps placing primary references right select session_user similar some symmetric table then
to trailing true union unique user using verbose when where
""".split())

# Columns RudderStack fills itself on a track event's table (rules.go: the default rules, the
# track rules and the event-table rules). A property mapping to one of these is dropped.
TRACK_RESERVED_COLUMNS = frozenset([
    "id", "anonymous_id", "user_id", "sent_at", "timestamp", "received_at", "original_timestamp",
    "channel", "context_ip", "context_request_ip", "context_passed_ip", "event_text", "record_id",
])
# Not filled by a rule, but written by the loader on every event table.
LOADER_COLUMNS = frozenset(["event", "uuid_ts"])

# lodash's word pattern restricted to ASCII (a break is any non-alphanumeric character):
_WORD = re.compile(
    r"[A-Z]?[a-z]+(?=[^A-Za-z0-9]|[A-Z]|$)"  # a lower-case word ending at a break, a capital or the end
    r"|[A-Z]+(?=[^A-Za-z0-9]|[A-Z][a-z]|$)"  # an acronym before a capitalised word: HTTPServer -> HTTP
    r"|[A-Z]?[a-z]+"  # a lower-case word running into digits: gpt4 -> gpt
    r"|[A-Z]+"  # capitals running into digits: ABC123 -> ABC
    r"|\d*(?:1ST|2ND|3RD|(?![123])\dTH)(?=\b|[a-z_])"  # ordinals stay one word
    r"|\d*(?:1st|2nd|3rd|(?![123])\dth)(?=\b|[A-Z_])"
    r"|\d+"
)
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_LEADING_UNDERSCORES = re.compile(r"^_*")


def snake_case(text):
    """lodash `_.snakeCase` for ASCII text: words split at breaks, case changes and digits."""
    return "_".join(word.lower() for word in _WORD.findall(text.replace("'", "")))


def _transform(raw, max_length):
    joined = "_".join(_ALNUM_RUN.findall(raw))
    if raw.startswith("_"):
        name = _LEADING_UNDERSCORES.match(raw).group(0) + snake_case(joined.lstrip("_"))
    else:
        name = snake_case(joined)
    if name[:1].isdigit():
        name = "_" + name
    return name[:max_length]


def _safe(name, reserved, max_length):
    name = name[:max_length].lower()
    if name in reserved:
        name = "_" + name
    return name[:MAX_IDENTIFIER]


def column_name(raw, provider="postgres"):
    """The warehouse column for a raw (flattened) property key; '' when nothing is left of it."""
    limit = POSTGRES_MAX_IDENTIFIER if provider == "postgres" else MAX_IDENTIFIER
    reserved = POSTGRES_RESERVED if provider == "postgres" else frozenset()
    name = _transform(raw, limit)
    return _safe(name, reserved, limit) if name else ""


def table_name(event_name, provider="postgres"):
    """The warehouse table a track event with this name lands in."""
    return column_name(event_name, provider)


def is_blank(value):
    return value is None or (isinstance(value, str) and value == "")


def flatten(node, prefix="", path=()):
    """[(raw flattened key, value, path)] for every non-blank leaf; arrays stay whole (JSON text).

    `path` is the tuple of keys that led there: {"a": {"b": 1}} and {"a_b": 1} give the same
    raw key `a_b` from different paths (and RudderStack keeps only one of the two values).
    """
    out = []
    for key, value in node.items():
        if is_blank(value):
            continue
        if isinstance(value, dict):
            out.extend(flatten(value, prefix + key + "_", path + (key,)))
        elif isinstance(value, list):
            out.append((prefix + key, json.dumps(value, separators=(",", ":"), sort_keys=True), path + (key,)))
        else:
            out.append((prefix + key, value, path + (key,)))
    return out


class NameReport(object):
    """Columns per table for a set of events, and every naming problem found on the way."""

    def __init__(self, provider="postgres"):
        self.provider = provider
        self.tables = {}  # table -> {column: (raw keys, dotted property paths)}
        self.problems = []

    def add_event(self, event):
        """Record the event table's columns for one built track event."""
        name = event["event"]
        table = table_name(name, self.provider)
        self._check_name("event name", name, table, name)
        columns = self.tables.setdefault(table, {})
        for raw, _, path in flatten(event.get("properties") or {}):
            self._add(columns, table, raw, column_name(raw, self.provider), "property", ".".join(path))
        for raw, _, path in flatten(event.get("context") or {}, "context_", ("context",)):
            self._add(columns, table, raw, column_name(raw, self.provider), "context", ".".join(path))
        return table

    def add_keys(self, event_name, raw_keys):
        """Record documented property keys (raw, already flattened) of one event."""
        table = table_name(event_name, self.provider)
        columns = self.tables.setdefault(table, {})
        for raw in raw_keys:
            self._add(columns, table, raw, column_name(raw, self.provider), "documented property", None)

    def _add(self, columns, table, raw, column, what, path):
        self._check_name(what, raw, column, table)
        if not column:
            return
        if column in TRACK_RESERVED_COLUMNS or column in LOADER_COLUMNS:
            self.problems.append("%s: %s %r becomes column %r, which RudderStack fills itself (the property is "
                                 "dropped)" % (table, what, raw, column))
        # Two raw keys, or two property paths giving one raw key ({"a": {"b": 1}} and {"a_b": 2}), in one column.
        raws, paths = columns.setdefault(column, (set(), set()))
        raws.add(raw)
        if path is not None:
            paths.add(path)
        for seen in (raws, paths):
            if len(seen) == 2 and (raw in seen or path in seen):  # report once per column and kind
                self.problems.append("%s: %s collide in column %r" % (table, sorted(seen), column))

    def _check_name(self, what, raw, name, table):
        if not name:
            self.problems.append("%s: %s %r has no letters or digits: it gets no column" % (table, what, raw))
            return
        unprefixed = name[1:] if name.startswith("_") and not raw.startswith("_") else name
        if unprefixed in POSTGRES_RESERVED and self.provider == "postgres":
            self.problems.append("%s: %s %r is the reserved word %r (it lands as %r)" % (table, what, raw, unprefixed, name))
        full = _transform(raw, 10 ** 6)
        if len(full) > POSTGRES_MAX_IDENTIFIER:
            self.problems.append("%s: %s %r is %d characters as %r; PostgreSQL keeps %r"
                                 % (table, what, raw, len(full), full, name))

    def columns(self, table):
        return set(self.tables.get(table, {}))
