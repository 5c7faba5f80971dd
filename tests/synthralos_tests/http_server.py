"""A small threaded HTTP server for tests, to build stubs of real services on
(the agent platform API, LLM providers, a RudderStack sink).

    from synthralos_tests.http_server import StubHTTPServer, Reply, hang, drop, malformed_json

    server = StubHTTPServer().start()          # or: with StubHTTPServer() as server:
    server.url                                 # "http://127.0.0.1:<port>"

    # A handler gets a Request and returns (status, headers, body), (status, body),
    # a Reply, a bare status int, or a body (dict/list -> JSON, str, bytes).
    server.add_route("POST", r"/v1/batch", lambda req: (200, {}, {"ok": True}))

    @server.route("GET", r"/agents/(?P<agent_id>[^/]+)")
    def get_agent(req):
        return 200, {"id": req.params["agent_id"]}

    # Canned replies, first in first out, used before the route's handler:
    server.script("POST", r"/v1/batch", Reply(503), hang(2.0), drop(), malformed_json())

    server.requests("POST", r"/v1/batch")      # the log: Request objects, oldest first
    server.wait_for_requests(3, "POST", r"/v1/batch", timeout=5)
    server.stop()                              # fast (< 1 s), even with hung requests

Subclass and override ``setup_routes()`` to register a service's routes, and
``handle_unmatched(request)`` to change the default 404.

A ``Request`` holds ``method``, ``path`` (no query string), ``query`` (dict of
lists), ``headers`` (dict, lower-cased names), ``raw_body`` (bytes as
received), ``body`` (bytes, gunzipped when ``Content-Encoding: gzip``),
``decode_error`` (why gunzip failed, else None), ``json`` (parsed body or
None) and ``json_error``, ``timestamp`` (``time.time()`` at arrival),
``params`` (the route regex's named groups), and after the exchange
``status`` (None if no response was sent) and ``outcome`` (``"replied"``,
``"dropped"``, ``"truncated"``, ``"error"``). Helpers: ``header(name)``,
``basic_auth()``, ``bearer_token()``.

Faults a ``Reply`` can inject: ``delay`` seconds before answering (``hang``),
closing the connection without a response (``drop``, with a TCP reset if
``reset=True``), a body that is not valid JSON (``malformed_json``), and a
response cut off after ``cut_body_at`` bytes of its body.
"""

import base64
import collections
import copy
import gzip
import json
import os
import re
import select
import socket
import struct
import threading
import time
import traceback
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "StubHTTPServer",
    "Request",
    "Reply",
    "Route",
    "hang",
    "drop",
    "malformed_json",
    "json_reply",
    "free_port",
    "closed_port_url",
]


def free_port():
    """A loopback TCP port nothing listens on (once the probe socket is closed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def closed_port_url():
    """An http:// URL whose connections are refused."""
    return "http://127.0.0.1:%d" % free_port()


# --------------------------------------------------------------------- replies


class Reply(object):
    """A response, or a fault, for one request.

    ``body``: bytes (sent as is), str (UTF-8, ``text/plain``), anything else is
    JSON-encoded (``application/json``); None sends an empty body.
    ``headers``: dict or list of (name, value) pairs; Content-Length is set.
    ``delay``: seconds to wait before answering (the server's stop cuts it short).
    ``drop``: after ``delay``, close the connection without any response;
    ``reset=True`` makes that a TCP RST rather than a clean close.
    ``cut_body_at``: send the headers (full Content-Length) and only that many
    body bytes, then close.
    """

    def __init__(self, status=200, body=None, headers=None, delay=0.0, drop=False, reset=False,
                 cut_body_at=None):
        self.status = int(status)
        self.body = body
        self.headers = headers
        self.delay = float(delay or 0.0)
        self.drop = bool(drop)
        self.reset = bool(reset)
        self.cut_body_at = cut_body_at

    def encoded(self):
        """(header pairs, body bytes) as they go on the wire (no Content-Length yet)."""
        if isinstance(self.headers, dict):
            pairs = list(self.headers.items())
        else:
            pairs = list(self.headers or [])
        body = self.body
        default_type = None
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
            default_type = "text/plain; charset=utf-8"
        else:
            data = json.dumps(body).encode("utf-8")
            default_type = "application/json"
        names = set(name.lower() for name, _ in pairs)
        if default_type and "content-type" not in names:
            pairs.append(("Content-Type", default_type))
        pairs = [(name, value) for name, value in pairs if name.lower() != "content-length"]
        return pairs, data

    def __repr__(self):
        if self.drop:
            return "<Reply drop delay=%s reset=%s>" % (self.delay, self.reset)
        return "<Reply %d delay=%s>" % (self.status, self.delay)


