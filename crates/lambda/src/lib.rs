//! kbha-lambda: what the three Lambda functions share around their decisions.
//!
//! The runtime entry and timed init ([`lambda`]), settings read from the environment with
//! errors that name the variable ([`settings`]), the decision record every invocation logs
//! ([`record`], [`record_header!`]), the EMF metrics line ([`emf`]) and the S3 claim that
//! makes a redelivered event act once ([`claim`]). Policies themselves are
//! `kbha-policy-lifecycle`'s.

pub mod claim;
pub mod emf;
pub mod lambda;
pub mod record;
pub mod settings;

pub use settings::{Env, SettingError};
