#!/usr/bin/env bash
# The one test command. Installs what the suite needs (redis-server, one
# virtualenv per Python) and runs the WHOLE suite once per Python:
#
#   3.11  the real-StackStorm run: st2common, st2tests, st2reactor, st2actions,
#         st2client and the python / orquesta / noop runners of st2 (commit
#         below) plus Orquesta 1.6 from source, with st2's own requirements.
#   3.8   the compatibility run: the st2 stand-in (tests/st2_standin) and
#         PyPI's Orquesta 1.2.0 (tests/requirements-orquesta.txt).
#   other a stand-in run without Orquesta.
#
# Sources of the real run, first that works: ST2_SOURCE / ORQUESTA_SOURCE (a
# checkout directory or a tarball); ../shared/vendor/{st2,orquesta}-*.tar.gz
# beside the repository; a git clone of the pinned commits. If none works the
# 3.11 run falls back to the stand-in and says loudly that the real run did not
# happen (SYNTHRALOS_REQUIRE_REAL_ST2=1 makes that an error instead).
# Virtualenvs are cached under $SYNTHRALOS_VENV_ROOT (default .venv/) and
# rebuilt when the sources or the requirement files change; tarballs and
# clones are cached under $SYNTHRALOS_CACHE_DIR (default ~/.cache/synthralos).
#
#   bash scripts/run-tests.sh                 # both Pythons
#   SYNTHRALOS_TEST_PYTHONS=3.11 bash scripts/run-tests.sh -k store   # one, with pytest args
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHONS=${SYNTHRALOS_TEST_PYTHONS:-"3.8 3.11"}
VENV_ROOT=${SYNTHRALOS_VENV_ROOT:-"$ROOT/.venv"}
CACHE_DIR=${SYNTHRALOS_CACHE_DIR:-"${XDG_CACHE_HOME:-$HOME/.cache}/synthralos"}
VENDOR_DIR=${SYNTHRALOS_VENDOR_DIR:-"$ROOT/../shared/vendor"}
[ ! -d "$VENDOR_DIR" ] || VENDOR_DIR=$(cd "$VENDOR_DIR" && pwd)
REAL_ST2_PYTHON=3.11
COMPAT_PYTHON=3.8
ST2_COMMIT=c2eaf56b339bdb8184b5c2161714bce50eee4534
ORQUESTA_COMMIT=8c67ef31f8af8e1e03465b7f44a315a32d1e1e02
ST2_GIT_URL=${SYNTHRALOS_ST2_GIT_URL:-https://github.com/StackStorm/st2}
ORQUESTA_GIT_URL=${SYNTHRALOS_ORQUESTA_GIT_URL:-https://github.com/StackStorm/orquesta}
# st2 components installed into the real-st2 virtualenv (editable, no deps).
ST2_COMPONENTS="st2common st2tests st2reactor st2actions st2client
    contrib/runners/python_runner contrib/runners/orquesta_runner contrib/runners/noop_runner"
# Bump when the way the real-st2 virtualenv is built changes.
RECIPE=2

log() { printf '[run-tests] %s\n' "$*" >&2; }
loud() {
    printf '[run-tests] %s\n' "################################################################" \
        "$@" "################################################################" >&2
}
hash_of() { sha256sum | cut -c1-16; }

# Installs Debian packages; `apt-get update` runs at most once per run.
APT_UPDATED=""
apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -z "$APT_UPDATED" ]; then
        $sudo apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        return
    fi
    log "installing redis-server (Debian package)"
    apt_install redis-server
    # The package may start a system service; the tests start their own servers.
    command -v redis-server >/dev/null || { echo "redis-server still missing" >&2; exit 1; }
}

# promtool validates the Prometheus exposition in tests/test_ops_metrics.py
# (Debian's prometheus package ships it; the test skips without it).
ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return
    log "installing promtool (Debian package prometheus)"
    apt_install prometheus || log "prometheus package not installed: the promtool check will be skipped"
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
    return 1
}

# pip, quiet; on failure the tail of its log. Usage: quiet_pip LOGFILE PYTHON ARGS...
quiet_pip() {
    local logfile=$1 python=$2
    shift 2
    if ! "$python" -m pip install --disable-pip-version-check --no-input "$@" >>"$logfile" 2>&1; then
        log "pip install failed; last lines of $logfile:"
        tail -n 60 "$logfile" >&2
        return 1
    fi
}

