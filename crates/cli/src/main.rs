//! `kbha`: the command line for kbha policies and deployments.
//!
//! Installed (`cargo install --path crates/cli`) it works from any directory; in the
//! repository, the cargo alias runs it from the workspace root:
//!
//! ```text
//! kbha policy new my-policy --world failover   # a policy crate, SDK and WIT vendored in it
//! kbha policy build                            # the crate here -> target/policies/<name>.{wasm,cwasm}
//! kbha policy check target/policies/my-policy.wasm
//! kbha policy eval target/policies/my-policy.wasm --input case.json
//! kbha replay failover --event samples/events/cloudwatch-alarm-sns.json   # KBHA_* + AWS_ENDPOINT_URL
//! kbha replay replication --event samples/events/s3-object-created.json
//! kbha replay alerting --event samples/events/kbha-notice-sns.json
//! kbha ops status                              # a live deployment: KBHA_* or --config, --endpoint-url
//! kbha ops pause --reason "db migration"       # also resume, shift, drain, undrain, approve-failback
//! kbha report --since 30d --html report.html
//! kbha slo render --spec samples/slo/knowledgebeast.toml --out target/slo/knowledgebeast.json
//! ```
//!
//! The repository's own tasks (drills against the emulator, the demo, the benchmarks, the
//! built-in guests) are `cargo xtask ...` (`xtask/`), not part of this binary.

fn main() -> std::process::ExitCode {
    kbha::cli::main_with(std::env::args_os())
}
