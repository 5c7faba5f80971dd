#!/usr/bin/env bash
# The one test command: brings what the suite needs, then runs the sessions of
# noxfile.py (floor, head, e2e, analytics; see there). Arguments go to nox:
#   bash scripts/run-tests.sh                        # every session
#   bash scripts/run-tests.sh -s head -- -k store    # one session, pytest args after --
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_DIR=${SYNTHRALOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/synthralos}

# Debian packages: redis-server (the tests start their own), promtool, node + npm (BullMQ tests).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v promtool >/dev/null || missing+=(prometheus)
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "[tests] installing ${missing[*]} (apt-get)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# nox in its own cached virtualenv, outside the checkout.
NOX_VENV=$CACHE_DIR/nox-2026.10.20
if [ ! -f "$NOX_VENV/.ready" ]; then
    rm -rf "$NOX_VENV"
    python3 -m venv "$NOX_VENV"
    "$NOX_VENV/bin/python" -m pip install -q --disable-pip-version-check nox==2026.10.20
    touch "$NOX_VENV/.ready"
fi
exec "$NOX_VENV/bin/nox" --noxfile noxfile.py "$@"