def json_reply(obj, status=200, headers=None):
    """A JSON response."""
    return Reply(status=status, body=obj, headers=headers)


def hang(seconds, then=None):
    """Wait ``seconds`` before answering with ``then`` (a Reply or anything a
    handler may return; default 200 ``{}``). A client whose timeout is shorter
    sees a read timeout."""
    reply = copy.copy(_to_reply(then)) if then is not None else Reply(200, {})
    reply.delay = float(seconds)
    return reply


def drop(delay=0.0, reset=False):
    """Close the connection without sending a response (after ``delay`` seconds)."""
    return Reply(status=0, delay=delay, drop=True, reset=reset)


MALFORMED_JSON_BODY = b'{"id": "resp-malformed", "choices": [{"message": {"content": "cut off'


def malformed_json(status=200, body=MALFORMED_JSON_BODY, headers=None):
    """A response labelled ``application/json`` whose body does not parse."""
    pairs = [("Content-Type", "application/json")] + list((headers or {}).items())
    return Reply(status=status, body=body, headers=pairs)


def _to_reply(result):
    """Normalize what a handler or a script entry returned into a Reply."""
    if isinstance(result, Reply):
        return result
    if result is None:
        return Reply(200)
    if isinstance(result, bool):  # bool is an int; treat it as a JSON body
        return Reply(200, result)
    if isinstance(result, int):
        return Reply(result)
    if isinstance(result, tuple):
        if len(result) == 3:
            status, headers, body = result
            return Reply(status, body, headers)
        if len(result) == 2:
            status, body = result
            return Reply(status, body)
        raise TypeError("a handler tuple is (status, headers, body) or (status, body), got %r" % (result,))
    return Reply(200, result)


# -------------------------------------------------------------------- requests


class Request(object):
    """One request as the server received it (see the module docstring)."""

    def __init__(self, method, raw_path, headers, raw_body, client_address):
        self.method = method
        self.raw_path = raw_path
        parts = urlsplit(raw_path)
        self.path = parts.path
        self.query = parse_qs(parts.query, keep_blank_values=True)
        self.headers = headers
        self.raw_body = raw_body
        self.client_address = client_address
        self.timestamp = time.time()
        self.decode_error = None
        self.body = self._decode(raw_body)
        self.json, self.json_error = self._parse_json(self.body)
        self.route = None
        self.params = {}
        self.status = None
        self.outcome = None
        self.replied_at = None

    def _decode(self, raw):
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip") and raw:
            try:
                return gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as exc:
                self.decode_error = "gzip: %s" % (exc,)
                return raw
        if encoding == "deflate" and raw:
            try:
                return zlib.decompress(raw)
            except zlib.error as exc:
                self.decode_error = "deflate: %s" % (exc,)
                return raw
        return raw

    @staticmethod
    def _parse_json(body):
        if not body:
            return None, None
        try:
            return json.loads(body.decode("utf-8")), None
        except (ValueError, UnicodeDecodeError) as exc:
            return None, str(exc)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def basic_auth(self):
        """(user, password) from ``Authorization: Basic``, or None."""
        value = self.header("authorization", "")
        if not value.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        return (user, password) if sep else None

    def bearer_token(self):
        """The token from ``Authorization: Bearer``, or None."""
        value = self.header("authorization", "")
        if value.lower().startswith("bearer "):
            return value[7:].strip()
        return None

    def to_dict(self):
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "body": self.text,
            "timestamp": self.timestamp,
            "status": self.status,
            "outcome": self.outcome,
        }

    def __repr__(self):
        return "<Request %s %s status=%s outcome=%s>" % (self.method, self.raw_path, self.status, self.outcome)


# ---------------------------------------------------------------------- routes


