"""Stand-in for the parts of StackStorm's ``st2reactor`` that a pack imports.

Mirrors upstream's module names and API; used only when the real
``st2reactor`` is not importable (see ``tests/synthralos_tests/__init__.py``).
"""
