//! The `kbha` command line as a library: the binary (`src/main.rs`) is its argument
//! parsing, and the repository's developer tasks (`cargo xtask`: drills, demo, bench, the
//! built-in guests) reuse its renderers and its guest build ([`guest`]).
//!
//! Nothing here finds the repository the CLI was built in: an installed `kbha` works from
//! any directory (the guest SDK and WIT files a new policy needs are embedded, see
//! [`policy`]'s `new`).

pub mod cli;
pub mod guest;
pub mod ops;
pub mod policy;
pub mod replay;
pub mod report;
pub mod restore_test;
pub mod slo;
pub mod timeline;

/// Runs an async command on a runtime made for it (only these commands need one).
pub fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<std::process::ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(fut).map(|()| std::process::ExitCode::SUCCESS)
}
