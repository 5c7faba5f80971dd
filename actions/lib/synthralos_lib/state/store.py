"""The pack's state store: one small interface, two backends.

Every st2 action is its own short-lived process, so state that must outlive
one execution (circuit breakers, cron backoff counters, failure history,
locks) lives in a shared store:

* `DatastoreStore`, the embedded default: the st2 datastore reached through
  the action or sensor service, with `local=False` and a `synthralos.` key
  prefix, so any action or sensor of the pack sees the same keys.
* `RedisStore`, when `redis.url` is configured.

Atomicity. Redis runs every operation atomically (INCRBY, SET NX PX, a Lua
compare-and-delete for unlock, MULTI for bounded list append, WATCH/MULTI
with retries for `update`, the read-modify-write of one JSON document). The
st2 datastore has no compare-and-set, so on it `incr`, `acquire_lock`,
`list_push` and `update` are read-modify-write and only best-effort under
concurrency: two processes racing may both read the same value and one write
wins. Use Redis where concurrent writers matter (many parallel recoveries,
busy breakers, cron jobs whose runs overlap).

TTL. The st2 datastore expires keys itself when given a TTL, but st2tests'
mock datastore ignores TTL, and expiry in st2 is not instant; the datastore
backend therefore also stores the expiry time next to the value and treats
an expired entry as absent. Values are JSON.
"""

import json
import math
import re
import time
import uuid
from contextlib import contextmanager

from synthralos_lib import backoff

DATASTORE_PREFIX = "synthralos."


#: Returned by an `update` function as the new value: leave the key as it is.
KEEP = object()


class StoreError(RuntimeError):
    """The backing store could not be reached or returned something unusable."""


class LockNotAcquired(RuntimeError):
    """`Store.lock` could not take the lock within its wait time."""


def _within_bytes(items, max_bytes, encoded=False):
    """How many of `items` (newest first) fit in `max_bytes` of JSON: at least one; all without a bound."""
    if max_bytes is None:
        return len(items)
    total = 0
    for count, item in enumerate(items):
        total += len((item if encoded else json.dumps(item)).encode("utf-8"))
        if total > max_bytes and count:
            return count
    return len(items)


class Store(object):
    """Interface shared by both backends. Keys are short strings like `breaker.openai-us`."""

    #: True when every operation below is atomic across processes.
    atomic = False
    name = "abstract"

    def get(self, key, default=None):
        raise NotImplementedError

    def get_quiet(self, key, default=None):
        """`get` for a key that is usually missing and read on a timer: on the st2 datastore a listing,
        because st2api logs a warning for every read of a missing key (8,640 a day at one read per 10 s)."""
        return self.get(key, default)

    def set(self, key, value, ttl=None):
        """Store a JSON-able value; `ttl` in seconds (float allowed)."""
        raise NotImplementedError

    def delete(self, key):
        raise NotImplementedError

    def incr(self, key, amount=1, ttl=None):
        """Add `amount` to an integer counter (missing counts as 0); return the new value.

        `ttl` is applied when the counter is created.
        """
        raise NotImplementedError

    def acquire_lock(self, name, ttl):
        """Take lock `name` for `ttl` seconds; return an owner token, or None if held."""
        raise NotImplementedError

    def release_lock(self, name, token):
        """Release the lock if `token` still owns it; return whether it did."""
        raise NotImplementedError

    def list_push(self, key, value, max_len, ttl=None, max_bytes=None):
        """Prepend `value` to a list kept at most `max_len` long (newest first) and, with `max_bytes`, at
        most that many bytes of JSON (the oldest items go; the newest always stays)."""
        raise NotImplementedError

    def list_range(self, key, start=0, stop=-1):
        """Items `start..stop` inclusive (like LRANGE), newest first."""
        raise NotImplementedError

    def update(self, key, fn, ttl=None):
        """Read-modify-write one value: `fn(current or None) -> (new, result)`; return `result`.

        `new` is the value to store (with `ttl`), None to delete the key, or KEEP
        to leave it. On Redis the whole step is atomic (fn may be called again
        when another writer got in first, so it must not have side effects); on
        the datastore it is best-effort (see module doc).
        """
        raise NotImplementedError

    def scan(self, prefix):
        """Every (key, value) whose key starts with `prefix`, in no particular order."""
        raise NotImplementedError

    @contextmanager
    def lock(self, name, ttl, wait_s=0.0, poll_s=0.05):
        """Hold lock `name` for the block; raise LockNotAcquired after `wait_s`."""
        deadline = time.time() + wait_s
        token = self.acquire_lock(name, ttl)
        while token is None and time.time() < deadline:
            time.sleep(poll_s)
            token = self.acquire_lock(name, ttl)
        if token is None:
            raise LockNotAcquired("lock %r is held by another process" % name)
        try:
            yield token
        finally:
            self.release_lock(name, token)


