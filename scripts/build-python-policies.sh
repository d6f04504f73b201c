#!/usr/bin/env bash
# Builds the Python policies into components with componentize-py (PyPI):
#
#   bash scripts/build-python-policies.sh
#
# Every directory below holding an `app.py` (the policy: a `WitWorld` class with `decide`)
# and a `world` file (the kbha world it implements, e.g. `failover-policy`) becomes
# target/policies/<directory name>.wasm. componentize-py, pinned in
# samples/policies/business-hours-py/requirements.txt, lives in a venv under
# target/py-venv (created on first use; later runs reuse it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dirs=(samples/policies/business-hours-py crates/policy-host/tests/sandbox-probe-py)
requirements=samples/policies/business-hours-py/requirements.txt
target=${CARGO_TARGET_DIR:-target}
# Absolute, as the builds run from each policy's directory.
[[ "$target" = /* ]] || target=$PWD/$target
venv=$target/py-venv
out=$target/policies
mkdir -p "$out"
want=$(sed -n 's/^componentize-py==//p' "$requirements")
have=$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "$want" ]]; then
    echo "installing componentize-py $want into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
fi
build() {
    local dir=$1 name world start
    name=$(basename "$dir")
    world=$(tr -d '[:space:]' < "$dir/world")
    start=$(date +%s%N)
    (cd "$dir" && "$venv/bin/componentize-py" -d "$root/wit" -w "kbha:policy/$world@0.3.0" \
        componentize app -o "$out/$name.wasm" >/dev/null)
    # componentize-py leaves the bytecode it compiled beside the source (also git-ignored).
    rm -rf "$dir/__pycache__"
    printf '%s: %s (%s bytes, %s ms)\n' "$name" "$out/$name.wasm" "$(stat -c %s "$out/$name.wasm")" \
        "$(( ($(date +%s%N) - start) / 1000000 ))"
}
root=$PWD
# One componentize-py per core: each is single-threaded for most of its ~10 s.
pids=()
for dir in "${dirs[@]}"; do
    build "$dir" & pids+=($!)
done
for pid in "${pids[@]}"; do
    wait "$pid"
done
