"""A local RudderStack data plane for tests and the benchmark.

It answers `POST /v1/batch` the way rudder-server's gateway does
(`gateway/handle_http_auth.go`, `gateway/handle.go`, `gateway/response/response.go`):

* HTTP Basic auth, write key as user: no key -> 401 "Failed to read writeKey
  from header"; unknown key -> 401 "Invalid Write Key"; key of a disabled
  source -> 404 "Source is disabled". Bodies are plain text with a newline,
  as Go's http.Error writes them.
* `Content-Encoding: gzip` bodies are decompressed; a body that does not
  gunzip is 400 (our stand-in for the gateway's unreadable-body error).
* The (decompressed) body must be JSON -> else 400 "Invalid JSON"; it must
  hold a `batch` array whose items are objects -> else 400 "Event is not a
  valid rudder event"; an empty batch is 400 "Empty batch payload"; every
  event needs a non-blank `userId` or `anonymousId` -> else the WHOLE request
  is 400 "Request neither has anonymousId nor userId".
* A body over 4000 KB (Gateway.maxReqSizeInKB default, x1024) -> 413
  "Request size exceeds max limit".
* Success is 200 "OK".

On top, tests script failures: `fail_next(status, times)`, an outage window
(`outage(status, retry_after=None)` / `recover()`; `retry_after` adds a
`Retry-After` header), a hung data plane (`hang(seconds)`: every request is
held that long, then answered 503; `recover()` ends it), `drop_next(times)` (the connection is closed
without an answer) and `delay_next(seconds)` (events accepted, answer held).
Accepted events are recorded for exact assertions (`accepted`,
`message_ids()`, `events(name)`), and every exchange in `request_log`.

Built on `synthralos_tests.http_server.StubHTTPServer`; importable from bench/
with `tests/` on sys.path.
"""

import threading

from synthralos_tests.http_server import Reply, StubHTTPServer, drop

MAX_REQUEST_BYTES = 4000 * 1024
DEFAULT_WRITE_KEY = "test-write-key"
BATCH_PATH = r"/v1/batch"

OK = "OK"
NO_WRITE_KEY = "Failed to read writeKey from header"
INVALID_WRITE_KEY = "Invalid Write Key"
SOURCE_DISABLED = "Source is disabled"
INVALID_JSON = "Invalid JSON"
NOT_RUDDER_EVENT = "Event is not a valid rudder event"
EMPTY_BATCH = "Empty batch payload"
NON_IDENTIFIABLE = "Request neither has anonymousId nor userId"
TOO_LARGE = "Request size exceeds max limit"
BODY_READ_FAILED = "Failed to read body from request"
SCRIPTED = "scripted failure"


class RudderStackSink(StubHTTPServer):
    """`POST /v1/batch` answered like rudder-server's gateway; see the module doc."""

    def __init__(self, write_keys=(DEFAULT_WRITE_KEY,), disabled_write_keys=(), max_request_bytes=MAX_REQUEST_BYTES):
        self.write_keys = set(write_keys)
        self.disabled_write_keys = set(disabled_write_keys)
        self.max_request_bytes = max_request_bytes
        self._sink_lock = threading.Lock()
        self.accepted = []  # events, in acceptance order
        self.request_log = []  # {"status", "events", "gzip"} per answered request
        self._outage = None
        self._retry_after = None
        self._hang_s = None
        super(RudderStackSink, self).__init__()

    def setup_routes(self):
        self.add_route("POST", BATCH_PATH, self._batch)

    def handle_unmatched(self, request):
        return Reply(404, "404 page not found\n")  # Go's default mux answer

    # -- scripting -----------------------------------------------------------

    def fail_next(self, status, times=1):
        self.script("POST", BATCH_PATH, *[lambda req, s=status: self._answer(req, s, SCRIPTED, 0) for _ in range(times)])

    def drop_next(self, times=1):
        self.script("POST", BATCH_PATH, *[drop() for _ in range(times)])

    def delay_next(self, seconds, times=1):
        """Accept and record the next requests' events, but answer only after `seconds`
        (a client killed meanwhile never sees the 200: its resend is a duplicate)."""

        def delayed(request):
            reply = self._batch(request)
            reply.delay = float(seconds)
            return reply

        self.script("POST", BATCH_PATH, *[delayed for _ in range(times)])

    def outage(self, status=503, retry_after=None):
        """Answer every request with `status` (and `Retry-After: <retry_after>` if given) until `recover()`."""
        self._outage = status
        self._retry_after = retry_after

    def hang(self, seconds):
        """Hold every request `seconds` before answering 503 (the server's stop cuts it short), until `recover()`."""
        self._hang_s = float(seconds)

    def recover(self):
        self._outage = None
        self._retry_after = None
        self._hang_s = None

    # -- records ---------------------------------------------------------------

    def message_ids(self):
        with self._sink_lock:
            return [e.get("messageId") for e in self.accepted]

    def events(self, name=None):
        with self._sink_lock:
            return [e for e in self.accepted if name is None or e.get("event") == name]

    def statuses(self):
        """Status of every request to /v1/batch in arrival order (None: dropped unanswered)."""
        return [r.status for r in self.requests("POST", BATCH_PATH)]

    # -- the gateway -------------------------------------------------------------

    def _batch(self, request):
        if self._hang_s is not None:
            reply = self._answer(request, 503, SCRIPTED, 0)
            reply.delay = self._hang_s
            return reply
        if self._outage is not None:
            reply = self._answer(request, self._outage, SCRIPTED, 0)
            if self._retry_after is not None:
                reply.headers = {"Retry-After": str(self._retry_after)}
            return reply
        auth = request.basic_auth()
        write_key = auth[0] if auth else None
        if not write_key:
            return self._answer(request, 401, NO_WRITE_KEY, 0)
        if write_key in self.disabled_write_keys:
            return self._answer(request, 404, SOURCE_DISABLED, 0)
        if write_key not in self.write_keys:
            return self._answer(request, 401, INVALID_WRITE_KEY, 0)
        if request.decode_error:
            return self._answer(request, 400, BODY_READ_FAILED, 0)
        if len(request.body) > self.max_request_bytes:  # the gateway measures the decompressed body
            return self._answer(request, 413, TOO_LARGE, 0)
        if request.json_error is not None or not request.body:
            return self._answer(request, 400, INVALID_JSON, 0)
        payload = request.json
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
            return self._answer(request, 400, NOT_RUDDER_EVENT, 0)
        if not batch:
            return self._answer(request, 400, EMPTY_BATCH, 0)
        if not all(_identifiable(event) for event in batch):
            return self._answer(request, 400, NON_IDENTIFIABLE, len(batch))  # the whole request is refused
        with self._sink_lock:
            self.accepted.extend(batch)
        return self._answer(request, 200, OK, len(batch))

    def _answer(self, request, status, message, events):
        with self._sink_lock:
            self.request_log.append(
                {"status": status, "events": events, "gzip": request.header("content-encoding", "").lower() == "gzip"}
            )
        # Go's http.Error: text/plain with a trailing newline; success is the bare "OK".
        return Reply(status, message if status == 200 else message + "\n")


def _identifiable(event):
    # The gateway stringifies the ids and trims them; blank counts as missing.
    for key in ("userId", "anonymousId"):
        value = event.get(key)
        if value is not None and str(value).strip():
            return True
    return False
