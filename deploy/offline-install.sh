#!/usr/bin/env bash
# Offline installation of tieragent on a gateway without Internet access.
#
#   On a connected machine (same CPU architecture, OS family and Python minor version as
#   the gateway, e.g. Debian 12 x86-64 with Python 3.11):
#       deploy/offline-install.sh build [WHEELHOUSE] [SOURCE]
#     builds the project's wheel from SOURCE (default: this checkout) and fetches a wheel of
#     every dependency into WHEELHOUSE (default: ./wheelhouse). Copy that folder over.
#
#   On the gateway:
#       deploy/offline-install.sh install WHEELHOUSE [VENV]
#     creates VENV (default: /opt/tieragent/venv) and installs tieragent into it from
#     WHEELHOUSE only (pip --no-index: no index is ever contacted).
#
# PYTHON names the interpreter (default: python3). See docs/operations.md.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "$0")" && pwd)"

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

build() {
    local wheelhouse="${1:-wheelhouse}" source="${2:-$HERE/..}"
    [ -f "$source/pyproject.toml" ] || { echo "no pyproject.toml in $source" >&2; exit 2; }
    mkdir -p "$wheelhouse"
    # `pip wheel` builds the project and puts a wheel of every dependency next to it
    # (downloaded ones as they are, sdists built into wheels), so `install` needs no index.
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$wheelhouse" "$source"
    local count
    count=$(find "$wheelhouse" -maxdepth 1 -name '*.whl' | wc -l)
    echo "wheelhouse $wheelhouse: $count wheels ($("$PYTHON" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])'))"
}

install() {
    local wheelhouse="${1:-}" venv="${2:-/opt/tieragent/venv}"
    [ -n "$wheelhouse" ] || usage
    ls "$wheelhouse"/tieragent-*.whl >/dev/null 2>&1 \
        || { echo "$wheelhouse holds no tieragent wheel; run \`build\` first" >&2; exit 2; }
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --no-index --find-links "$wheelhouse" tieragent
    echo "installed: $("$venv/bin/tieragent" --version 2>/dev/null || echo "$venv/bin/tieragent")"
}

case "${1:-}" in
    build) shift; build "$@" ;;
    install) shift; install "$@" ;;
    *) usage ;;
esac
