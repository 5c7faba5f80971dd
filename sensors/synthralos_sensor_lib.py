"""Puts the pack's library (``actions/lib``) on ``sys.path`` for sensors.

st2's sensor container puts a sensor's own directory (``sensors/``) on
``sys.path`` when it loads the sensor, but shares ``lib/`` between actions and
sensors only when ``[packs] enable_common_libs`` is on, which it is not by
default. Every sensor module starts with ``import synthralos_sensor_lib``.
"""

import os
import sys

ACTIONS_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions", "lib")

if ACTIONS_LIB not in sys.path:
    sys.path.append(ACTIONS_LIB)
