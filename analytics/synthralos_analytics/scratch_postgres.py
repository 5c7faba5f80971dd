"""A throwaway PostgreSQL server: Debian's binaries, a scratch data dir, a free port, loopback only.

    with ScratchPostgres() as pg:
        pg.dsn     # "host=127.0.0.1 port=... user=postgres dbname=postgres"

PostgreSQL refuses to run as root, so as root the data dir is handed to the
`postgres` user (created by Debian's package) and every server command runs
through `runuser -u postgres`. `stop()` shuts the server down (fast mode) and
removes the scratch dir; it is safe to call twice.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile


def postgres_bin_dir():
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "pg_ctl"))]
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return sorted(found, key=lambda d: int(d.split("/")[-2].split(".")[0]))[-1]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScratchPostgres(object):
    def __init__(self, bin_dir=None):
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.root = None
        self.port = None
        self.running = False

    @property
    def data_dir(self):
        return os.path.join(self.root, "data")

    @property
    def dsn(self):
        return "host=127.0.0.1 port=%d user=postgres dbname=postgres" % self.port

    def _run(self, *args):
        command = [os.path.join(self.bin_dir, args[0])] + list(args[1:])
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--"] + command
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if done.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (args[0], done.returncode, done.stdout.decode("utf-8", "replace")[-2000:]))
        return done.stdout.decode("utf-8", "replace")

    def start(self):
        self.root = tempfile.mkdtemp(prefix="synthralos-pg-")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", self.data_dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.port = free_port()
        options = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off " \
                  "-c full_page_writes=off -c timezone=UTC" % (self.port, self.root)
        self._run("pg_ctl", "-D", self.data_dir, "-o", options, "-l", os.path.join(self.root, "server.log"),
                  "-w", "-t", "60", "start")
        self.running = True
        return self

    def log(self):
        try:
            with open(os.path.join(self.root, "server.log")) as handle:
                return handle.read()[-4000:]
        except OSError:
            return ""

    def stop(self):
        try:
            if self.running:
                self._run("pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "-t", "60", "stop")
                self.running = False
        finally:
            if self.root and not self.running:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
