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
(`outage(status)` / `recover()`), and `drop_next(times)` (the connection is
closed without an answer). Accepted events are recorded for exact assertions.
"""

import base64
import gzip
import json
import threading
import time
import socket
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_REQUEST_BYTES = 4000 * 1024
DEFAULT_WRITE_KEY = "test-write-key"

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


class DropConnection(Exception):
    """Raised by `handle` when the scripted behaviour is to close the connection unanswered."""


class RudderStackGateway(object):
    """The gateway's request validation and the sink's records; transport-independent."""

    def __init__(self, write_keys=(DEFAULT_WRITE_KEY,), disabled_write_keys=(), max_request_bytes=MAX_REQUEST_BYTES):
        self.write_keys = set(write_keys)
        self.disabled_write_keys = set(disabled_write_keys)
        self.max_request_bytes = max_request_bytes
        self._lock = threading.Lock()
        self.accepted = []  # events, in acceptance order
        self.requests = []  # one dict per request: status, events, gzip
        self._scripted = []  # statuses for the next requests
        self._drops = 0
        self._outage = None
        self._delays = []

    # -- scripting -----------------------------------------------------------

    def fail_next(self, status, times=1):
        with self._lock:
            self._scripted.extend([status] * times)

    def delay_next(self, seconds, times=1):
        """Accept and record the next requests' events, but answer only after `seconds`
        (a client killed meanwhile never sees the 200: its resend is a duplicate)."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def drop_next(self, times=1):
        with self._lock:
            self._drops += times

    def outage(self, status=503):
        """Answer every request with `status` until `recover()`."""
        with self._lock:
            self._outage = status

    def recover(self):
        with self._lock:
            self._outage = None

    def reset(self):
        with self._lock:
            self.accepted = []
            self.requests = []
            self._scripted = []
            self._drops = 0
            self._outage = None
            self._delays = []

    # -- records ---------------------------------------------------------------

    def message_ids(self):
        with self._lock:
            return [e.get("messageId") for e in self.accepted]

    def events(self, name=None):
        with self._lock:
            return [e for e in self.accepted if name is None or e.get("event") == name]

    def statuses(self):
        with self._lock:
            return [r["status"] for r in self.requests]

    # -- the gateway -------------------------------------------------------------

    def handle(self, method, headers, body):
        """Answer one request to /v1/batch: returns (status, text body)."""
        headers = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            if self._drops:
                self._drops -= 1
                self.requests.append({"status": None, "events": 0, "gzip": None})
                raise DropConnection()
            scripted = self._scripted.pop(0) if self._scripted else self._outage
        if scripted is not None:
            return self._answer(scripted, "scripted failure", 0, headers)
        if method != "POST":
            return self._answer(400, "Invalid HTTP Request Method", 0, headers)
        write_key = _basic_auth_user(headers.get("authorization"))
        if not write_key:
            return self._answer(401, NO_WRITE_KEY, 0, headers)
        if write_key in self.disabled_write_keys:
            return self._answer(404, SOURCE_DISABLED, 0, headers)
        if write_key not in self.write_keys:
            return self._answer(401, INVALID_WRITE_KEY, 0, headers)
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                return self._answer(400, BODY_READ_FAILED, 0, headers)
        if len(body) > self.max_request_bytes:
            return self._answer(413, TOO_LARGE, 0, headers)
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._answer(400, INVALID_JSON, 0, headers)
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
            return self._answer(400, NOT_RUDDER_EVENT, 0, headers)
        if not batch:
            return self._answer(400, EMPTY_BATCH, 0, headers)
        for event in batch:
            if not _identifiable(event):
                return self._answer(400, NON_IDENTIFIABLE, len(batch), headers)
        with self._lock:
            self.accepted.extend(batch)
            delay = self._delays.pop(0) if self._delays else 0
        if delay:
            time.sleep(delay)
        return self._answer(200, OK, len(batch), headers)

    def _answer(self, status, message, events, headers):
        with self._lock:
            self.requests.append(
                {"status": status, "events": events, "gzip": headers.get("content-encoding", "").lower() == "gzip"}
            )
        return status, message if status == 200 else message + "\n"


def _basic_auth_user(value):
    if not value or not value.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(value.split(None, 1)[1].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


def _identifiable(event):
    # The gateway stringifies the ids and trims them; blank counts as missing.
    for key in ("userId", "anonymousId"):
        value = event.get(key)
        if value is not None and str(value).strip():
            return True
    return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        gateway = self.server.gateway
        if self.path.split("?", 1)[0] != "/v1/batch":
            status, text = 404, "404 page not found\n"
        else:
            try:
                status, text = gateway.handle(self.command, dict(self.headers.items()), body)
            except DropConnection:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = _serve
    do_GET = _serve
    do_PUT = _serve


class RudderStackSink(RudderStackGateway):
    """The gateway above behind a real local HTTP server: `start()`, `.url`, `stop()`."""

    def __init__(self, **kwargs):
        super(RudderStackSink, self).__init__(**kwargs)
        self._server = None

    def start(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.gateway = self
        threading.Thread(target=self._server.serve_forever, name="rudderstack-sink", daemon=True).start()
        return self

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
