#!/usr/bin/env bash
# The analytics tier: warehouse models (dbt on a real PostgreSQL), fed by events the pack delivers,
# the HTML report in headless Chromium. Installs what it needs on a fresh machine, cleans up what
# it starts, prints pytest's summary, exits non-zero on failure.
#
#   analytics/run-tests.sh [pytest args...]
#
# Environment: SYNTHRALOS_ANALYTICS_PYTHON (interpreter for the venv, 3.9-3.12; default: the first
# python3.11 / python3.12 / python3.10 / python3 found), SYNTHRALOS_CACHE (default ~/.cache/synthralos).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
CACHE="${SYNTHRALOS_CACHE:-$HOME/.cache/synthralos}"

log() { printf '[analytics] %s\n' "$*" >&2; }

# -- system packages: PostgreSQL, Chromium, Redis, a font (Debian's) -------------------------
missing=()
compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
# The report's font (chromium only recommends one; apt runs without recommends here).
fc-list 2>/dev/null | grep -qi "DejaVu Sans" || missing+=(fonts-dejavu-core)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"; exit 2
  fi
  log "installing ${missing[*]} with apt"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- the venv: cached outside the repo, keyed by the requirements and the interpreter ---------
python="${SYNTHRALOS_ANALYTICS_PYTHON:-}"
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; then
      python="$(command -v "$candidate")"; break
    fi
  done
fi
[ -n "$python" ] || { log "no Python 3.9-3.12 found (dbt 1.9 needs one); set SYNTHRALOS_ANALYTICS_PYTHON"; exit 2; }
key="$( (cat "$HERE/requirements.txt" "$REPO/requirements.txt"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-12)"
venv="$CACHE/venvs/analytics-$key"
if [ ! -f "$venv/.complete" ]; then
  log "building $venv with $python"
  rm -rf "$venv"
  mkdir -p "$CACHE/venvs"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    [ "$(id -u)" -eq 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
    "$python" -m venv "$venv"
  fi
  pip_log="$(mktemp)"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" -r "$REPO/requirements.txt" >"$pip_log" 2>&1; then
    cat "$pip_log" >&2; rm -f "$pip_log"; log "pip install failed"; exit 2
  fi
  rm -f "$pip_log"
  touch "$venv/.complete"
fi

# -- run: every temporary file (PostgreSQL's data dir, dbt's target, Chromium's profile) in one
# scratch dir, removed on exit whatever happens; a server a killed run left behind is stopped.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/synthralos-analytics.XXXXXX")"
chmod 755 "$scratch"  # PostgreSQL runs as the postgres user and must reach its data dir below
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$scratch" 2>/dev/null; then
  rmdir "$scratch"  # a private TMPDIR the postgres user cannot enter: use /tmp
  scratch="$(mktemp -d /tmp/synthralos-analytics.XXXXXX)"
  chmod 755 "$scratch"
fi
cleanup() {
  for data in "$scratch"/synthralos-pg-*/data; do
    [ -f "$data/postmaster.pid" ] || continue
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
    else "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true; fi
  done
  rm -rf "$scratch"
}
trap cleanup EXIT
trap "exit 143" TERM
trap "exit 130" INT
cd "$HERE"
status=0
TMPDIR="$scratch" "$venv/bin/python" -m pytest -p no:cacheprovider -q -o "cache_dir=$scratch/.pytest" \
  --basetemp="$scratch/pytest" -c /dev/null --rootdir "$HERE" tests "$@" || status=$?
exit "$status"
