#!/usr/bin/env bash
# Deployment checks (issue 7); a step of .ci/run, and runnable alone after it:
#
#   bash .ci/infra-checks.sh
#
# (1) the tool venvs (.venv-infra: SAM CLI, cfn-lint, cargo-lambda, zig; .venv-checkov),
# (2) cfn-lint, (3) sam validate --lint, (4) checkov with no failed checks, on both
#     templates (infra/template.yaml; infra/health-alarms.yaml for a stack outside us-east-1),
#     and each role against the calls its function makes, the self-monitoring alarms
#     (infra/check_template.py), and the SLO alerting rendered from the sample spec
#     (scripts/slo-check.sh),
# (5) `sam build` of the template: cargo lambda build --release --arm64 --bin <function>
#     in each function's directory, as SAM runs it (release profile without LTO, with
#     parallel codegen units and at opt-level 0 unless KBHA_CI_SHIPPED_PROFILE=1), checked to give arm64 binaries (after
#     checking that the functions share one dependency feature set, so the three builds
#     share their dependencies); then the sandbox tests with the policy host built as the
#     release profile builds it (opt-level 3, no debug assertions or overflow checks),
# (6) smoke: each function's debug binary behind `cargo lambda watch --only-lambda-apis`,
#     invoked with `cargo lambda invoke` on a sample event against the local AWS emulator, results read
#     back through the AWS APIs (Route 53 weights, S3 records, SNS deliveries via SQS),
# (7) `cargo lambda deploy --endpoint-url` of the release binary to the emulator (a new
#     function, then a code update with --merge-env), checked with GetFunction.
# Prints each check's duration at the end. Needs the emulator venv (tests/emulator/setup.sh)
# and the built-in policy (`cargo xtask policies`), which .ci/run makes first.
#
#   bash .ci/infra-checks.sh --prepare      # (1) and the sam build of (5), no checks
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
mode=all
case "${1:-}" in
    "") ;;
    # `--prepare`: the venvs, then the sam build below, and stop. .ci/run starts this under
    # `nice` in the background once the policies are built, so this CPU-bound build uses the
    # cores the emulator-bound test runs leave idle; the full run afterwards finds it built
    # (cargo's fingerprints).
    --prepare) mode=prepare ;;
    *) echo "usage: bash .ci/infra-checks.sh [--prepare]" >&2; exit 2 ;;
esac
timed "tool venvs (infra/requirements*.txt)" tools
export PATH="$repo/.venv-infra/bin:$PATH"
# SAM and the AWS SDKs want a region and credentials even offline; nothing here calls AWS.
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export SAM_CLI_TELEMETRY=0

linters() {
    timed "cfn-lint infra/template.yaml" cfn-lint infra/template.yaml
    timed "sam validate --lint" sam validate --lint -t infra/template.yaml
    timed "cfn-lint infra/health-alarms.yaml" cfn-lint infra/health-alarms.yaml
    timed "checkov (no failed checks)" .venv-checkov/bin/checkov -f infra/template.yaml -f infra/health-alarms.yaml --skip-download --quiet --compact
    timed "roles against the calls each function makes (infra/check_template.py)" .venv-infra/bin/python infra/check_template.py
    timed "SLO alerting: kbha slo render of the sample, golden file, cfn-lint, checkov (scripts/slo-check.sh)" bash scripts/slo-check.sh
}
[[ $mode == prepare ]] || linters

# Every workspace crate under functions/ with a binary that runs on the Lambda runtime.
mapfile -t packages < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    bins = [t for t in p["targets"] if "bin" in t["kind"]]
    lambda_rt = any(d["name"] == "lambda_runtime" for d in p["dependencies"])
    if "/functions/" in p["manifest_path"] and bins and lambda_rt:
        print(p["name"])')
