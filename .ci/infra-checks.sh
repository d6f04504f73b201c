#!/usr/bin/env bash
# Deployment checks (issue 7); a step of .ci/run, and runnable alone after it:
#
#   bash .ci/infra-checks.sh
#
# (1) the tool venvs (.venv-infra: SAM CLI, cfn-lint, cargo-lambda, zig; .venv-checkov),
# (2) cfn-lint, (3) sam validate --lint, (4) checkov with no failed checks,
# (5) cargo lambda build --release --arm64 of every function crate with a Lambda binary,
# (6) smoke: each function's debug binary behind `cargo lambda watch --only-lambda-apis`,
#     invoked with `cargo lambda invoke` on a sample event against the local AWS emulator, results read
#     back through the AWS APIs (Route 53 weights, S3 records, SNS deliveries via SQS),
# (7) `cargo lambda deploy --endpoint-url` of the release binary to the emulator (a new
#     function, then a code update with --merge-env), checked with GetFunction.
# Prints each check's duration at the end. Needs the emulator venv (tests/emulator/setup.sh)
# and the built-in policy (`cargo kbha policy build`), which .ci/run makes first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
start=$(date +%s)
timings=()
step() { printf '\n--> [%4ss] infra: %s\n' "$(( $(date +%s) - start ))" "$*"; }
timed() { # timed <label> <command...>
    local label="$1" t0
    shift
    step "$label"
    t0=$(date +%s)
    "$@"
    timings+=("$(printf '%5ss  %s' "$(( $(date +%s) - t0 ))" "$label")")
}

# The same idempotent pattern as tests/emulator/setup.sh: pip runs only when the pins changed.
venv() { # venv <dir> <requirements> <import check>
    local dir="$1" req="$2" check="$3" want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ -x "$dir/bin/python" && -f "$dir/.kbha-requirements.sha256" && "$(cat "$dir/.kbha-requirements.sha256")" == "$want" ]]; then
        return 0
    fi
    [[ -x "$dir/bin/python" ]] || python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    "$dir/bin/python" -c "$check"
    echo "$want" > "$dir/.kbha-requirements.sha256"
}
tools() {
    venv .venv-infra infra/requirements.txt 'import samcli, cfnlint, ziglang'
    venv .venv-checkov infra/requirements-checkov.txt 'import checkov'
    # cargo-lambda cross-compiles with zig; the Rust side needs the target's std.
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
        rustup target add aarch64-unknown-linux-gnu
    fi
}
timed "tool venvs (infra/requirements*.txt)" tools
export PATH="$repo/.venv-infra/bin:$PATH"
# SAM and the AWS SDKs want a region and credentials even offline; nothing here calls AWS.
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export SAM_CLI_TELEMETRY=0

timed "cfn-lint infra/template.yaml" cfn-lint infra/template.yaml
timed "sam validate --lint" sam validate --lint -t infra/template.yaml
timed "checkov (no failed checks)" .venv-checkov/bin/checkov -f infra/template.yaml --skip-download --quiet --compact

# Every workspace crate under functions/ with a binary that runs on the Lambda runtime.
mapfile -t packages < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    bins = [t for t in p["targets"] if "bin" in t["kind"]]
    lambda_rt = any(d["name"] == "lambda_runtime" for d in p["dependencies"])
    if "/functions/" in p["manifest_path"] and bins and lambda_rt:
        print(p["name"])')
echo "function packages: ${packages[*]}"
release_build() {
    local args=() p
    for p in "${packages[@]}"; do args+=(-p "$p"); done
    cargo lambda build --release --arm64 "${args[@]}"
    for p in "${packages[@]}"; do
        # ELF e_machine 0xB7 = aarch64.
        [[ "$(od -An -tx1 -j18 -N2 "target/lambda/$p/bootstrap" | tr -d ' \n')" == "b700" ]] ||
            { echo "target/lambda/$p/bootstrap is not an arm64 binary"; return 1; }
        ls -l "target/lambda/$p/bootstrap"
    done
}
timed "cargo lambda build --release --arm64 (${packages[*]})" release_build

