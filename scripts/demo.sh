#!/usr/bin/env bash
# The README's main command: sets up what a fresh machine lacks (Debian's Rust for the wasm
# guests, the emulator venv), builds the policies and runs the region-failure drill; the last
# line printed is the path of its HTML report.
#
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-toolchains.sh
bash tests/emulator/setup.sh
cargo xtask policies
cargo xtask drill samples/drills/region-failure.toml
