"""Stand-in for the helpers of ``st2common.runners.utils`` that pack code and
``st2tests`` use: ``PackConfigDict``, ``get_logger_for_python_runner_action``
and ``get_action_class_instance``.

Mirrors upstream's API and behaviour; used only when st2 is not importable.
"""

import logging
import sys

__all__ = [
    "PackConfigDict",
    "get_logger_for_python_runner_action",
    "get_action_class_instance",
]

# Where a stock st2 install keeps pack configs (cfg.CONF.system.base_path + "configs/").
CONFIGS_PATH = "/opt/stackstorm/configs/"

# Upstream's message starts and ends with a newline; so does this one.
CONFIG_MISSING_ITEM_ERROR = (
    '\nConfig for pack "%s" is missing key "%s".\n'
    "Make sure that the config file exists on disk (%s) and contains that key.\n\n"
    'Also make sure you run "st2ctl reload --register-configs" when you add a\n'
    "config and after every change you make to the config.\n"
)

# One logger per action name, so handlers are not added twice.
_LOGGERS = {}


class PackConfigDict(dict):
    """The dict an action sees as ``self.config``.

    Like upstream, a missing key raises ``ValueError`` naming the pack's config
    file (not ``KeyError``); ``get()`` and ``in`` behave like a plain dict.
    """

    def __init__(self, pack_name, *args):
        super(PackConfigDict, self).__init__(*args)
        self._pack_name = pack_name

    def __getitem__(self, key):
        try:
            return super(PackConfigDict, self).__getitem__(key)
        except KeyError:
            config_path = CONFIGS_PATH + self._pack_name + ".yaml"
            raise ValueError(CONFIG_MISSING_ITEM_ERROR % (self._pack_name, key, config_path))


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever ``sys.stderr`` is at emit time.

    Upstream binds the stream when the logger is first created; looking it up
    on each record keeps this working under test runners that swap stderr.
    """

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def get_logger_for_python_runner_action(action_name, log_level="debug"):
    """The logger ``Action.logger`` is: ``st2.actions.python.<ActionClassName>``
    (st2's ``getLogger`` puts every name under ``st2.``), writing records at
    ``log_level`` and above to stderr."""
    logger_name = "actions.python.%s" % (action_name)
    logger = _LOGGERS.get(logger_name)
    if logger is None:
        level = getattr(logging, str(log_level).upper(), logging.DEBUG)
        logger = logging.getLogger("st2." + logger_name)
        handler = _StderrHandler()
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter("%(name)-12s: %(levelname)-8s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
        _LOGGERS[logger_name] = logger
    return logger


def get_action_class_instance(action_cls, config=None, action_service=None):
    """Instantiate ``action_cls`` the way the Python runner does.

    ``action_service`` goes to the constructor; an old-style class whose
    constructor does not take it gets it assigned after construction.
    """
    kwargs = {"config": config, "action_service": action_service}
    try:
        return action_cls(**kwargs)
    except TypeError as exc:
        if "unexpected keyword argument 'action_service'" not in str(exc):
            raise
    kwargs.pop("action_service")
    instance = action_cls(**kwargs)
    instance.action_service = action_service
    return instance
