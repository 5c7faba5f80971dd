#!/usr/bin/env bash
# The one test command: installs what the suite needs (redis-server, a
# virtualenv per Python with the pack's and the tests' requirements) and runs
# the whole suite on Python 3.8 (where Orquesta 1.2 imports, so the workflow
# tests run) and on Python 3.11. Exits non-zero if anything fails.
#
#   bash scripts/run-tests.sh                 # both Pythons
#   SYNTHRALOS_TEST_PYTHONS=3.11 bash scripts/run-tests.sh -k store   # one, with pytest args
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHONS=${SYNTHRALOS_TEST_PYTHONS:-"3.8 3.11"}
VENV_ROOT=${SYNTHRALOS_VENV_ROOT:-"$ROOT/.venv"}

log() { printf '[run-tests] %s\n' "$*" >&2; }

ensure_redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        return
    fi
    log "installing redis-server (Debian package)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # The package may start a system service; the tests start their own servers.
    command -v redis-server >/dev/null || { echo "redis-server still missing" >&2; exit 1; }
}

# promtool validates the Prometheus exposition in tests/test_ops_metrics.py
# (Debian's prometheus package ships it; the test skips without it).
ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return
    log "installing promtool (Debian package prometheus)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
        log "prometheus package not installed: the promtool check will be skipped"
}

find_python() {
    local version=$1 candidate
    for candidate in "$(command -v "python$version" || true)" \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python; do
        # A pyenv shim exists even when that version is not selected: check it runs.
        if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "" >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
    echo "Python $version not found (looked on PATH and in pyenv's versions)" >&2
    exit 1
}

ensure_venv() {
    local version=$1 python venv stamp wanted
    python=$(find_python "$version")
    venv="$VENV_ROOT/py$version"
    local reqs=(requirements.txt requirements-tests.txt)
    if [ "$version" = "3.8" ]; then
        reqs+=(tests/requirements-orquesta.txt)
    fi
    wanted=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
    stamp="$venv/.synthralos-requirements"
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        log "preparing $venv with $python"
        rm -rf "$venv"
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
        local args=()
        for req in "${reqs[@]}"; do args+=(-r "$req"); done
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${args[@]}"
        echo "$wanted" > "$stamp"
    fi
    echo "$venv"
}

ensure_redis_server
ensure_promtool

status=0
for version in $PYTHONS; do
    venv=$(ensure_venv "$version")
    log "Python $version: $("$venv/bin/python" --version 2>&1)"
    started=$(date +%s)
    if "$venv/bin/python" -m pytest -p no:cacheprovider -q -rs tests "$@"; then
        result=passed
    else
        result=FAILED
        status=1
    fi
    log "Python $version: $result in $(( $(date +%s) - started ))s"
done
exit $status