# ---------------------------------------------------------------- emulator for (6) and (7)
work="$repo/target/infra/smoke"
rm -rf "$work"
mkdir -p "$work"
emu_pid="" watch_pid=""
cleanup() {
    [[ -n "$watch_pid" ]] && kill -- "-$watch_pid" 2>/dev/null || true
    exec 3>&- 2>/dev/null || true # the emulator exits when its stdin closes
    [[ -n "$emu_pid" ]] && kill "$emu_pid" 2>/dev/null || true
}
trap cleanup EXIT
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
emulator() {
    mkfifo "$work/emu.in"
    .venv/bin/python tests/emulator/kbha_emulator.py --port 0 <"$work/emu.in" >"$work/emu.out" 2>"$work/emu.err" &
    emu_pid=$!
    exec 3>"$work/emu.in"
    local port=""
    for _ in $(seq 100); do
        port="$(sed -n 's/^KBHA_EMULATOR_READY //p' "$work/emu.out")"
        [[ -n "$port" ]] && break
        sleep 0.2
    done
    [[ -n "$port" ]] || { cat "$work/emu.err"; echo "emulator did not start"; return 1; }
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
    .venv/bin/python infra/smoke.py provision "$work"
}
timed "emulator + provisioning (zone, records, health checks, topics, buckets, a backup)" emulator

# The sample event each function is invoked with.
declare -A sample=(
    [kbha-failover]=samples/events/cloudwatch-alarm-sns.json
    [kbha-replication-verifier]=samples/events/s3-object-created.json
    [kbha-alert-router]=samples/events/cloudwatch-alarm-sns.json
)
# The Lambda binaries, built once for all three smokes. `cargo lambda watch -p <pkg>` would
# build each package with its own feature set, so the AWS SDK three more times.
timed "cargo build --bins (debug; the binaries the smokes run)" cargo build --bins
smoke() { # smoke <package>
    local pkg="$1" port fn_pid
    port="$(free_port)"
    # cargo lambda watch serves only the Runtime and Invoke APIs here; the function is the
    # debug binary built above, started with the variables watch itself would give it.
    # Own process group, so cleanup stops it.
    setsid cargo lambda watch --only-lambda-apis -A 127.0.0.1 -P "$port" >"$work/$pkg.watch.log" 2>&1 &
    watch_pid=$!
    for _ in $(seq 600); do
        (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$watch_pid" 2>/dev/null || { cat "$work/$pkg.watch.log"; return 1; }
        sleep 0.5
    done
    (
        set -a
        # shellcheck disable=SC1090
        source "$work/$pkg.env"
        AWS_LAMBDA_FUNCTION_NAME=_ AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512
        AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt"
        exec "target/debug/$pkg"
    ) >"$work/$pkg.function.log" 2>&1 &
    fn_pid=$!
    cargo lambda invoke -A 127.0.0.1 -P "$port" --data-file "${sample[$pkg]}" -o json >"$work/$pkg.invoke.json" ||
        { cat "$work/$pkg.watch.log" "$work/$pkg.function.log"; kill "$fn_pid"; return 1; }
    echo "invoke returned: $(tr -s ' \n' ' ' <"$work/$pkg.invoke.json" | head -c 300)"
    kill "$fn_pid" 2>/dev/null || true
    .venv/bin/python infra/smoke.py check "$pkg" "$work"
    kill -- "-$watch_pid" 2>/dev/null || true
    watch_pid=""
}
for pkg in "${packages[@]}"; do
    [[ -n "${sample[$pkg]:-}" ]] || { echo "no sample event for $pkg: add one to .ci/infra-checks.sh"; exit 1; }
    timed "smoke: cargo lambda watch + invoke $pkg (debug build) on ${sample[$pkg]}" smoke "$pkg"
done

deploy() {
    local role size
    role="$(.venv/bin/python infra/smoke.py role)"
    cargo lambda deploy kbha-failover --endpoint-url "$AWS_ENDPOINT_URL" --region us-east-1 \
        --iam-role "$role" --env-file "$work/kbha-failover.env"
    # The deployed zip holds the binary; it cannot be much smaller than a third of it.
    size=$(( $(stat -c %s target/lambda/kbha-failover/bootstrap) / 3 ))
    .venv/bin/python infra/smoke.py check-deployed kbha-failover "$work/kbha-failover.env" "$size"
    # The README's code update of a deployed function: its KBHA_* variables must survive.
    cargo lambda deploy kbha-failover --endpoint-url "$AWS_ENDPOINT_URL" --region us-east-1 --merge-env
    .venv/bin/python infra/smoke.py check-deployed kbha-failover "$work/kbha-failover.env" "$size"
}
timed "cargo lambda deploy --endpoint-url kbha-failover (create, then update with --merge-env) + GetFunction" deploy

step "done in $(( $(date +%s) - start )) s"
printf '%s\n' "${timings[@]}"
