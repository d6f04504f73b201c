#!/usr/bin/env python3
"""Fails when two Lambda functions would compile a shared dependency with different features.

    python3 scripts/check-function-features.py kbha-failover kbha-alert-router ...

`sam build` builds each function alone (cargo lambda in its CodeUri), and cargo resolves
features per package: a shared crate with a different feature set is compiled again, with
everything that depends on it (the AWS SDK, wasmtime). crates/workspace-hack gives every
function the union; this check keeps it so. Reads `cargo tree` for the Lambda target only.
"""
import subprocess
import sys
from collections import defaultdict

TARGET = "aarch64-unknown-linux-gnu"


def features(package):
    out = subprocess.run(
        ["cargo", "tree", "-p", package, "-e", "normal,build", "--prefix", "none",
         "--target", TARGET, "-f", "{p}|{f}"],
        check=True, capture_output=True, text=True).stdout
    seen = defaultdict(set)
    for line in out.splitlines():
        crate, _, feats = line.removesuffix(" (*)").partition("|")
        if "(/" in crate:  # a workspace crate: its own build is per function anyway
            continue
        seen[crate.strip()].add(feats.strip())
    return seen


def main(packages):
    if len(packages) < 2:
        sys.exit("usage: check-function-features.py <function package> <function package>...")
    trees = {p: features(p) for p in packages}
    problems = []
    shared = set.intersection(*(set(t) for t in trees.values()))
    for crate in sorted(shared):
        sets = {p: sorted(trees[p][crate]) for p in packages}
        if len({tuple(s) for s in sets.values()}) > 1:
            detail = "; ".join(f"{p}: {' / '.join(s) or '(none)'}" for p, s in sets.items())
            problems.append(f"  {crate}: {detail}")
    if problems:
        print("these crates would be compiled once per function feature set (and every crate "
              "above them with them):\n" + "\n".join(problems) +
              "\nadd the missing features to crates/workspace-hack/Cargo.toml", file=sys.stderr)
        sys.exit(1)
    print(f"{len(shared)} shared dependencies, one feature set each, across {', '.join(packages)}")


if __name__ == "__main__":
    main(sys.argv[1:])
