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

ensure_venv() {
    # $1: the pip extra to install ("" for none). Reinstalls when pyproject.toml changes.
    local extra=${1:-}
    local spec="$ROOT"
    [ -n "$extra" ] && spec="$ROOT[$extra]"
    local stamp="$VENV/.installed-${extra:-base}"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo "installing livecommerce${extra:+[$extra]} into .venv" >&2
        "$VENV/bin/python" -m pip install -q -e "$spec" >&2
        touch "$stamp"
    fi
}

ensure_axe() {
    # axe-core (the accessibility engine the page tests run in the browser), from the
    # npm registry into .cache/axe (not committed); only when it is missing.
    local dir="$ROOT/.cache/axe"
    [ -f "$dir/node_modules/axe-core/axe.min.js" ] && return 0
    need_apt npm:npm
    echo "installing axe-core into .cache/axe with npm" >&2
    mkdir -p "$dir"
    npm install --no-save --no-audit --no-fund --silent --prefix "$dir" axe-core@4 >&2
}

ensure_hls() {
    # hls.js (HLS playback where the browser has Media Source Extensions: the viewer
    # page's fallback and the clips feed), from the npm registry into .cache/hls, its
    # dist/hls.min.js and licence copied to static/vendor/ (not committed), which the
    # server serves as /vendor/hls.min.js. Only when it is missing.
    local dir="$ROOT/.cache/hls" vendor="$ROOT/static/vendor"
    local pkg="$dir/node_modules/hls.js"
    if [ ! -f "$pkg/dist/hls.min.js" ]; then
        need_apt npm:npm
        echo "installing hls.js into .cache/hls with npm" >&2
        mkdir -p "$dir"
        npm install --no-save --no-audit --no-fund --silent --prefix "$dir" hls.js@1 >&2
    fi
    if [ ! -f "$vendor/hls.min.js" ] || [ "$pkg/dist/hls.min.js" -nt "$vendor/hls.min.js" ]; then
        mkdir -p "$vendor"
        cp "$pkg/dist/hls.min.js" "$vendor/hls.min.js"
        cp "$pkg/LICENSE" "$vendor/hls.js.LICENSE"
    fi
}
