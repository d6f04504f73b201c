#!/usr/bin/env bash
# SLO alerting checks (issue 17): renders SLO specs with `kbha slo render` to target/slo/
# (as is, and with --create-topic) and checks each template with cfn-lint and checkov (no
# failed checks). For the shipped sample it also compares the render with the checked-in
# golden file, so a change to the renderer or the sample that is not re-rendered fails
# here too.
#
#   bash scripts/slo-check.sh                      # samples/slo/knowledgebeast.toml
#   bash scripts/slo-check.sh my-slos.toml ...     # other specs (no golden-file comparison)
#
# Exits non-zero on the first failure. Needs the tool venvs that .ci/infra-checks.sh makes:
# .venv-infra (cfn-lint, infra/requirements.txt) and .venv-checkov
# (infra/requirements-checkov.txt); CFN_LINT and CHECKOV override the tools' paths.
# Reference: docs/slo.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cfn_lint=${CFN_LINT:-.venv-infra/bin/cfn-lint}
checkov=${CHECKOV:-.venv-checkov/bin/checkov}
for tool in "$cfn_lint" "$checkov"; do
    if [[ ! -x "$tool" ]]; then
        echo "slo-check: $tool is missing: run .ci/infra-checks.sh once, or make the venv from infra/requirements*.txt" >&2
        exit 2
    fi
done

sample=samples/slo/knowledgebeast.toml
golden=samples/slo/knowledgebeast.rendered.json
specs=("$@")
if ((${#specs[@]} == 0)); then
    specs=("$sample")
fi

mkdir -p target/slo
# --bin, not -p: features then resolve over the workspace, as for the tests and `cargo
# kbha`, so this reuses their build; `-p kbha` resolved wasmtime without the features
# xtask adds and rebuilt it and everything above it (8 minutes of a CI run).
cargo build -q --bin kbha
check() { # check <template>
    echo "--> slo-check: cfn-lint $1"
    "$cfn_lint" -- "$1"
    echo "--> slo-check: checkov $1 (no failed checks)"
    "$checkov" -f "$1" --skip-download --quiet --compact
}
for spec in "${specs[@]}"; do
    out="target/slo/$(basename "$spec" .toml).json"
    echo "--> slo-check: render $spec -> $out"
    target/debug/kbha slo render --spec "$spec" --out "$out"
    if [[ "$spec" == "$sample" ]]; then
        echo "--> slo-check: $golden is up to date"
        if ! diff -u "$golden" "$out"; then
            echo "slo-check: $golden is out of date: cargo kbha slo render --spec $sample --out $golden, and review the diff" >&2
            exit 1
        fi
    fi
    check "$out"
    # The variant for a region without the kbha stack (its own alarms topic).
    out="target/slo/$(basename "$spec" .toml).create-topic.json"
    echo "--> slo-check: render $spec --create-topic -> $out"
    target/debug/kbha slo render --spec "$spec" --create-topic --out "$out"
    check "$out"
done
echo "slo-check: ok (${#specs[@]} spec(s))"
