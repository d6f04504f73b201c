//! `cargo xtask bench --quick` (the CI mode) runs and prints its one table with every
//! measured row, and the component and native policies agreed (it fails
//! otherwise), and the failover handler shifted traffic against the loopback AWS stub
//! making the same calls as the baseline (it fails otherwise). Needs
//! `target/policies/failover-default.wasm`.

use std::process::Command;

#[test]
fn quick_bench_prints_the_table() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--quick", "--work-dir"])
        .arg(std::env::temp_dir())
        .output()
        .expect("xtask runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "xtask bench failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("| measure | value | baseline (same run) | ratio | goal |"), "{stdout}");
    for row in [
        "| decision, component fresh instance (p50 / p99) | ",
        "| decision, component reused instance (p50 / p99) | ",
        "| peak RSS during decisions",
        "| verification throughput (",
        "| peak RSS during verification | ",
        "| binary size kbha-failover",
    ] {
        let line = stdout.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no row {row:?} in\n{stdout}"));
        // Measured rows carry a number, not a placeholder.
        assert!(line.chars().any(|c| c.is_ascii_digit()) || line.contains("skipped"), "{line}");
    }
    // Cold start: measured against the hello-world example that `cargo test` builds
    // next to this binary; a function binary that is not built is skipped, never faked.
    let cold: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| cold start")).collect();
    assert!(!cold.is_empty(), "no cold start rows in\n{stdout}");
    for line in cold {
        assert!(!line.contains("failed"), "{line}");
        assert!(line.contains(" ms (init: ") || line.contains("skipped"), "{line}");
    }
    // Own overhead: the real failover handler against the loopback AWS stub, next to the
    // same AWS calls made without the handler (the child fails if the calls differ).
    for row in ["| own overhead: event to Route 53 change request", "| whole failover invocation, same stub"] {
        let line = stdout.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no row {row:?} in\n{stdout}"));
        assert!(line.contains(" ms / ") && line.contains("no handler ") && line.contains("x / "), "{line}");
    }
    assert!(stdout.contains(" µs / "), "latencies in µs: {stdout}");
    assert!(stdout.contains(" MiB/s |"), "throughput measured: {stdout}");
}