class DatastoreStore(Store):
    """The st2 datastore through an action/sensor service (best-effort atomicity, see module doc)."""

    atomic = False
    name = "st2_datastore"

    def __init__(self, service, prefix=DATASTORE_PREFIX, clock=time.time):
        if service is None:
            raise StoreError("the st2 datastore backend needs the action or sensor service")
        self._service = service
        self._prefix = prefix
        self._clock = clock

    def _name(self, key):
        return self._prefix + key

    def _read(self, key):
        try:
            raw = self._service.get_value(self._name(key), local=False)
        except Exception as exc:  # the service talks to the st2 API over HTTP
            raise StoreError("st2 datastore read of %r failed: %s" % (key, exc))
        return None if raw is None else self._envelope(key, raw)

    def _envelope(self, key, raw):
        """The stored {"v", "exp"} of `key` from its raw value; None (and the key deleted) once expired."""
        try:
            envelope = json.loads(raw)
        except (TypeError, ValueError):
            raise StoreError("st2 datastore key %r does not hold synthralos JSON" % self._name(key))
        expires_at = envelope.get("exp")
        if expires_at is not None and self._clock() >= expires_at:
            self.delete(key)
            return None
        return envelope

    def _list_page(self, prefix, limit, offset):
        """(key-value pairs under `prefix`, whether the service paged them): older action
        services take no limit/offset and return everything."""
        try:
            try:
                page = self._service.list_values(local=False, prefix=self._name(prefix), limit=limit, offset=offset)
                return page or [], True
            except TypeError:
                return self._service.list_values(local=False, prefix=self._name(prefix)) or [], False
        except Exception as exc:
            raise StoreError("st2 datastore list of %r failed: %s" % (prefix, exc))

    def _write(self, key, value, expires_at):
        envelope = {"v": value, "exp": expires_at}
        ttl = None
        if expires_at is not None:
            ttl = max(1, int(math.ceil(expires_at - self._clock())))
        try:
            self._service.set_value(self._name(key), json.dumps(envelope), ttl=ttl, local=False)
        except Exception as exc:
            raise StoreError("st2 datastore write of %r failed: %s" % (key, exc))

    def _expiry(self, ttl):
        return None if ttl is None else self._clock() + float(ttl)

    def get(self, key, default=None):
        envelope = self._read(key)
        return default if envelope is None else envelope["v"]

    def get_quiet(self, key, default=None):
        for name, value in self.items(key, limit=10):
            if name == key:
                return value
        return default

    def set(self, key, value, ttl=None):
        self._write(key, value, self._expiry(ttl))

    def delete(self, key):
        try:
            self._service.delete_value(self._name(key), local=False)
        except Exception as exc:
            raise StoreError("st2 datastore delete of %r failed: %s" % (key, exc))

    def incr(self, key, amount=1, ttl=None):
        envelope = self._read(key)
        if envelope is None:
            value, expires_at = int(amount), self._expiry(ttl)
        else:
            value, expires_at = int(envelope["v"]) + int(amount), envelope.get("exp")
        self._write(key, value, expires_at)
        return value

    def acquire_lock(self, name, ttl):
        key = "lock." + name
        if self._read(key) is not None:
            return None
        token = uuid.uuid4().hex
        self._write(key, token, self._expiry(ttl))
        # Read back: if a racer wrote after us, its token is what we see.
        envelope = self._read(key)
        return token if envelope is not None and envelope["v"] == token else None

    def release_lock(self, name, token):
        key = "lock." + name
        envelope = self._read(key)
        if envelope is None or envelope["v"] != token:
            return False
        self.delete(key)
        return True

    def list_push(self, key, value, max_len, ttl=None, max_bytes=None):
        envelope = self._read(key)
        items = [] if envelope is None else list(envelope["v"])
        items.insert(0, value)
        items = items[: max(1, int(max_len))]
        self._write(key, items[: _within_bytes(items, max_bytes)], self._expiry(ttl))

    def list_range(self, key, start=0, stop=-1):
        items = self.get(key, default=[])
        return _lrange(items, start, stop)

    def items(self, prefix, limit=100, offset=0):
        """[(key, value)] of up to `limit` keys starting with `prefix` (one key per queued item: no
        read-modify-write race between writers), sorted by key. Expired and unreadable entries are skipped."""
        kvps, _ = self._list_page(prefix, limit, offset)
        out = []
        for kvp in kvps:
            key = kvp.name[len(self._prefix):]
            try:
                envelope = self._envelope(key, kvp.value)
            except StoreError:  # not the pack's JSON: skip it, the queue goes on
                continue
            if envelope is not None:
                out.append((key, envelope.get("v")))
        out.sort(key=lambda item: item[0])
        if len(out) > limit:  # a service that ignores limit/offset (st2tests' mock): page here
            out = out[offset : offset + limit]
        return out

    def count(self, prefix, cap, page_size=100):
        """How many keys start with `prefix`, at most `cap`, without fetching them all.

        The st2 API gives no total but pages by offset: one page answers when fewer keys are there;
        past it, one-key pages probed by offset (a binary search) find the end, so 10,000 keys cost
        about 14 one-key requests instead of 100 full pages. A service that does not page answers
        with every key at once. Counts names (an expired or foreign key under `prefix` counts too).
        """
        page, paged = self._list_page(prefix, page_size, 0)
        if not paged or len(page) != page_size or len(page) >= cap:
            return min(len(page), cap)
        low, high = page_size, cap  # a key is at offset low - 1; the answer is in [low, high]
        while low < high:
            mid = (low + high) // 2
            probe, _ = self._list_page(prefix, 1, mid)
            if len(probe) > 1:  # limit/offset ignored (st2tests' mock): that is every key
                return min(len(probe), cap)
            if probe:
                low = mid + 1
            else:
                high = mid
        return low

    def update(self, key, fn, ttl=None):
        envelope = self._read(key)
        new, result = fn(None if envelope is None else envelope["v"])
        if new is None:
            if envelope is not None:
                self.delete(key)
        elif new is not KEEP:
            self.set(key, new, ttl=ttl)
        return result

    def scan(self, prefix, page_size=100):
        # st2's API pages list_values (api.max_page_size, 100 by default); older
        # action services take no limit/offset (one page then), and st2tests' mock
        # ignores them, so stop as soon as a page brings nothing new.
        found, offset = {}, 0
        while True:
            page, paged = self._list_page(prefix, page_size, offset)
            fresh = [item for item in page if item.name not in found]
            for item in fresh:
                found[item.name] = item.value
            if not paged or len(page) < page_size or not fresh:
                break
            offset += len(page)
        items = []
        for name in sorted(found):
            key = name[len(self._prefix):]
            envelope = self._envelope(key, found[name])  # the listed value: no second read per key
            if envelope is not None:
                items.append((key, envelope["v"]))
        return items


