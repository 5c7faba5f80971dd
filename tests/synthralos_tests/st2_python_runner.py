"""Run a pack action the way st2's action runner does: through the python
runner's ``python_action_wrapper.py`` in a subprocess.

Follows ``contrib/runners/python_runner/python_runner/python_runner.py``
(``PythonRunner.run``): the same argv (``-u WRAPPER --pack --file-path --user
--parent-args`` then ``--parameters=JSON``, or ``--stdin-parameters`` with
``{"parameters": ...}`` on stdin once the JSON reaches ``MAX_PARAM_LENGTH``,
then ``--config=JSON`` when the pack has a config), the PYTHONPATH of
``get_sandbox_python_path_for_python_action`` (the pack's virtualenv, its
``actions/lib``, the parent's path), the ``ST2_ACTION_*`` environment, st2's
green ``run_command`` with its line readers, and ``PythonRunner._get_output_values`` to turn what the
wrapper printed into st2's ``(status, output)``.

The pack is laid out as st2 installs it: ``<base>/packs/synthralos`` (a symlink
to this checkout) and ``<base>/virtualenvs/synthralos``, with st2's config
pointed there for the duration (``StackStormLayout``). The child parses
``<base>/st2.conf``: ``tests/fixtures/st2/st2.conf`` plus ``[auth] api_url``
(``--config-file`` in ``--parent-args``, as the actionrunner passes its own
command line, and ``ST2_CONFIG_PATH``): no MongoDB or RabbitMQ is needed. An
action's datastore calls go, as in st2, to ``<api_url>/v1/keys``: give the
layout a ``St2ApiServer`` (``st2_api_server.py``) URL; by default it is a
closed local port, so they fail fast.
"""

import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from oslo_config import cfg
from python_runner import python_runner as _python_runner
from st2common.constants.action import MAX_PARAM_LENGTH
from st2common.constants.runners import PYTHON_RUNNER_DEFAULT_LOG_LEVEL
from st2common.constants.system import API_URL_ENV_VARIABLE_NAME, AUTH_TOKEN_ENV_VARIABLE_NAME
from st2common.content.utils import get_entry_point_abs_path
from st2common.runners.utils import make_read_and_store_stream_func
from st2common.util.green.shell import run_command
from st2common.util.sandboxing import get_sandbox_python_path_for_python_action

from synthralos_tests import PACK_ROOT, TESTS_DIR
from synthralos_tests.http_server import closed_port_url

__all__ = [
    "ST2_CONF",
    "PACK",
    "StackStormLayout",
]

PACK = "synthralos"
ST2_CONF = os.path.join(TESTS_DIR, "fixtures", "st2", "st2.conf")