echo "function packages: ${packages[*]}"
sam_build() {
    local p dir
    # SAM's Rust builder is a beta feature; it runs cargo lambda in each CodeUri, with the
    # workspace's target directory, and copies each bootstrap into the build directory.
    # CI builds the release profile without LTO and with parallel codegen units: they change
    # build time and size, not behaviour, and thin LTO of three binaries
    # with one codegen unit was the longest step of a CI run. The shipped sizes come from a
    # plain `cargo lambda build --release --arm64` (docs/performance.md), and
    # KBHA_CI_SHIPPED_PROFILE=1 builds exactly that profile here.
    # It also builds without optimisation (opt-level 0): this step checks that the template
    # builds, for arm64, through SAM and cargo lambda, and what it builds is only deployed to
    # the emulator; optimising three arm64 binaries took 17 minutes of a 100-minute run.
    local -a profile=(CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=0)
    [[ "${KBHA_CI_SHIPPED_PROFILE:-0}" == 1 ]] && profile=()
    env "${profile[@]}" sam build --beta-features -t infra/template.yaml --build-dir target/sam-build
    for dir in target/sam-build/*Function; do
        # ELF e_machine 0xB7 = aarch64.
        [[ "$(od -An -tx1 -j18 -N2 "$dir/bootstrap" | tr -d ' \n')" == "b700" ]] ||
            { echo "$dir/bootstrap is not an arm64 binary"; return 1; }
        ls -l "$dir/bootstrap"
    done
    for p in "${packages[@]}"; do
        [[ -f "target/lambda/$p/bootstrap" ]] || { echo "sam build did not build $p (target/lambda/$p/bootstrap)"; return 1; }
    done
}
# SAM builds one function at a time; a dependency with different features per function
# would compile the AWS SDK and wasmtime once per function (crates/workspace-hack).
[[ $mode == prepare ]] || timed "one dependency feature set across the functions (scripts/check-function-features.py)" \
    python3 scripts/check-function-features.py "${packages[@]}"
timed "sam build (cargo lambda build --release --arm64 per function, as SAM runs it)" sam_build
if [[ $mode == prepare ]]; then
    step "prepared in $(( $(date +%s) - start )) s"
    printf '%s\n' "${timings[@]}"
    exit 0
fi
# The sandbox's containment (fuel, memory, traps, oversized output) with the policy host
# built as the release profile builds it: opt-level 3, no debug assertions, no overflow
# checks (the release panic strategy is unwind, as in dev, and kbha-policy-lifecycle refuses
# abort). Its dependencies (wasmtime, Cranelift, tokio) keep the dev build the tests made:
# a release build of them for x86_64 only for this check cost CI about 12 CPU-minutes, and
# what is checked here is the host's containment code, not wasmtime's (whose debug
# assertions in dev are extra checks, not missing ones). `--workspace --test components`
# rather than `-p kbha-policy-host`: the workspace's feature set, so only the policy host
# and the test recompile (alone, its features would rebuild wasmtime, Cranelift and tokio).
timed "sandbox tests with the policy host as release builds it (kbha-policy-host components::hostile)" \
    cargo test --config 'profile.dev.package.kbha-policy-host.opt-level = 3' \
    --config 'profile.dev.package.kbha-policy-host.debug-assertions = false' \
    --config 'profile.dev.package.kbha-policy-host.overflow-checks = false' \
    --workspace --test components -- hostile

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
    local role code=(target/lambda/kbha-failover/bootstrap.zip target/lambda/kbha-failover/bootstrap)
    role="$(.venv/bin/python infra/smoke.py role)"
    cargo lambda deploy kbha-failover --endpoint-url "$AWS_ENDPOINT_URL" --region us-east-1 \
        --iam-role "$role" --env-file "$work/kbha-failover.env"
    # GetFunction's CodeSize and CodeSha256 are those of the zip cargo lambda uploaded, and
    # the zip holds the binary sam build made.
    .venv/bin/python infra/smoke.py check-deployed kbha-failover "$work/kbha-failover.env" "${code[@]}"
    # The README's code update of a deployed function: its KBHA_* variables must survive.
    # With --alias live, as docs/deploy.md says for a stack function: the triggers invoke the
    # alias, so the update publishes a version and moves the alias to it.
    cargo lambda deploy kbha-failover --endpoint-url "$AWS_ENDPOINT_URL" --region us-east-1 --merge-env --alias live
    .venv/bin/python infra/smoke.py check-deployed kbha-failover "$work/kbha-failover.env" "${code[@]}"
    .venv/bin/python infra/smoke.py check-alias kbha-failover live
}
timed "cargo lambda deploy --endpoint-url kbha-failover (create, then update with --merge-env --alias live) + GetFunction, GetAlias" deploy

step "done in $(( $(date +%s) - start )) s"
printf '%s\n' "${timings[@]}"
