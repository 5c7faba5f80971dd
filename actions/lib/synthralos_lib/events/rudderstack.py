"""Deliver event batches to a RudderStack data plane (`POST /v1/batch`).

The gateway's contract (rudder-server `gateway/`):

* HTTP Basic auth with the source write key as user and an empty password;
  a missing or unknown key is 401 ("Invalid Write Key"), a disabled source 404.
* The body is `{"batch": [event, ...]}`; invalid JSON, a non-object event or an
  event with neither `userId` nor `anonymousId` rejects the WHOLE request
  with 400, and a body over the request limit (4000 KB) with 413. One bad
  event therefore blocks its batch-mates, which is why we split on 400/413.
* `Content-Encoding: gzip` bodies are accepted.

Delivery rules, all here:

* 2xx: delivered.
* 429, 5xx, connection errors and timeouts: retried with jittered exponential
  backoff up to `max_retries`; then the events are returned as `retry_later`
  (the outbox keeps them) and no further request is made in this call.
* 400 / 413 (and any other 4xx but 401/404/429): the batch is split in halves
  until the offending event is alone; only it is dead-lettered.
* 401 / 404: a configuration problem. The batch is returned as `refused`
  (the outbox keeps it for the fix window, then dead-letters it), the result
  carries `config_error`, and nothing else is sent in this call (no spinning).
* `Retry-After` (seconds or an HTTP date) on 429/503 is honoured: a retry
  waits at least that long, and when it is longer than the backoff cap the
  call stops at once; `retry_after_s` carries it to the caller.
"""

import gzip as gzip_module
import json
import logging
import random
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from synthralos_lib import backoff
from synthralos_lib.state.config import with_defaults
from synthralos_lib.state.redaction import scrub_and_cap

LOG = logging.getLogger(__name__)

# rudder-server's default Gateway.maxReqSizeInKB is 4000 (x 1024 bytes). Stay
# under it with room for the envelope, so a normal batch never meets a 413.
MAX_REQUEST_BYTES = 4000 * 1024
REQUEST_BUDGET_BYTES = MAX_REQUEST_BYTES - 16 * 1024
MAX_BACKOFF_S = 30.0
CONFIG_ERROR_STATUSES = (401, 404)
MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(value, now=None):
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped; None if absent/unusable."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


class DeliveryResult(object):
    """What happened to each event of one `send` call."""

    def __init__(self):
        self.delivered = []  # events accepted with a 2xx
        self.dead = []  # (event, reason) pairs: poison (400/413), never retried automatically
        self.refused = []  # (event, reason) pairs refused with 401/404: kept for the fix window, then dead
        self.retry_later = []  # events to keep in the outbox and send again later
        self.config_error = None  # {"status": .., "body": ..} on 401/404
        self.requests = 0
        self.retries = 0
        self.last_error = None
        self.retry_after_s = None  # the data plane's last Retry-After, in seconds

    def summary(self):
        return {
            "delivered": len(self.delivered),
            "dead_lettered": len(self.dead),
            "refused": len(self.refused),
            "retry_later": len(self.retry_later),
            "requests": self.requests,
            "retries": self.retries,
            "config_error": self.config_error,
            "last_error": self.last_error,
            "retry_after_s": self.retry_after_s,
        }


def backoff_delay(attempt, base_s, rand=random.random, cap_s=MAX_BACKOFF_S):
    """Delay before retry `attempt` (1-based): equal jitter over base * 2^(attempt-1), capped.

    Equal jitter (half fixed, half random) spreads retries of many flushers
    without ever retrying immediately.
    """
    return backoff.capped_exponential(attempt, base_s, cap_s, jitter=backoff.EQUAL, draw=rand())