# ---- sources of the real run ------------------------------------------------
# resolve_source NAME ENV_VALUE TARBALL_GLOB GIT_URL COMMIT
# Sets SRC_DIR (the tree), SRC_KEY (changes when the sources do), SRC_COMMIT
# and SRC_ORIGIN; returns 1 when no source works.
resolve_source() {
    local name=$1 env_value=$2 tarball_glob=$3 url=$4 commit=$5 tarball
    if [ -n "$env_value" ]; then
        if use_given_source "$name" "$env_value" "$commit"; then return 0; fi
        log "WARNING: ${name^^}_SOURCE=$env_value is not a usable checkout or tarball; trying the next source"
    fi
    for tarball in "$VENDOR_DIR"/$tarball_glob; do
        if [ -f "$tarball" ] && use_tarball "$name" "$tarball" "$commit"; then return 0; fi
    done
    if use_git_clone "$name" "$url" "$commit"; then return 0; fi
    return 1
}

use_given_source() {
    local name=$1 path=$2 commit=$3
    if [ -d "$path" ]; then
        path=$(cd "$path" && pwd)
        SRC_DIR=$path
        SRC_ORIGIN="checkout $path"
        if git -C "$path" rev-parse --verify -q HEAD >/dev/null 2>&1 \
            && [ "$(git -C "$path" rev-parse --show-toplevel)" = "$path" ]; then
            SRC_COMMIT=$(git -C "$path" rev-parse HEAD)
            SRC_KEY="git:$SRC_COMMIT:$( (git -C "$path" status --porcelain; git -C "$path" diff HEAD) | hash_of)"
        else
            SRC_COMMIT="unknown (not a git checkout)"
            SRC_KEY="dir:$(cd "$path" && find . -path ./.git -prune -o -type f -printf '%P %s %T@\n' | sort | hash_of)"
        fi
        return 0
    fi
    [ -f "$path" ] && use_tarball "$name" "$path" "$commit"
}

