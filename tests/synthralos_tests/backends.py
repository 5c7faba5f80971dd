"""One contract, both store backends: the Datastore and Redis TestCase classes of a contract.

A contract is a mixin holding the tests both backends must pass, built on
``StoreBackendMixin`` (or given a ``base`` that is), which sets up the backend in one place:
st2tests' mock action service for the datastore, a flushed real redis-server
(``redis_server.get_redis_server``) for Redis. ``on_both_backends`` defines its two
TestCase classes in the contract's module, where the call is::

    on_both_backends(StoreContract, "{backend}StoreTest",
                  datastore=StoreOnDatastore, redis=StoreOnRedis)

defines ``DatastoreStoreTest`` (``backend = "datastore"``) and ``RedisStoreTest``
(``backend = "redis"``), each ``(<backend mixin>, StoreContract, unittest.TestCase)``.

- ``name``: the class name, ``{backend}`` replaced by ``Datastore`` / ``Redis``.
- ``base``: the TestCase base (``unittest.TestCase``, ``SynthralosActionTestCase``,
  ``BaseSensorTestCase``...).
- ``datastore`` / ``redis``: an optional plain mixin (not a TestCase, no ``Test`` in its
  name, so neither pytest nor nose collects it alone) with that backend's own tests and
  overrides; it comes first in the class's MRO.
- ``decorators``: class decorators applied to both, innermost first (``skip_unless_orquesta``).
- ``attributes``: class attributes for both (``action_cls=...``).

The classes are ordinary module-level unittest classes (``__module__`` is the contract's
module), so pytest, nose (``st2-run-pack-tests``) and ``unittest`` collect them, and
``-k DatastoreStoreTest`` selects one. Returns ``(datastore_class, redis_class)``.
(This function's name has no "test" in it: nose would collect a module-level ``*_tests``
function as a test. pytest < 7, as on the floor session, orders a module's classes by their
source line, and these have none: they run first in their module there.)
"""

import sys
import unittest

from synthralos_tests.base import StoreBackendMixin

BACKENDS = (("Datastore", "datastore"), ("Redis", "redis"))


def on_both_backends(contract, name, base=unittest.TestCase, datastore=None, redis=None, decorators=(),
                     **attributes):
    if not (issubclass(contract, StoreBackendMixin) or issubclass(base, StoreBackendMixin)):
        raise TypeError("%s: the contract or its base builds on StoreBackendMixin" % contract.__name__)
    if "{backend}" not in name:
        raise ValueError("%r: the class name needs {backend}" % name)
    module = sys.modules[contract.__module__]
    extras = {"datastore": datastore, "redis": redis}
    for extra in (datastore, redis):
        if extra is not None and issubclass(extra, (unittest.TestCase, base)):
            raise TypeError("%s: a backend's own tests are a plain mixin, not a TestCase "
                            "(it would run on its own)" % extra.__name__)
    defined = []
    for label, backend in BACKENDS:
        class_name = name.format(backend=label)
        if class_name in vars(module):
            raise ValueError("%s.%s is already defined" % (module.__name__, class_name))
        bases = ((extras[backend],) if extras[backend] is not None else ()) + (contract, base)
        namespace = dict(attributes, backend=backend, __module__=module.__name__, __qualname__=class_name,
                         __doc__="%s on the %s backend." % (contract.__name__, backend))
        cls = type(class_name, bases, namespace)
        for decorate in decorators:
            cls = decorate(cls)
        setattr(module, class_name, cls)
        defined.append(cls)
    return tuple(defined)
