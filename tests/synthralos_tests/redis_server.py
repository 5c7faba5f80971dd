"""A real ``redis-server`` for tests: loopback only, a free port, a temp dir,
no persistence (``--save ''``, ``--appendonly no``).

    from synthralos_tests.redis_server import get_redis_server, RedisServer

    server = get_redis_server()     # shared by the test process, started lazily
    server.flushall()               # start each test clean
    server.url                      # "redis://127.0.0.1:<port>/0"
    server.client()                 # redis.Redis(..., decode_responses=True)

    server.kill()                   # SIGKILL: the port refuses connections
    server.restart()                # same port (and URL) again, empty

``get_redis_server()`` returns one server per process, stopped at exit; if a
test killed it, the next call brings it back. A test that kills Redis should
``restart()`` it in ``tearDown`` or use a ``RedisServer()`` of its own
(``with RedisServer() as server:``). Plain classes and functions, so the same
code works under pytest and nose.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from synthralos_tests.http_server import free_port

__all__ = ["RedisServer", "RedisServerError", "get_redis_server", "find_redis_server_binary"]

# Where Debian's redis-server package puts the binary; PATH is searched first.
_DEFAULT_BINARY = "/usr/bin/redis-server"
_BINARY_ENV = "SYNTHRALOS_REDIS_SERVER"

_MISSING_MESSAGE = (
    "redis-server was not found (looked at $%s, on PATH and at %s). The tests need a "
    "real Redis server: run the test command of CONTRIBUTING.md, `bash scripts/run-tests.sh`, "
    "which installs it (Debian package redis-server), or install it yourself."
)


class RedisServerError(RuntimeError):
    """redis-server is missing or did not start."""


def find_redis_server_binary():
    """Path of the redis-server binary, or raise ``RedisServerError`` saying how to get it."""
    candidates = [os.environ.get(_BINARY_ENV), shutil.which("redis-server"), _DEFAULT_BINARY]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise RedisServerError(_MISSING_MESSAGE % (_BINARY_ENV, _DEFAULT_BINARY))



def _port_accepts(port, timeout=0.2):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return False
    sock.close()
    return True


class RedisServer(object):
    """One redis-server process. ``start()`` / ``stop()``, or use it as a context manager."""

    host = "127.0.0.1"

    def __init__(self, binary=None, startup_timeout=60.0, extra_args=None):
        self._binary = binary
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.port = None
        self.process = None
        self._dir = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ info

    @property
    def url(self):
        if self.port is None:
            raise RedisServerError("the redis server has not been started")
        return "redis://%s:%d/0" % (self.host, self.port)

    @property
    def log_path(self):
        return os.path.join(self._dir, "redis.log") if self._dir else None

    def is_running(self):
        return self.process is not None and self.process.poll() is None

    def read_log(self):
        """The server's log so far ("" if none), for failure messages."""
        path = self.log_path
        if not path or not os.path.exists(path):
            return ""
        with open(path, "r", errors="replace") as handle:
            return handle.read()

    # ----------------------------------------------------------- lifecycle

    def start(self):
        """Start on a free port (the previous port when restarting). Idempotent."""
        with self._lock:
            if self.is_running():
                return self
            binary = self._binary or find_redis_server_binary()
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="synthralos-redis-")
            attempts = 1 if self.port is not None else 5
            last_error = None
            for _ in range(attempts):
                port = self.port if self.port is not None else free_port()
                try:
                    self._spawn(binary, port)
                    self.port = port
                    return self
                except RedisServerError as exc:
                    last_error = exc
            raise last_error

    def _spawn(self, binary, port):
        args = [
            binary,
            "--port", str(port),
            "--bind", self.host,
            "--dir", self._dir,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", os.path.join(self._dir, "redis.log"),
        ] + self.extra_args
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _port_accepts(port) and self._pings(port, process.pid):
                self.process = process
                return
            time.sleep(0.02)
        if process.poll() is None:
            process.kill()
            process.wait()
        raise RedisServerError(
            "redis-server did not start on port %d (exit code %s). Log:\n%s"
            % (port, process.returncode, self.read_log()[-2000:])
        )

    def _pings(self, port, pid=None):
        # Raw RESP, so starting the server does not need redis-py. With `pid`, the
        # answer must come from that process: when restarting on the old port, another
        # test process's server may have taken the port meanwhile (ours then fails to bind).
        try:
            sock = socket.create_connection((self.host, port), timeout=0.5)
        except OSError:
            return False
        try:
            if pid is None:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
            sock.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return ("process_id:%d\r\n" % pid).encode() in data
        except OSError:
            return False
        finally:
            sock.close()

    def kill(self):
        """SIGKILL the server (no shutdown, no save). The port stops answering."""
        with self._lock:
            process = self.process
            if process is None:
                return
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
            self.process = None

    def restart(self):
        """Kill if running, then start again on the same port: same URL, empty data."""
        with self._lock:
            self.kill()
            return self.start()

    def stop(self):
        """Stop the server and remove its temp dir."""
        with self._lock:
            process = self.process
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self.process = None
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # -------------------------------------------------------------- clients

    def client(self, **kwargs):
        """A new redis-py client for this server.

        Defaults (each overridable): ``decode_responses=True``, 5 s socket
        timeouts, and no retries, so a killed server fails a call at once
        (redis-py >= 6 otherwise retries with backoff for seconds).
        """
        import redis  # late: only tests that talk to Redis need redis-py

        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 5)
        kwargs.setdefault("socket_connect_timeout", 5)
        if "retry" not in kwargs:
            try:
                from redis.backoff import NoBackoff
                from redis.retry import Retry
            except ImportError:  # redis-py 3.x: no retries by default anyway
                pass
            else:
                kwargs["retry"] = Retry(NoBackoff(), 0)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def flushall(self):
        """Delete every key (starting the server again first if it was killed)."""
        self.start()
        client = self.client()
        try:
            client.flushall()
        finally:
            client.connection_pool.disconnect()


_shared = None
_shared_lock = threading.Lock()


def get_redis_server():
    """The test process's shared ``RedisServer``: started on first use, restarted
    if a test left it dead, stopped at interpreter exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RedisServer()
            atexit.register(_stop_shared)
        _shared.start()
        return _shared


def _stop_shared():
    server = _shared
    if server is not None:
        server.stop()
