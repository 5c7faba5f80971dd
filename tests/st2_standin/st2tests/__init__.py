"""Stand-in for the pack-testing part of StackStorm's ``st2tests``.

Mirrors upstream's module names and API (``st2tests.base.BaseActionTestCase``,
``BaseSensorTestCase``, ``st2tests.mocks.*``); used only when the real
``st2tests`` is not importable (see ``tests/synthralos_tests/__init__.py``).
"""
