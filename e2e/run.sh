#!/usr/bin/env bash
# The live-st2 tier: the pack installed in REAL st2 services (../shared/st2lab), checked
# through st2's API by e2e/test_live_st2.py. Exit 0 on success, non-zero on failure.
#
#   e2e/run.sh [pytest args...]
#
# 1. finds the lab scripts: $SYNTHRALOS_ST2LAB_SCRIPTS, else ../shared/st2lab beside the
#    checkout. Absent: a loud SKIP and exit 0 (a user's fresh clone), except with CI=true.
# 2. builds the lab venv (build-env.sh; cached under $ST2LAB, default ~/.cache/st2lab),
#    starts the services, registers st2's system packs, installs the pack as
#    `st2 pack install` does (e2e/lab.py up);
# 3. runs the tests with the lab venv's python (it has pytest, requests, redis);
# 4. ALWAYS stops every service it started (trap), also on failure or Ctrl-C. Services that
#    were already running (a lab someone else started) are reused and left running;
#    SYNTHRALOS_E2E_KEEP_LAB=1 leaves a lab this run started running (for bench/recovery_st2.py).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
cd "$REPO"
log() { echo "[e2e] $*"; }
started=$SECONDS

SCRIPTS="$(python3 -c 'import sys; sys.path.insert(0, "e2e"); import lab; print(lab.scripts_dir())' 2>/dev/null)"
if [ -z "$SCRIPTS" ] || [ ! -f "$SCRIPTS/services.sh" ] || [ ! -f "$SCRIPTS/build-env.sh" ]; then
  if [ "${CI:-}" = "true" ]; then
    log "ERROR: no st2lab scripts at ${SCRIPTS:-../shared/st2lab} (set SYNTHRALOS_ST2LAB_SCRIPTS); CI must run the live tier"
    exit 1
  fi
  echo "############################################################################"
  echo "### SKIP: live-st2 tier NOT RUN: no st2lab scripts at ${SCRIPTS:-../shared/st2lab}"
  echo "###       (set SYNTHRALOS_ST2LAB_SCRIPTS=/path/to/st2lab to run it)"
  echo "############################################################################"
  echo "=========================== 0 passed, 1 skipped (no st2lab) ==========================="
  exit 0
fi
export SYNTHRALOS_ST2LAB_SCRIPTS="$SCRIPTS"
export ST2LAB="${ST2LAB:-$HOME/.cache/st2lab}"
log "st2lab scripts: $SCRIPTS; state: $ST2LAB"

# build-env.sh first (cached by its marker): lab.py runs with the lab venv's python.
if [ ! -f "$ST2LAB/.env-ready" ] || [ ! -x "$ST2LAB/venv/bin/python" ]; then
  bash "$SCRIPTS/build-env.sh" || { log "ERROR: build-env.sh failed"; exit 1; }
fi
PY="$ST2LAB/venv/bin/python"
# which st2 and Orquesta: the vendored snapshots build-env.sh builds from (their names carry the commit)
log "$("$ST2LAB/venv/bin/st2" --version 2>&1 | head -1); orquesta $("$PY" -c 'import orquesta; print(orquesta.__version__)' 2>/dev/null); built from: $(grep -o 'vendor/[A-Za-z0-9._-]*\.tar\.gz' "$SCRIPTS/build-env.sh" | sort -u | tr '\n' ' ')"

we_started=0
stop_lab() {
  if [ "$we_started" = 1 ] && [ "${SYNTHRALOS_E2E_KEEP_LAB:-0}" = 1 ]; then
    log "SYNTHRALOS_E2E_KEEP_LAB=1: leaving the lab running (stop it: bash $SCRIPTS/services.sh stop)"
  elif [ "$we_started" = 1 ]; then
    log "stopping the lab services this run started"
    bash "$SCRIPTS/services.sh" stop || true
  fi
}
trap stop_lab EXIT
trap 'exit 130' INT TERM

if "$PY" -c 'import sys; sys.path.insert(0, "e2e"); import lab; sys.exit(0 if lab.Lab().running() else 1)'; then
  log "the lab is already running: reusing it (and leaving it running)"
else
  we_started=1
fi
"$PY" e2e/lab.py up || { log "ERROR: lab start / pack install failed (logs: $ST2LAB/logs)"; exit 1; }
log "lab up and pack installed after $((SECONDS - started)) s"

( cd e2e && "$PY" -m pytest -p no:cacheprovider -rfE "$@" test_live_st2.py )
rc=$?
log "tier finished in $((SECONDS - started)) s (exit $rc)"
exit $rc
