"""Redis Streams calls whose redis-py API differs across the versions the pack supports.

redis-py parses the XAUTOCLAIM reply differently by version: 4.1 (what st2 3.8.1
pins) keeps only the claimed entries and drops the cursor, 4.2+ keeps
[cursor, entries, deleted ids], 3.5 has no parser for it. `autoclaim` therefore
sends the command through a pipeline that parses nothing and reads the reply the
way Redis sends it. `pending_range` passes XPENDING's range by keyword: redis-py
4.1 takes `idle` as its third positional argument, 3.5 and 4.2+ take `min`.
"""


def autoclaim(client, stream, group, consumer, min_idle_ms, start, count):
    """One XAUTOCLAIM call: (next start id, [(entry id, {field: value})], [ids deleted from the
    stream while pending]). "0-0" as the next start id means the pending list was scanned to
    its end. Entries deleted while pending are not among the entries (Redis 6.2 replies nil for
    them, Redis 7 lists their ids in the reply's third part and drops them from the pending list)."""
    pipe = client.pipeline(transaction=False)
    pipe.response_callbacks = {}
    pipe.execute_command("XAUTOCLAIM", stream, group, consumer, int(min_idle_ms), start, "COUNT", int(count))
    (reply,) = pipe.execute()
    entries = [(item[0], dict(zip(item[1][::2], item[1][1::2]))) for item in reply[1] if item is not None]
    return reply[0], entries, list(reply[2]) if len(reply) > 2 else []


def pending_range(client, stream, group, count):
    """XPENDING's first `count` entries of the group, oldest first (dicts with `message_id`,
    `consumer`, `time_since_delivered`, `times_delivered`)."""
    return client.xpending_range(stream, group, min="-", max="+", count=count)
