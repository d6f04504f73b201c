#!/usr/bin/env bash
# Runs every cargo fuzz target in fuzz/ for a bounded time and fails on a crash.
#
#   bash scripts/fuzz.sh                 # each target FUZZ_SECONDS (default 25) seconds,
#                                        # FUZZ_JOBS (default: the cores) targets at a time
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh guardrails   # one target, longer
#
# cargo fuzz needs a nightly rustc (-Z flags). This project builds on stable, so the
# fuzz build uses Debian's rustc (rustc-web, installed by scripts/setup-toolchains.sh)
# with RUSTC_BOOTSTRAP=1. Debian ships no sanitizer runtimes, so the targets run with
# `--sanitizer none`: libFuzzer coverage guidance plus Rust's own checks (overflow,
# bounds, debug assertions); the code under test has no `unsafe` for ASan to watch.
# FUZZ_SANITIZER=address overrides that where a toolchain has the runtime.
#
# The build goes to target/fuzz. New corpus entries go to target/fuzz/corpus/<target>
# (emptied at the start of each run unless FUZZ_KEEP_CORPUS=1);
# the committed seeds in fuzz/corpus/<target> are read, never written, so the tree stays
# clean. A crash leaves its input in fuzz/artifacts/<target>/ (git-ignored): add it to
# fuzz/corpus/<target>/ with the fix, so `cargo test` replays it from then on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.1
seconds=${FUZZ_SECONDS:-25}
sanitizer=${FUZZ_SANITIZER:-none}
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(failover_event backup_event alert_message s3_key timestamp guardrails policy_decision)
fi

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install "cargo-fuzz@$CARGO_FUZZ_VERSION" --locked --quiet
fi

if [[ ! -x /usr/bin/rustc || ! -x /usr/bin/cargo ]] && ! rustc --version | grep -q nightly && ((EUID == 0)); then
    echo "installing rustc-web cargo-web (Debian's Rust, for the fuzz build)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web >/dev/null
fi
if [[ -x /usr/bin/rustc && -x /usr/bin/cargo ]]; then
    # Debian's toolchain, acting as nightly; rustup's proxies stay out of the way.
    export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1
    cargo=/usr/bin/cargo
elif rustc --version | grep -q nightly; then
    cargo=cargo
else
    echo "scripts/fuzz.sh: needs a nightly rustc or Debian's rustc-web/cargo-web (bash scripts/setup-toolchains.sh)" >&2
    exit 1
fi
export CARGO_INCREMENTAL=0
out=${FUZZ_TARGET_DIR:-target/fuzz}
fuzz=(--sanitizer "$sanitizer" --target-dir "$out")

start=$(date +%s)
echo "building ${#targets[@]} fuzz targets with $("$cargo" --version) (sanitizer: $sanitizer)"
if (($# == 0)); then
    "$cargo" fuzz build "${fuzz[@]}"
else
    for t in "${targets[@]}"; do "$cargo" fuzz build "${fuzz[@]}" "$t"; done
fi
built=$(date +%s)

# One fuzzer is one process on one core: FUZZ_JOBS (default: the number of cores) targets
# run at a time, each for its full FUZZ_SECONDS, and the table is printed in target order.
jobs=${FUZZ_JOBS:-$(nproc)}
fuzz_one() { # fuzz_one <target>: runs it, leaves "ok" or "crash" in <out>/<target>.result
    local t="$1" log="$out/$1.log" dict=()
    # A fresh working corpus each run: runs stay comparable and the corpus (hundreds of
    # MB after a long run) does not pile up. FUZZ_KEEP_CORPUS=1 continues the last one.
    [[ ${FUZZ_KEEP_CORPUS:-0} == 1 ]] || rm -rf "${out:?}/corpus/$t"
    mkdir -p "$out/corpus/$t"
    [[ $t == s3_key || $t == timestamp || $t == guardrails ]] || dict=(-dict=fuzz/json.dict)
    if "$cargo" fuzz run "${fuzz[@]}" "$t" "$out/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
        echo ok >"$out/$t.result"
    else
        echo crash >"$out/$t.result"
    fi
}
running=0
for t in "${targets[@]}"; do
    rm -f "$out/$t.result"
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait

failed=()
printf '\n%-16s %12s %8s %s\n' target executions exec/s result
for t in "${targets[@]}"; do
    log=$out/$t.log
    if [[ "$(cat "$out/$t.result" 2>/dev/null)" == ok ]]; then
        result=ok
    else
        result="CRASH (see $log and fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    printf '%-16s %12s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$result"
done
end=$(date +%s)
echo "fuzz: build $((built - start)) s, runs $((end - built)) s (${seconds} s per target, ${jobs} at a time)"
if ((${#failed[@]})); then
    for t in "${failed[@]}"; do
        echo "---- $t"
        grep -A 30 -m 1 -E "panicked|ERROR: libFuzzer|deadly signal|SUMMARY" "$out/$t.log" || tail -40 "$out/$t.log"
    done
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
