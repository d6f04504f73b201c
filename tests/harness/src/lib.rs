//! Test support for kbha: a local AWS emulator per test, and fixtures seeded through
//! the real AWS APIs.
//!
//! [`Emulator::start`] runs `tests/emulator/kbha_emulator.py` (moto's server plus
//! kbha's strict Route 53 layer) on a free loopback port; each test owns its own
//! process, so tests run in parallel and never see each other's state. Set up the
//! Python side once with `bash tests/emulator/setup.sh`.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let emu = kbha_test_harness::Emulator::start()?;
//! let conf = emu.sdk_config().await;
//! let fx = emu.create_weighted_fixture(&Default::default()).await?;
//! emu.set_health(&fx.targets[0].health_check_id, false).await?;
//! # Ok(()) }
//! ```
//!
//! The [`Emulator`]'s methods are grouped by concern, one module each: the process
//! (`emulator`), SDK configuration and clients (`clients`), the control API
//! (`control`), injected faults (`fault`), Route 53 fixtures (`route53`), SNS and SQS
//! (`messaging`), CloudWatch alarms (`cloudwatch`) and S3 (`s3`).

mod clients;
mod cloudwatch;
mod control;
mod emulator;
mod fault;
mod messaging;
mod route53;
mod s3;

pub use emulator::{Emulator, emulator_python, repo_root};
pub use fault::Fault;
pub use messaging::{SnsEnvelope, TopicQueue};
pub use route53::{FixtureTarget, TargetSpec, WeightedFixture, WeightedSpec};