# Extracts a tarball once into $CACHE_DIR/src/<name>-<sha256 prefix>.
use_tarball() {
    local name=$1 tarball=$2 commit=$3 full sha dest tmp top base
    full=$(sha256sum "$tarball" | cut -d' ' -f1) || return 1
    sha=${full:0:16}
    dest="$CACHE_DIR/src/$name-$sha"
    if [ ! -f "$dest/.synthralos-source" ]; then
        mkdir -p "$CACHE_DIR/src" || return 1
        tmp=$(mktemp -d "$CACHE_DIR/src/.extract.XXXXXX") || return 1
        if ! tar -xzf "$tarball" -C "$tmp" 2>/dev/null; then
            rm -rf "$tmp"
            return 1
        fi
        # One top-level directory (st2/, orquesta/) is the tree; else the archive root is.
        top=$(find "$tmp" -mindepth 1 -maxdepth 1)
        if [ "$(printf '%s\n' "$top" | wc -l)" -ne 1 ] || [ ! -d "$top" ]; then top=$tmp; fi
        rm -rf "$dest"
        if [ "$top" = "$tmp" ]; then mv "$tmp" "$dest"; else mv "$top" "$dest"; rm -rf "$tmp"; fi
        # The archives hold no .git: the commit is the pinned one when the file name
        # carries its prefix (st2-c2eaf56b.tar.gz), else unknown.
        base=$(basename "$tarball")
        base=${base%.tar.gz}
        base=${base%.tgz}
        base=${base##*-}
        if [[ ${#base} -ge 7 && $base =~ ^[0-9a-f]+$ && $commit == "$base"* ]]; then
            printf 'commit=%s\nsha256=%s\ntarball=%s\n' "$commit" "$full" "$tarball"
        else
            printf 'commit=unknown\nsha256=%s\ntarball=%s\n' "$full" "$tarball"
        fi >"$dest/.synthralos-source"
    fi
    SRC_DIR=$dest
    SRC_COMMIT=$(sed -n 's/^commit=//p' "$dest/.synthralos-source")
    [ "$SRC_COMMIT" != unknown ] || SRC_COMMIT="unknown (tarball sha256 $sha...)"
    SRC_KEY="tarball:$sha"
    SRC_ORIGIN="tarball $tarball"
}

use_git_clone() {
    local name=$1 url=$2 commit=$3 dest tmp
    dest="$CACHE_DIR/src/$name-git-${commit:0:12}"
    if [ "$(git -C "$dest" rev-parse HEAD 2>/dev/null)" != "$commit" ]; then
        command -v git >/dev/null 2>&1 || return 1
        mkdir -p "$CACHE_DIR/src" || return 1
        tmp=$(mktemp -d "$CACHE_DIR/src/.clone.XXXXXX") || return 1
        log "cloning $url at ${commit:0:12}"
        # A shallow fetch of the one commit; a full clone where the server refuses that.
        if ! { git -C "$tmp" init -q && git -C "$tmp" fetch -q --depth 1 "$url" "$commit" \
            && git -C "$tmp" checkout -q FETCH_HEAD; } >/dev/null 2>&1; then
            rm -rf "$tmp" && mkdir -p "$tmp"
            if ! { git clone -q "$url" "$tmp" && git -C "$tmp" checkout -q "$commit"; } >/dev/null 2>&1; then
                log "git clone of $url failed"
                rm -rf "$tmp"
                return 1
            fi
        fi
        rm -rf "$dest"
        mv "$tmp" "$dest"
    fi
    SRC_DIR=$dest
    SRC_COMMIT=$commit
    SRC_KEY="git:$commit"
    SRC_ORIGIN="git clone of $url"
}

# ---- virtualenvs ---------------------------------------------------------------
# needs_build VENV WANTED: VENV is missing or was built from other inputs.
needs_build() {
    [ ! -x "$1/bin/python" ] || [ "$(cat "$1/.synthralos-requirements" 2>/dev/null)" != "$2" ]
}

# new_venv PYTHON VENV: a fresh virtualenv with an up-to-date pip (log: VENV.build.log).
new_venv() {
    rm -rf "$2" "$2.build.log"
    mkdir -p "$VENV_ROOT"
    "$1" -m venv "$2" && quiet_pip "$2.build.log" "$2/bin/python" --upgrade pip
}

# ensure_standin_venv VERSION: the pack's and the tests' requirements (and on
# 3.8 Orquesta 1.2.0); sets VENV.
ensure_standin_venv() {
    local version=$1 python venv wanted req
    python=$(find_python "$version") || return 1
    venv="$VENV_ROOT/py$version"
    local reqs=(requirements.txt requirements-tests.txt)
    if [ "$version" = "$COMPAT_PYTHON" ]; then
        reqs+=(tests/requirements-orquesta.txt)
    fi
    wanted=$(cat "${reqs[@]}" | hash_of)
    if needs_build "$venv" "$wanted"; then
        log "building $venv with $python (log: $venv.build.log)"
        new_venv "$python" "$venv" || return 1
        local args=()
        for req in "${reqs[@]}"; do args+=(-r "$req"); done
        quiet_pip "$venv.build.log" "$venv/bin/python" "${args[@]}" || return 1
        echo "$wanted" >"$venv/.synthralos-requirements"
    fi
    VENV=$venv
}

# ensure_real_st2_venv VERSION: resolves the sources (sets ST2_DIR, ORQ_DIR and
# their commits / origins) and sets VENV.
ensure_real_st2_venv() {
    local version=$1 python venv wanted st2_key orq_key ujson comp
    python=$(find_python "$version") || return 1
    if ! resolve_source st2 "${ST2_SOURCE:-}" 'st2-*.tar.gz' "$ST2_GIT_URL" "$ST2_COMMIT"; then
        log "no st2 source worked (ST2_SOURCE, $VENDOR_DIR, git clone)"
        return 1
    fi
    ST2_DIR=$SRC_DIR ST2_SRC_COMMIT=$SRC_COMMIT ST2_ORIGIN=$SRC_ORIGIN st2_key=$SRC_KEY
    if ! resolve_source orquesta "${ORQUESTA_SOURCE:-}" 'orquesta-*.tar.gz' "$ORQUESTA_GIT_URL" "$ORQUESTA_COMMIT"; then
        log "no orquesta source worked (ORQUESTA_SOURCE, $VENDOR_DIR, git clone)"
        return 1
    fi
    ORQ_DIR=$SRC_DIR ORQ_SRC_COMMIT=$SRC_COMMIT ORQ_ORIGIN=$SRC_ORIGIN orq_key=$SRC_KEY
    [ -f "$ST2_DIR/requirements.txt" ] || { log "$ST2_DIR has no requirements.txt"; return 1; }
    venv="$VENV_ROOT/py$version-st2"
    wanted=$( {
        echo "recipe $RECIPE $("$python" --version 2>&1) $python"
        echo "$st2_key $ST2_DIR $orq_key $ORQ_DIR"
        cat requirements.txt requirements-tests.txt "$ST2_DIR/requirements.txt"
        cat "$ST2_DIR/test-requirements.txt" 2>/dev/null || true
    } | hash_of)
    if needs_build "$venv" "$wanted"; then
        log "building $venv with $python from $ST2_DIR and $ORQ_DIR (log: $venv.build.log)"
        new_venv "$python" "$venv" || return 1
        # st2 names orquesta and optional auth/RBAC backends by git URL: drop those lines,
        # install orquesta from its source in the same resolve.
        grep -v '@ git+' "$ST2_DIR/requirements.txt" >"$venv/st2-requirements.txt"
        ujson=$(grep -E '^ujson([=<>!~ ]|$)' "$ST2_DIR/test-requirements.txt" 2>/dev/null | head -n1 || true)
        quiet_pip "$venv.build.log" "$venv/bin/python" -r "$venv/st2-requirements.txt" "$ORQ_DIR" \
            "${ujson:-ujson}" virtualenv -r requirements.txt -r requirements-tests.txt || return 1
        local dirs=()
        for comp in $ST2_COMPONENTS; do dirs+=(-e "$ST2_DIR/$comp"); done
        quiet_pip "$venv.build.log" "$venv/bin/python" --no-deps --no-build-isolation "${dirs[@]}" || return 1
        echo "$wanted" >"$venv/.synthralos-requirements"
    fi
    VENV=$venv
}

# ---- runs --------------------------------------------------------------------
SUMMARY=()
status=0

# run_suite LABEL VENV BUILD_SECONDS: the whole suite under pytest; exit code 5
# (no tests collected) is a failure too.
run_suite() {
    local label=$1 venv=$2 started rc line out
    out=$(mktemp)
    started=$(date +%s)
    set +e
    "$venv/bin/python" -m pytest -p no:cacheprovider -q -rs -o faulthandler_timeout=120 tests "${PYTEST_ARGS[@]}" 2>&1 \
        | tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    line=$(grep -E ' in [0-9.]+s( \(|$)' "$out" | tail -n1 | sed -E 's/^=+ //; s/ =+$//')
    rm -f "$out"
    case $rc in
        0) result=passed ;;
        5) result="FAILED (pytest collected no tests)" status=1 ;;
        *) result="FAILED (pytest exit code $rc)" status=1 ;;
    esac
    SUMMARY+=("$label: $result -- ${line:-no pytest summary line} -- venv ready in ${3}s, suite ran in $(($(date +%s) - started))s")
    log "${SUMMARY[-1]}"
}

PYTEST_ARGS=("$@")
ensure_redis_server
ensure_promtool

for version in $PYTHONS; do
    built=$(date +%s)
    if [ "$version" = "$REAL_ST2_PYTHON" ]; then
        if ensure_real_st2_venv "$version"; then
            versions=$("$VENV/bin/python" -c 'import st2common, orquesta; print(st2common.__version__, orquesta.__version__)')
            log "Python $version: REAL StackStorm: st2 commit $ST2_SRC_COMMIT (st2common ${versions% *}, $ST2_ORIGIN);" \
                "orquesta commit $ORQ_SRC_COMMIT (orquesta ${versions#* }, $ORQ_ORIGIN)"
            label="Python $version real st2 ${ST2_SRC_COMMIT:0:8} + orquesta ${versions#* }"
            export SYNTHRALOS_EXPECT_REAL_ST2=1 SYNTHRALOS_ST2_COMMIT=$ST2_SRC_COMMIT \
                SYNTHRALOS_ORQUESTA_COMMIT=$ORQ_SRC_COMMIT SYNTHRALOS_ST2_SOURCE_DIR=$ST2_DIR \
                SYNTHRALOS_ORQUESTA_SOURCE_DIR=$ORQ_DIR
        else
            if [ "${SYNTHRALOS_REQUIRE_REAL_ST2:-0}" = 1 ]; then
                loud "THE REAL-STACKSTORM RUN COULD NOT BE BUILT (see above) and SYNTHRALOS_REQUIRE_REAL_ST2=1"
                SUMMARY+=("Python $version: FAILED (the real-st2 virtualenv could not be built)")
                status=1
                continue
            fi
            loud "THE REAL-STACKSTORM RUN DID NOT HAPPEN: no st2/orquesta source could be built" \
                "(ST2_SOURCE / ORQUESTA_SOURCE, $VENDOR_DIR, git clone). Python $version runs the STAND-IN."
            ensure_standin_venv "$version" || { SUMMARY+=("Python $version: FAILED (no virtualenv)"); status=1; continue; }
            label="Python $version STAND-IN (the real-st2 run did not happen)"
            export SYNTHRALOS_EXPECT_REAL_ST2=0
        fi
    else
        ensure_standin_venv "$version" || { SUMMARY+=("Python $version: FAILED (no virtualenv)"); status=1; continue; }
        if [ "$version" = "$COMPAT_PYTHON" ]; then
            label="Python $version compatibility run (st2 stand-in + orquesta 1.2.0)"
        else
            label="Python $version stand-in run"
        fi
        export SYNTHRALOS_EXPECT_REAL_ST2=0
        unset SYNTHRALOS_ST2_COMMIT SYNTHRALOS_ORQUESTA_COMMIT SYNTHRALOS_ST2_SOURCE_DIR SYNTHRALOS_ORQUESTA_SOURCE_DIR
    fi
    log "$label: $("$VENV/bin/python" --version 2>&1) in $VENV (ready in $(($(date +%s) - built))s)"
    run_suite "$label" "$VENV" "$(($(date +%s) - built))"
done

log "summary:"
for line in "${SUMMARY[@]}"; do log "  $line"; done
exit $status
