#!/usr/bin/env bash
# Makes sure the wasm32 guests can be built. With rustup's wasm32-unknown-unknown target
# nothing is needed; otherwise installs Debian's Rust with its std sources (build-std)
# and lld. Needs root (apt-get) only when something is missing.
set -euo pipefail
if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    exit 0
fi
missing=()
for pkg in rustc-web cargo-web rust-web-src lld-22; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]} (Debian's Rust for the wasm32 guests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
