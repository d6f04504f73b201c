#!/usr/bin/env bash
# Tools the tests use: redis-server writes the dump.rdb and AOF the restore tests restore
# (tests/integration/tests/restore.rs); igzip (Debian's isal) is the bench's inflate
# baseline (xtask bench, run by xtask/tests/bench.rs). Needs root (apt-get) only when one
# is missing.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v igzip >/dev/null || missing+=(isal)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
redis-server --version
igzip --version | head -1