class StackStormLayout(object):
    """st2's on-disk layout for this pack, and st2's config pointed at it (a context manager)."""

    # A generous cap: an action that succeeds returns at once, and the CI box may stall for tens of seconds.
    def __init__(self, api_url=None, user="stanley", timeout=300, auth_token="test-token"):
        self.api_url = api_url
        self.user = user
        self.timeout = timeout
        self.auth_token = auth_token
        self.base = None
        self.conf = None

    def __enter__(self):
        self.base = tempfile.mkdtemp(prefix="synthralos-st2-")
        os.makedirs(os.path.join(self.base, "packs"))
        os.symlink(PACK_ROOT, os.path.join(self.base, "packs", PACK))
        # The pack's virtualenv (st2 creates it at install); its site-packages come first.
        venv_lib = os.path.join(
            self.base, "virtualenvs", PACK, "lib", "python%d.%d" % sys.version_info[:2], "site-packages"
        )
        os.makedirs(venv_lib)
        cfg.CONF.set_override(name="base_path", override=self.base, group="system")
        cfg.CONF.set_override(name="packs_base_paths", override=os.path.join(self.base, "packs"), group="content")
        self.api_url = self.api_url or closed_port_url()
        self.conf = os.path.join(self.base, "st2.conf")
        with open(ST2_CONF) as source, open(self.conf, "w") as conf:
            conf.write(source.read() + "\n[auth]\napi_url = %s\n" % self.api_url)
        return self

    def __exit__(self, *exc_info):
        cfg.CONF.clear_override(name="base_path", group="system")
        cfg.CONF.clear_override(name="packs_base_paths", group="content")
        shutil.rmtree(self.base, ignore_errors=True)

    def argv(self, entry_point, parameters, config, log_level=PYTHON_RUNNER_DEFAULT_LOG_LEVEL):
        """The wrapper's command line (and stdin text or None), as PythonRunner.run builds them
        (``log_level``: the python runner's runner parameter, as the action's metadata sets it)."""
        serialized = json.dumps(parameters or {})
        args = [
            sys.executable,
            "-u",
            _python_runner.WRAPPER_SCRIPT_PATH,
            "--pack=%s" % PACK,
            "--file-path=%s" % get_entry_point_abs_path(pack=PACK, entry_point=entry_point),
            "--user=%s" % self.user,
            "--parent-args=%s" % json.dumps(["--config-file", self.conf]),
        ]
        stdin_value = None
        if len(serialized) >= MAX_PARAM_LENGTH:
            stdin_value = '{"parameters": %s}\n' % serialized
            args.append("--stdin-parameters")
        else:
            args.append("--parameters=%s" % serialized)
        if config:
            args.append("--config=%s" % json.dumps(config))
        if log_level != PYTHON_RUNNER_DEFAULT_LOG_LEVEL:  # as PythonRunner.run: only a non-default level
            args.append("--log-level=%s" % log_level)
        return args, stdin_value

    def env(self, execution_id):
        env = dict(os.environ)
        env["PYTHONPATH"] = get_sandbox_python_path_for_python_action(
            pack=PACK, inherit_from_parent=True, inherit_parent_virtualenv=True
        ).lstrip(":")
        env["ST2_CONFIG_PATH"] = self.conf
        # _get_common_action_env_variables() and _get_datastore_access_env_vars() of st2's runner.
        env.update(
            {
                "ST2_ACTION_PACK_NAME": PACK,
                "ST2_ACTION_EXECUTION_ID": execution_id,
                "ST2_ACTION_API_URL": self.api_url + "/v1",
                "ST2_ACTION_DEBUG": "False",
                "ST2_ACTION_AUTH_TOKEN": self.auth_token,
                API_URL_ENV_VARIABLE_NAME: self.api_url + "/v1",
                AUTH_TOKEN_ENV_VARIABLE_NAME: self.auth_token,
            }
        )
        return env

    def run(self, entry_point, parameters=None, config=None, execution_id="0123456789abcdef01234567",
            log_level=PYTHON_RUNNER_DEFAULT_LOG_LEVEL):
        """``(status, output)`` as st2 records them: status ``succeeded`` / ``failed`` /
        ``timeout``; output ``{"result", "exit_code", "stdout", "stderr"}``, plus the argv used."""
        args, stdin_value = self.argv(entry_point, parameters, config, log_level)
        streamed = []

        def store(execution_db, action_db, data, output_type):
            streamed.append((output_type, data))

        def reader(output_type):
            return make_read_and_store_stream_func(
                execution_db=None, action_db=None, store_data_func=functools.partial(store, output_type=output_type)
            )

        exit_code, stdout, stderr, timed_out = run_command(
            cmd=args,
            stdin=subprocess.PIPE if stdin_value else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            shell=False,
            env=self.env(execution_id),
            timeout=self.timeout,
            read_stdout_func=reader("stdout"),
            read_stderr_func=reader("stderr"),
            read_stdout_buffer=io.StringIO(),
            read_stderr_buffer=io.StringIO(),
            stdin_value=stdin_value,
            bufsize=cfg.CONF.actionrunner.stream_output_buffer_size,
        )
        runner = _python_runner.PythonRunner(runner_id="synthralos-tests", timeout=self.timeout)
        status, output, _ = runner._get_output_values(exit_code, stdout, stderr, timed_out)
        output["argv"] = args
        return status, output