class Route(object):
    """A method + path regex, an optional handler, and a FIFO of scripted replies."""

    def __init__(self, method, path_regex, handler=None):
        self.method = (method or "*").upper()
        self.path_regex = path_regex
        self.pattern = re.compile(path_regex)
        self.handler = handler
        self.script = collections.deque()

    def match(self, method, path):
        if self.method != "*" and self.method != method:
            return None
        return self.pattern.fullmatch(path)

    def __repr__(self):
        return "<Route %s %s>" % (self.method, self.path_regex)


# ---------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, stub):
        self.stub = stub
        ThreadingHTTPServer.__init__(self, address, _Handler)
        self._serving = threading.Event()

    def serve_forever(self, poll_interval=0.05):
        # socketserver's own loop waits in a selectors.PollSelector bound to
        # the blocking select.poll when selectors was imported before eventlet
        # patched the process (as under st2tests): it then blocks the only OS
        # thread and every green thread with it. select.select looked up at
        # call time is green under eventlet and the real one otherwise.
        self._serving.set()
        try:
            while self._serving.is_set():
                readable, _, _ = select.select([self], [], [], poll_interval)
                if readable and self._serving.is_set():
                    self._handle_request_noblock()
                self.service_actions()
        finally:
            self._serving.clear()

    def shutdown(self):
        self._serving.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services
    server_version = "synthralos-stub/1"

    def setup(self):
        BaseHTTPRequestHandler.setup(self)
        self.server.stub._track(self.connection, add=True)

    def finish(self):
        try:
            BaseHTTPRequestHandler.finish(self)
        except OSError:
            pass
        self.server.stub._track(self.connection, add=False)

    def log_message(self, format, *args):  # noqa: A002  (stdlib signature)
        pass

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    break
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self):
        stub = self.server.stub
        try:
            raw_body = self._read_body()
        except ValueError:  # a malformed chunked body or Content-Length
            self.close_connection = True
            self.send_error(400, "malformed request body")
            return
        headers = dict((name.lower(), value) for name, value in self.headers.items())
        request = Request(self.command, self.path, headers, raw_body, self.client_address)
        stub._log(request)
        reply = stub._reply_for(request)

        if reply.delay > 0 and stub._stopping.wait(reply.delay):
            self._abort(request, reset=False)  # the server is stopping: give up
            return
        if reply.drop:
            self._abort(request, reset=reply.reset)
            return
        self._send(request, reply)

    def _abort(self, request, reset, outcome="dropped"):
        request.outcome = outcome
        self.close_connection = True
        try:
            if reset:
                # Close the descriptor itself, now: a socket with open makefile()
                # handles (and eventlet's wrapper around it) defers the real
                # close, and whatever closes it later may send a FIN first.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw = getattr(self.connection, "fd", self.connection)  # eventlet's GreenSocket wraps it
                os.close(raw.detach())
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, request, reply):
        pairs, data = reply.encoded()
        # Recorded before the bytes go out, so a client that has its response
        # always finds them set.
        request.status = reply.status
        request.outcome = "replied" if reply.cut_body_at is None else "truncated"
        request.replied_at = time.time()
        try:
            self.send_response(reply.status)
            for name, value in pairs:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if reply.cut_body_at is not None:
                self.wfile.write(data[: int(reply.cut_body_at)])
                self.wfile.flush()
                self._abort(request, reset=False, outcome="truncated")
                return
            if self.command != "HEAD":
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away meanwhile
            request.outcome = "error"
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class StubHTTPServer(object):
    """A threaded HTTP server on 127.0.0.1 with routes, scripts and a request log."""

    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self._requested_port = port
        self.port = None
        self._lock = threading.RLock()
        self._routes = []
        self._requests = []
        self._requests_changed = threading.Condition(self._lock)
        self._connections = set()
        self._stopping = threading.Event()
        self._httpd = None
        self._thread = None
        self.errors = []  # tracebacks of handlers that raised
        self.setup_routes()

    # -------------------------------------------------------- for subclasses

    def setup_routes(self):
        """Register the routes of the service being stubbed (subclasses override)."""

    def handle_unmatched(self, request):
        """The reply for a request no route matches (default: 404 JSON)."""
        return Reply(404, {"error": "no stub route for %s %s" % (request.method, request.path)})

    # ------------------------------------------------------------- lifecycle

    @property
    def url(self):
        if self.port is None:
            raise RuntimeError("the stub server has not been started")
        return "http://%s:%d" % (self.host, self.port)

    def start(self):
        """Bind and serve in a daemon thread. Returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server((self.host, self._requested_port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="stub-http-%d" % self.port,
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        """Stop serving, wake hung replies and close every open connection."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        if self._thread is not None:  # the accept loop ends within one poll; then the socket can close
            self._thread.join(1.0)
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _track(self, connection, add):
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    # ---------------------------------------------------------------- routes

    def _find_route(self, method, path_regex):
        method = (method or "*").upper()
        for route in self._routes:
            if route.method == method and route.path_regex == path_regex:
                return route
        return None

    def add_route(self, method, path_regex, handler):
        """Route ``method`` (or ``"*"``) + ``path_regex`` (full match on the path)
        to ``handler(request)``. Registering the same method and regex again
        replaces the handler and keeps the script."""
        with self._lock:
            route = self._find_route(method, path_regex)
            if route is None:
                route = Route(method, path_regex, handler)
                self._routes.append(route)
            else:
                route.handler = handler
            return route

    def route(self, method, path_regex):
        """Decorator form of ``add_route``."""
        def decorator(handler):
            self.add_route(method, path_regex, handler)
            return handler
        return decorator

    def script(self, method, path_regex, *replies):
        """Queue canned replies for ``method`` + ``path_regex``: each request takes
        the next one; when none are left the route's handler answers. An entry
        is a Reply, anything a handler may return, or a callable(request)."""
        with self._lock:
            route = self._find_route(method, path_regex)
            if route is None:
                route = Route(method, path_regex)
                self._routes.append(route)
            route.script.extend(replies)
            return route

    def pending_script(self, method, path_regex):
        """How many scripted replies are still queued for that route."""
        with self._lock:
            route = self._find_route(method, path_regex)
            return len(route.script) if route else 0

    def clear_scripts(self):
        with self._lock:
            for route in self._routes:
                route.script.clear()

    def reset(self):
        """Forget scripts, the request log and handler errors (routes stay)."""
        with self._lock:
            self.clear_scripts()
            del self._requests[:]
            del self.errors[:]

    def _reply_for(self, request):
        """Pick a route: one that matches with script left first, else the first
        matching route with a handler; call it and normalize the result."""
        with self._lock:
            matches = []
            for route in self._routes:
                found = route.match(request.method, request.path)
                if found is not None:
                    matches.append((route, found))
            scripted = [(r, m) for r, m in matches if r.script]
            handled = [(r, m) for r, m in matches if r.handler is not None]
            chosen = (scripted or handled or [(None, None)])[0]
            route, found = chosen
            entry = route.script.popleft() if (route is not None and route.script) else None
        request.route = route
        request.params = found.groupdict() if found is not None else {}
        try:
            if route is None:
                return _to_reply(self.handle_unmatched(request))
            if entry is not None:
                return _to_reply(entry(request) if callable(entry) else entry)
            return _to_reply(route.handler(request))
        except Exception:
            with self._lock:
                self.errors.append(traceback.format_exc())
            return Reply(500, {"error": "stub handler raised; see server.errors"})

    # ----------------------------------------------------------- request log

    def _log(self, request):
        with self._requests_changed:
            self._requests.append(request)
            self._requests_changed.notify_all()

    def _filter(self, method, path):
        method = method.upper() if method else None
        pattern = re.compile(path) if path else None
        return [
            req for req in self._requests
            if (method is None or req.method == method)
            and (pattern is None or pattern.fullmatch(req.path))
        ]

    def requests(self, method=None, path=None):
        """Logged requests, oldest first, optionally filtered by method and a
        path regex (full match)."""
        with self._lock:
            return self._filter(method, path)

    def last_request(self, method=None, path=None):
        """The newest matching request, or None."""
        found = self.requests(method, path)
        return found[-1] if found else None

    def clear_requests(self):
        with self._lock:
            del self._requests[:]

    def wait_for_requests(self, count, method=None, path=None, timeout=60.0):
        """Block until at least ``count`` matching requests were logged; return
        them. Raises AssertionError after ``timeout`` seconds (generous: it returns
        as soon as the requests are there, and the CI machine is busy)."""
        deadline = time.monotonic() + timeout
        with self._requests_changed:
            while True:
                found = self._filter(method, path)
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        "expected %d request(s) %s %s within %.1fs, got %d"
                        % (count, method or "*", path or ".*", timeout, len(found))
                    )
                self._requests_changed.wait(remaining)
