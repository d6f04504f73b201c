#!/usr/bin/env bash
# Tools the tests make real data with: redis-server writes the dump.rdb and AOF the
# restore tests restore (tests/integration/tests/restore.rs). Needs root (apt-get) only
# when it is missing.
set -euo pipefail
if ! command -v redis-server >/dev/null; then
    echo "installing redis-server (real Redis persistence files for the restore tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
redis-server --version
