"""Fixtures of the analytics tier: a scratch PostgreSQL, a real Redis, the warehouse sink, the scripted
sequence delivered through the pack's event path, and `dbt build` over the result (once per session)."""

import os
import shutil
import subprocess
import sys
import tempfile
import types

import pytest

ANALYTICS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(ANALYTICS)
DBT_PROJECT = os.path.join(ANALYTICS, "dbt")
SCHEMA = "synthralos"  # the RudderStack destination's namespace
MODELS_SCHEMA = "analytics"

for path in (ANALYTICS, os.path.join(REPO, "actions", "lib")):
    if path not in sys.path:
        sys.path.insert(0, path)

# The main suite's real-server helpers, without the package __init__ (it probes for StackStorm,
# which this venv does not have): a bare package object pointing at their directory.
if "synthralos_tests" not in sys.modules:
    _helpers = types.ModuleType("synthralos_tests")
    _helpers.__path__ = [os.path.join(REPO, "tests", "synthralos_tests")]
    sys.modules["synthralos_tests"] = _helpers

from synthralos_analytics.scenario import WEEK_1, Scenario, ScriptedClock, WRITE_KEY  # noqa: E402
from synthralos_analytics.scratch_postgres import ScratchPostgres  # noqa: E402
from synthralos_analytics.warehouse_sink import WarehouseLoader, WarehouseSink  # noqa: E402
from synthralos_tests.redis_server import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def postgres():
    server = ScratchPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url():
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def delivered(postgres, redis_url):
    """The scripted sequence, delivered into the warehouse through the pack's event path."""
    clock = ScriptedClock(WEEK_1)
    sink = WarehouseSink(WarehouseLoader(postgres.dsn, SCHEMA), WRITE_KEY, clock.now).start()
    try:
        scenario = Scenario(sink.url, redis_url, clock, sink).run()
    finally:
        sink.stop()
    return {"scenario": scenario, "sink": sink, "dsn": postgres.dsn}


def dbt_env(postgres, work_dir):
    env = dict(os.environ)
    env.update({
        "DBT_PROFILES_DIR": DBT_PROJECT,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "SYNTHRALOS_PG_HOST": "127.0.0.1",
        "SYNTHRALOS_PG_PORT": str(postgres.port),
        "SYNTHRALOS_PG_USER": "postgres",
        "SYNTHRALOS_PG_PASSWORD": "",
        "SYNTHRALOS_PG_DBNAME": "postgres",
        "SYNTHRALOS_PG_SCHEMA": MODELS_SCHEMA,
        "SYNTHRALOS_RUDDER_SCHEMA": SCHEMA,
        "DBT_TARGET_PATH": os.path.join(work_dir, "target"),
        "DBT_LOG_PATH": os.path.join(work_dir, "logs"),
    })
    return env


@pytest.fixture(scope="session")
def built(delivered, postgres):
    """`dbt build` (models and their tests) over the delivered events; returns the DSN to read the marts."""
    work_dir = tempfile.mkdtemp(prefix="synthralos-dbt-")
    try:
        dbt = os.path.join(os.path.dirname(sys.executable), "dbt")
        done = subprocess.run([dbt, "build", "--project-dir", DBT_PROJECT, "--no-use-colors"],
                              env=dbt_env(postgres, work_dir), cwd=work_dir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        output = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            pytest.fail("dbt build failed (%d):\n%s" % (done.returncode, output[-6000:]))
        yield {"dsn": postgres.dsn, "dbt_output": output, "scenario": delivered["scenario"]}
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def query(dsn, statement, params=None):
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()
