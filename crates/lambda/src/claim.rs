//! Who publishes a notice when two invocations handle the same event at once.
//!
//! SNS and Lambda deliver at least once, and two copies of one event can run at the
//! same moment. The record that says a notice is due (the failover state object's
//! outbox, the verifier's verification record) also carries a [`Claim`]: the token of
//! the invocation sending it and a lease. Only the holder publishes; the other copy
//! waits for the notice to be marked sent, or takes the claim over once the lease has
//! run out (its holder crashed) or was released (its holder failed to publish and
//! said so). The claim is written with the record's conditional write, so exactly one
//! invocation holds it at a time.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a claim made with [`Claim::new`] holds without its holder finishing: longer
/// than a publish with the SDK's retries and timeouts takes, short enough that the retry
/// of a crashed invocation (Lambda retries after a minute) finds it expired. Callers
/// with other needs (the alert router's configurable lease) use [`Claim::with_lease`].
pub const LEASE_MS: i64 = 30_000;

/// How long a copy that finds the notice claimed by another invocation waits for it to
/// be sent before failing retryably (so Lambda or SNS delivers the event again later).
pub const WAIT: Duration = Duration::from_secs(5);

/// Pause between two reads of the record while waiting.
pub const POLL: Duration = Duration::from_millis(100);

/// The invocation that sends a notice, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Token of the holding invocation ([`token`]).
    pub by: String,
    /// Wall-clock milliseconds after which another invocation may take it over; 0 once
    /// released.
    pub until_ms: i64,
}

/// What a claim means to one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This invocation holds it: publish.
    Mine,
    /// Another invocation holds it and its lease runs: wait.
    Other,
    /// Released or expired: take it over, then publish.
    Free,
}

impl Claim {
    /// A claim by `by`, leased for [`LEASE_MS`] from `now_ms`.
    pub fn new(by: &str, now_ms: i64) -> Self {
        Claim::with_lease(by, now_ms, LEASE_MS)
    }

    /// A claim by `by`, leased for `lease_ms` from `now_ms`.
    pub fn with_lease(by: &str, now_ms: i64, lease_ms: i64) -> Self {
        Claim { by: by.to_owned(), until_ms: now_ms.saturating_add(lease_ms) }
    }

    /// The same claim, released: anyone may take it now.
    pub fn release(&mut self) {
        self.until_ms = 0;
    }

    /// What this claim means to the invocation with token `me` at wall time `now_ms`.
    pub fn holder(&self, me: &str, now_ms: i64) -> Holder {
        if self.until_ms <= now_ms {
            Holder::Free
        } else if self.by == me {
            Holder::Mine
        } else {
            Holder::Other
        }
    }
}

/// A token unique to one invocation (process id, a per-process random key, a counter):
/// it tells an invocation's own claim, met again after a lost answer, from a rival's.
pub fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState is seeded from the OS once per thread; enough to tell processes apart.
    let random = RandomState::new().hash_one(n);
    format!("{:x}-{random:016x}-{n:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_mine_until_its_lease_ends_then_free_for_anyone() {
        let c = Claim::new("a", 1_000);
        assert_eq!(c.holder("a", 1_000), Holder::Mine);
        assert_eq!(c.holder("b", 1_000 + LEASE_MS - 1), Holder::Other);
        assert_eq!(c.holder("b", 1_000 + LEASE_MS), Holder::Free);
        assert_eq!(c.holder("a", 1_000 + LEASE_MS), Holder::Free, "an expired claim is retaken, not assumed");
    }

    #[test]
    fn a_claim_with_its_own_lease_holds_that_long() {
        let c = Claim::with_lease("a", 1_000, 120_000);
        assert_eq!(c.holder("b", 1_000 + 120_000 - 1), Holder::Other);
        assert_eq!(c.holder("b", 1_000 + 120_000), Holder::Free);
        assert_eq!(Claim::new("a", 1_000), Claim::with_lease("a", 1_000, LEASE_MS));
    }

    #[test]
    fn the_stored_shape_is_by_and_until_ms() {
        let c = Claim::with_lease("a", 1_000, 2_000);
        assert_eq!(serde_json::to_value(&c).expect("serialise"), serde_json::json!({"by": "a", "until_ms": 3_000}));
        let back: Claim = serde_json::from_str(r#"{"by":"a","until_ms":3000}"#).expect("parse");
        assert_eq!(back, c);
    }

    #[test]
    fn a_released_claim_is_free_at_once() {
        let mut c = Claim::new("a", 1_000);
        c.release();
        assert_eq!(c.holder("b", 1_001), Holder::Free);
    }

    #[test]
    fn tokens_differ_between_calls() {
        let a = token();
        let b = token();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{:x}-", std::process::id())), "{a}");
    }
}