class RudderStackClient(object):
    def __init__(
        self,
        data_plane_url,
        write_key,
        max_retries=3,
        retry_delay_ms=1000,
        timeout_s=10,
        use_gzip=True,
        session=None,
        sleep=time.sleep,
        rand=random.random,
    ):
        if not write_key:
            raise ValueError("rudderstack.write_key is not set")
        self.url = data_plane_url.rstrip("/") + "/v1/batch"
        self._auth = (write_key, "")
        self.max_retries = int(max_retries)
        self.base_delay_s = float(retry_delay_ms) / 1000.0
        self.timeout_s = timeout_s
        self.use_gzip = use_gzip
        self._session = session  # created on first send: importing requests costs every action execution
        self._sleep = sleep
        self._rand = rand

    @classmethod
    def from_settings(cls, rudder, **kwargs):
        """Build from the `rudderstack` config section (a dict; what it leaves out is the schema's default)."""
        rudder = with_defaults("rudderstack", rudder)
        return cls(
            rudder["data_plane_url"] or "",
            rudder["write_key"] or "",
            max_retries=rudder["max_retries"],
            retry_delay_ms=rudder["retry_delay_ms"],
            timeout_s=rudder["request_timeout_s"],
            use_gzip=rudder["gzip"],
            **kwargs
        )

    def send(self, events):
        """Send `events` (a list of dicts), in as many requests as needed; never raises."""
        result = DeliveryResult()
        pending = list(self._chunks(events))
        while pending:
            chunk = pending.pop(0)
            stop = self._send_chunk(chunk, result)
            if stop:
                for rest in pending:
                    result.retry_later.extend(rest)
                break
        return result

    def _chunks(self, events):
        """Split `events` so no request body exceeds the gateway's limit."""
        chunk, size = [], 0
        for event in events:
            event_size = len(json.dumps(event, separators=(",", ":")).encode("utf-8")) + 1
            if chunk and size + event_size > REQUEST_BUDGET_BYTES:
                yield chunk
                chunk, size = [], 0
            chunk.append(event)
            size += event_size
        if chunk:
            yield chunk

    def _send_chunk(self, chunk, result):
        """Send one chunk, splitting on 400/413; return True when the caller must stop sending."""
        status, body = self._post_with_retries(chunk, result)
        if status is not None and 200 <= status < 300:
            result.delivered.extend(chunk)
            return False
        if status is None or status == 429 or status >= 500:
            result.retry_later.extend(chunk)
            return True
        if status in CONFIG_ERROR_STATUSES:
            reason = "HTTP %d from the data plane: %s" % (status, body)
            result.refused.extend((event, reason) for event in chunk)
            result.config_error = {"status": status, "body": body}
            LOG.error("[RudderStack] configuration error: %s; %d event(s) refused", reason, len(chunk))
            return True
        # 400, 413 or another client error: one event is to blame; find it.
        if len(chunk) == 1:
            reason = "HTTP %d from the data plane: %s" % (status, body)
            result.dead.append((chunk[0], reason))
            LOG.warning("[RudderStack] event %s rejected: %s", chunk[0].get("messageId"), reason)
            return False
        middle = len(chunk) // 2
        for half in (chunk[:middle], chunk[middle:]):
            if self._send_chunk(half, result):
                return True
        return False

    def _post_with_retries(self, chunk, result):
        """POST until a non-retryable answer or retries run out; returns (status or None, body)."""
        attempt = 0
        while True:
            status, body, retry_after = self._post(chunk, result)
            retryable = status is None or status == 429 or status >= 500
            if retryable and retry_after is not None:
                result.retry_after_s = retry_after
            # A Retry-After beyond the backoff cap: stop now, the caller waits it out.
            too_long = retry_after is not None and retry_after > MAX_BACKOFF_S
            if not retryable or attempt >= self.max_retries or too_long:
                if retryable:
                    result.last_error = body if status is None else "HTTP %d: %s" % (status, body)
                return status, body
            attempt += 1
            result.retries += 1
            delay = max(backoff_delay(attempt, self.base_delay_s, self._rand), retry_after or 0.0)
            LOG.warning(
                "[RudderStack] %s; retry %d/%d in %.2fs",
                body if status is None else "HTTP %d" % status,
                attempt,
                self.max_retries,
                delay,
            )
            self._sleep(delay)

    def _post(self, chunk, result):
        result.requests += 1
        sent_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        data = json.dumps({"batch": chunk, "sentAt": sent_at}, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "synthralos-stackstorm"}
        if self.use_gzip:
            # Level 1: most of the size gain on JSON for a fraction of the CPU.
            data = gzip_module.compress(data, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        import requests

        if self._session is None:
            self._session = requests.Session()
        try:
            response = self._session.post(self.url, data=data, headers=headers, auth=self._auth, timeout=self.timeout_s)
        except requests.RequestException as exc:
            return None, "network error: %s" % type(exc).__name__, None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return response.status_code, _body_excerpt(response.text, self._auth[0]), retry_after


def _body_excerpt(text, write_key):
    """The start of a response body for results and logs, scrubbed before it is cut (a gateway may echo the key)."""
    return scrub_and_cap((text or "").strip(), 300, [write_key])
