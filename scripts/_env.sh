# Shared by scripts/demo and scripts/test: make sure this checkout has what it runs on.
# Idempotent and quiet when everything is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}

need_apt() {
    # Installs Debian packages when a binary is missing; root on this kind of machine.
    local missing=()
    for pair in "$@"; do
        local bin=${pair%%:*} pkg=${pair##*:}
        command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    echo "installing ${missing[*]} with apt-get" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

LOCK="$ROOT/constraints.txt"
# The browser-side packages, from the npm registry, exactly (the Dockerfile's
# HLS_JS_VERSION says the same); a new version is taken by changing it here.
HLS_JS_VERSION=1.7.4
AXE_CORE_VERSION=4.14.1

venv_stamp() {
    # What the installed .venv must have been made from: the package's bounds, the
    # lock, the interpreter and the extra.
    { cat "$ROOT/pyproject.toml" "$LOCK"; "$VENV/bin/python" -VV; echo "extra=$1"; } |
        sha256sum | cut -d' ' -f1
}

venv_current() {
    # True when .venv was installed from this pyproject.toml and lock for extra $1 and
    # every version in it is the lock's (scripts/venvcheck.py).
    local stamp="$VENV/.installed-${1:-base}"
    [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] &&
        [ "$(cat "$stamp")" = "$(venv_stamp "${1:-}")" ] &&
        "$VENV/bin/python" "$ROOT/scripts/venvcheck.py" "$LOCK"
}

install_locked() {
    # $1: the pip extra; every package at the lock's version, the package editable,
    # built with the lock's setuptools (no build isolation: nothing unpinned is fetched).
    local spec="$ROOT"
    [ -n "${1:-}" ] && spec="$ROOT[$1]"
    echo "installing livecommerce${1:+[$1]} into .venv from constraints.txt" >&2
    "$VENV/bin/python" -m pip install -q -c "$LOCK" pip setuptools >&2
    "$VENV/bin/python" -m pip install -q -c "$LOCK" --no-build-isolation -e "$spec" >&2
}

ensure_venv() {
    # $1: the pip extra to install ("" for none). Never reuses a .venv that differs from
    # the lock: re-installs on any change, and makes it anew if that is not enough
    # (a package the lock no longer lists stays behind an install).
    local extra=${1:-}
    venv_current "$extra" 2>/dev/null && return 0
    if [ -x "$VENV/bin/python" ]; then
        install_locked "$extra"
        if ! "$VENV/bin/python" "$ROOT/scripts/venvcheck.py" "$LOCK"; then
            echo "making .venv anew: it holds versions the lock does not" >&2
            rm -rf "$VENV"
        fi
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
        install_locked "$extra"
        "$VENV/bin/python" "$ROOT/scripts/venvcheck.py" "$LOCK"
    fi
    venv_stamp "$extra" >"$VENV/.installed-${extra:-base}"
}

ensure_axe() {
    # axe-core (the accessibility engine the page tests run in the browser), from the
    # npm registry into .cache/axe (not committed); only when it is missing.
    local dir="$ROOT/.cache/axe"
    [ -f "$dir/node_modules/axe-core/axe.min.js" ] &&
        grep -q "\"version\": \"$AXE_CORE_VERSION\"" "$dir/node_modules/axe-core/package.json" &&
        return 0
    need_apt npm:npm
    echo "installing axe-core into .cache/axe with npm" >&2
    mkdir -p "$dir"
    npm install --no-save --no-audit --no-fund --silent --prefix "$dir" "axe-core@$AXE_CORE_VERSION" >&2
}

ensure_hls() {
    # hls.js (HLS playback where the browser has Media Source Extensions: the viewer
    # page's fallback and the clips feed), from the npm registry into .cache/hls, its
    # dist/hls.min.js and licence copied to static/vendor/ (not committed), which the
    # server serves as /vendor/hls.min.js. Only when it is missing.
    local dir="$ROOT/.cache/hls" vendor="$ROOT/static/vendor"
    local pkg="$dir/node_modules/hls.js"
    if [ ! -f "$pkg/dist/hls.min.js" ] ||
        ! grep -q "\"version\": \"$HLS_JS_VERSION\"" "$pkg/package.json"; then
        need_apt npm:npm
        echo "installing hls.js into .cache/hls with npm" >&2
        mkdir -p "$dir"
        npm install --no-save --no-audit --no-fund --silent --prefix "$dir" "hls.js@$HLS_JS_VERSION" >&2
    fi
    if [ ! -f "$vendor/hls.min.js" ] || [ "$pkg/dist/hls.min.js" -nt "$vendor/hls.min.js" ]; then
        mkdir -p "$vendor"
        cp "$pkg/dist/hls.min.js" "$vendor/hls.min.js"
        cp "$pkg/LICENSE" "$vendor/hls.js.LICENSE"
    fi
}
