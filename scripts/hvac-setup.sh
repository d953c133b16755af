#!/usr/bin/env bash
# Makes a Python virtualenv with hvac (the Python Vault client) for the Vault-compatibility tests
# and prints its interpreter's path. Reuses the virtualenv when hvac is already installed there.
#   ARCA_HVAC_VENV: where (default ~/.cache/arca/hvac-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ARCA_HVAC_VENV:-$HOME/.cache/arca/hvac-venv}"
if ! "$venv/bin/python" -c 'import hvac, requests' >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for `python3 -m venv`; another Python may have it built in.
    if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        ./scripts/ensure-apt-packages.sh python3-venv >&2
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'hvac==2.4.0' 'requests>=2.31' >&2
fi
echo "$venv/bin/python"
