"""Run one outbox flush in its own process, so tests can kill -9 it mid-batch.

    python events_flusher.py <redis_url> <key_prefix> <rudderstack section as JSON> <reclaim_idle_ms>
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "actions", "lib"))

import redis  # noqa: E402

from synthralos_lib.events.outbox import RedisOutbox, make_client  # noqa: E402


def main():
    url, prefix, rudder, reclaim_ms = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    client = redis.Redis.from_url(url, decode_responses=True)
    outbox = RedisOutbox(client, prefix, rudder, reclaim_idle_ms=reclaim_ms)
    print(json.dumps(outbox.flush(make_client(rudder), force=True)))


if __name__ == "__main__":
    main()
