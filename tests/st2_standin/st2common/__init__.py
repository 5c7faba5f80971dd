"""Stand-in for the parts of StackStorm's ``st2common`` that a pack imports.

Mirrors upstream's module names and API; used only when the real ``st2common``
is not importable (see ``tests/synthralos_tests/__init__.py``).
"""