def _lrange(items, start, stop):
    stop = len(items) + stop if stop < 0 else stop
    return items[start : stop + 1]


# Redis scripts, so each operation is one atomic step.
# Increment, and give the counter an expiry only if it has none yet.
_INCR_WITH_TTL = """
local value = redis.call('incrby', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('pttl', KEYS[1]) == -1 then
  redis.call('pexpire', KEYS[1], ARGV[2])
end
return value
"""

# Compare-and-delete, so only the lock's owner releases it.
_RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

_redis_clients = {}


def redis_client(url):
    """One redis-py client per URL per process (they pool connections)."""
    import redis  # imported lazily: the datastore backend must not need it

    if url not in _redis_clients:
        options = dict(decode_responses=True, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # redis-py >= 6 retries with growing backoff by default; one quick retry
            # rides out a dropped connection without stalling an action when Redis is down.
            options["retry"] = Retry(NoBackoff(), 1)
        except ImportError:  # redis-py < 4.1 has no retry objects
            pass
        _redis_clients[url] = redis.Redis.from_url(url, **options)
    return _redis_clients[url]


class RedisStore(Store):
    """Redis backend; every operation is atomic."""

    atomic = True
    name = "redis"

    #: How often `update` re-reads after losing a race before giving up, and the longest pause between tries.
    UPDATE_ATTEMPTS = 50
    UPDATE_MAX_PAUSE_S = 0.05

    def __init__(self, url, key_prefix="synthralos:", client=None):
        self.url = url
        self.prefix = key_prefix
        self.client = client if client is not None else redis_client(url)

    def key(self, key):
        """The full Redis key for a store key (used by modules that need raw Redis, e.g. the outbox)."""
        return self.prefix + key

    def _call(self, what, fn, *args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreError("redis %s failed: %s" % (what, exc))

    def get(self, key, default=None):
        raw = self._call("GET", self.client.get, self.key(key))
        return default if raw is None else json.loads(raw)

    def set(self, key, value, ttl=None):
        px = None if ttl is None else max(1, int(float(ttl) * 1000))
        self._call("SET", self.client.set, self.key(key), json.dumps(value), px=px)

    def delete(self, key):
        self._call("DEL", self.client.delete, self.key(key))

    def incr(self, key, amount=1, ttl=None):
        ttl_ms = 0 if ttl is None else max(1, int(float(ttl) * 1000))
        return int(self._call("EVAL", self.client.eval, _INCR_WITH_TTL, 1, self.key(key), int(amount), ttl_ms))

    def acquire_lock(self, name, ttl):
        token = uuid.uuid4().hex
        ok = self._call(
            "SET NX", self.client.set, self.key("lock." + name), token, nx=True, px=max(1, int(float(ttl) * 1000))
        )
        return token if ok else None

    def release_lock(self, name, token):
        released = self._call("EVAL", self.client.eval, _RELEASE_LOCK, 1, self.key("lock." + name), token)
        return bool(released)

    def list_push(self, key, value, max_len, ttl=None, max_bytes=None):
        full = self.key(key)
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(full, json.dumps(value))
        pipe.ltrim(full, 0, max(1, int(max_len)) - 1)
        if ttl is not None:
            pipe.pexpire(full, max(1, int(float(ttl) * 1000)))
        self._call("LPUSH", pipe.execute)
        if max_bytes is not None:
            items = self._call("LRANGE", self.client.lrange, full, 0, -1)
            keep = _within_bytes(items, max_bytes, encoded=True)
            if keep < len(items):
                self._call("LTRIM", self.client.ltrim, full, 0, keep - 1)

    def list_range(self, key, start=0, stop=-1):
        return [json.loads(item) for item in self._call("LRANGE", self.client.lrange, self.key(key), start, stop)]

    def update(self, key, fn, ttl=None):
        import redis

        full = self.key(key)
        px = None if ttl is None else max(1, int(float(ttl) * 1000))
        try:
            with self.client.pipeline(transaction=True) as pipe:
                for attempt in range(self.UPDATE_ATTEMPTS):
                    if attempt:
                        # Jittered pause so writers that keep colliding spread out instead of livelocking.
                        time.sleep(backoff.capped_exponential(attempt, 0.002, self.UPDATE_MAX_PAUSE_S, jitter=backoff.FULL))
                    try:
                        pipe.watch(full)
                        raw = pipe.get(full)
                        new, result = fn(None if raw is None else json.loads(raw))
                        if new is KEEP:
                            pipe.unwatch()
                            return result
                        pipe.multi()
                        if new is None:
                            pipe.delete(full)
                        else:
                            pipe.set(full, json.dumps(new), px=px)
                        pipe.execute()  # raises WatchError if the key changed since WATCH
                        return result
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise StoreError("redis update of %r failed: %s" % (key, exc))
        raise StoreError("redis update of %r lost the race %d times in a row" % (key, self.UPDATE_ATTEMPTS))

    def scan(self, prefix):
        pattern = re.sub(r"([\\*?\[\]])", r"\\\1", self.key(prefix)) + "*"
        keys = sorted(self._call("SCAN", lambda: list(self.client.scan_iter(match=pattern, count=500))))
        if not keys:
            return []
        values = self._call("MGET", self.client.mget, keys)
        return [(k[len(self.prefix):], json.loads(v)) for k, v in zip(keys, values) if v is not None]


def get_store(config, service):
    """The store for this process: Redis when `redis.url` is set, else the st2 datastore.

    `config` is a `PackConfig`; `service` is the action or sensor service.
    """
    if config.redis_url:
        return RedisStore(config.redis_url, config.section("redis").get("key_prefix") or "synthralos:")
    return DatastoreStore(service)
