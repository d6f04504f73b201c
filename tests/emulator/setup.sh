#!/usr/bin/env bash
# Creates (or refreshes) the project's Python venv for the local AWS emulator at <repo>/.venv.
# Idempotent and quick when nothing changed: it records the hash of requirements.txt
# inside the venv and only runs pip when that hash differs.
#
#   bash tests/emulator/setup.sh          # then: cargo test
#   KBHA_VENV=/elsewhere bash tests/emulator/setup.sh   (point KBHA_PYTHON at its bin/python)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${KBHA_VENV:-$repo/.venv}"
req="$here/requirements.txt"
stamp="$venv/.kbha-requirements.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
# Fail here, not in the first test, if the emulator cannot import what it needs.
"$venv/bin/python" -c 'import moto.moto_server.werkzeug_app, moto.route53.responses, flask'
echo "$want" > "$stamp"
echo "kbha emulator venv ready: $venv/bin/python"
