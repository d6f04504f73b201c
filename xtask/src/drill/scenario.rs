//! The drill scenario format (`samples/drills/*.toml`): settings plus a timeline of
//! steps at offsets from the start of the drill, each optionally carrying expectations,
//! and expectations over the whole drill.
//!
//! ```toml
//! name = "fail-again-after-failback"   # report: target/drill/<name>/report.html
//! description = "..."
//!
//! [settings]                  # optional; defaults shown
//! hysteresis = "10m"          # KBHA_HYSTERESIS_SECONDS of the failover function
//! cooldown = "5m"             # KBHA_COOLDOWN_SECONDS
//! rpo = "1h"                  # KBHA_RPO_SECONDS of the failover function and the verifier
//! failback = "auto"           # KBHA_FAILBACK: `auto` or `manual`
//! return_steps = "10,50,100"  # KBHA_RETURN_STEPS (absent: the function's default, 10,25,50,75,100)
//! return_bake = "5m"          # KBHA_RETURN_BAKE_SECONDS (absent: the function's default, 5m)
//!
//! [expect]                    # optional; checked once the last step ran
//! max_unhealthy_traffic = "1m32s"  # at most this many traffic-seconds served by a region
//!                                  # whose health check was failing, over the whole drill
//! incidents = 1                    # incidents in the failover function's ledger at the end
//! max_rto = "1m"                   # each: first failure -> service restored, at most
//! all_insync = true                # every change of every incident seen INSYNC
//! all_closed = true                # every incident closed
//! planned = 1                      # planned events (operator switchovers) in the ledger
//!
//! [[step]]
//! at = "10m30s"
//! alarm = { target = "primary", state = "ALARM" }           # shape = "sns" | "eventbridge" | "alarm-action"
//! expect = { action = "Applied", weights = { primary = 0, secondary = 100 } }
//!
//! [[step]]
//! at = "15m30s"
//! alarm = { target = "primary", state = "OK", lost = true } # CloudWatch changes, no event arrives
//!
//! [[step]]
//! at = "20m"                  # an operator command at the step's time (`kbha ops ...`)
//! ops = { command = "switchover", to = "secondary", steps = "10,50,100", bake = "5m" }
//! expect = { action = "Applied", weights = { primary = 90, secondary = 10 }, plan_step = 1 }
//!
//! [[step]]
//! at = "22m"
//! ops = { command = "abort", reason = "game day over" }
//! ```
//!
//! **Operator commands.** An `ops` step runs `kbha ops switchover` or `kbha ops abort` on
//! the drill's failover function as `drill-operator` at the step's simulated time.
//! `switchover` takes `to` (required), `steps` and `bake` (default: the function's
//! `KBHA_RETURN_STEPS` and `KBHA_RETURN_BAKE_SECONDS`) and `reason`; the command runs one
//! evaluation at once, which takes the first step, and the ticks take the later ones. The
//! step's outcome is `Applied` when the command changed the weights, `NoChange` when it did
//! not, `Rejected` when the command was refused (its message is printed).
//!
//! **Stepped shifts.** `plan_step` is the step of the stepped shift (a stepped return or a
//! switchover) in place after the step (1-based; 0: none taken yet), `plan_outcome` how it
//! ended at this step (`completed`, `rolled_back`, `superseded`, `aborted`, `abandoned`),
//! both from the plan note of the step's decision records.
//!
//! **Alarms.** The drill creates each mapped alarm in the emulator's CloudWatch at the
//! start (`kbha-api-primary-unhealthy` in us-east-1, `kbha-api-secondary-unhealthy` in
//! us-west-2, both OK since the start). An `alarm` step sets the alarm's state in
//! CloudWatch at the step's simulated time (StateUpdatedTimestamp = `at`), which is what
//! the failover function reads with DescribeAlarms on every event and tick, then delivers
//! the transition as an event (handled 2 s later), unless `lost = true`: the
//! state changes in CloudWatch but no event arrives (a dead-letter queue, throttled
//! delivery), so only a later event or tick sees it.
//!
//! **Unhealthy traffic.** `max_unhealthy_traffic` bounds the report's figure
//! "traffic-seconds served by an unhealthy region": the integral over the drill (until 5
//! minutes past the last step) of the share of traffic, from the weights read back from
//! Route 53 after each step (even shares when every weight is 0, as Route 53 spreads
//! them), sent to targets whose health check is failing at the time (the `health` steps
//! are the truth). A weight change counts from when the handler ran (a delivered alarm:
//! `at` plus the delivery delay). A duration such as `"1m30s"` reads as 90
//! traffic-seconds; exceeding it is one failed expectation of the drill.
//!
//! **The ledger.** The failover function writes its incident ledger in the emulator as in
//! production; the drill reads it back the way `kbha report` does, prints the incident
//! table, writes `target/drill/<name>/ledger.json` and checks `incidents`, `max_rto`,
//! `all_insync` and `all_closed` against it. Route 53 changes report INSYNC at the first
//! GetChange in drills (simulated time cannot model propagation).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name; the report goes to `target/drill/<name>/`.
    pub name: String,
    /// What the drill shows.
    #[serde(default)]
    pub description: String,
    /// Function settings.
    #[serde(default)]
    pub settings: Settings,
    /// Expectations over the whole drill, checked after the last step.
    #[serde(default)]
    pub expect: DrillExpect,
    /// The timeline, in file order (offsets must not go back).
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
}

/// Function settings the drill passes as `KBHA_*` variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `KBHA_HYSTERESIS_SECONDS` of the failover function.
    #[serde(default = "ten_minutes")]
    pub hysteresis: String,
    /// `KBHA_COOLDOWN_SECONDS` of the failover function.
    #[serde(default = "five_minutes")]
    pub cooldown: String,
    /// `KBHA_RPO_SECONDS` of both functions.
    #[serde(default = "one_hour")]
    pub rpo: String,
    /// `KBHA_FAILBACK` of the failover function: `auto` or `manual`.
    #[serde(default = "auto")]
    pub failback: String,
    /// `KBHA_RETURN_STEPS` of the failover function (`"10,50,100"`; `"100"`: all at
    /// once); absent: the function's default.
    #[serde(default)]
    pub return_steps: Option<String>,
    /// `KBHA_RETURN_BAKE_SECONDS` of the failover function, as a duration (`"5m"`);
    /// absent: the function's default.
    #[serde(default)]
    pub return_bake: Option<String>,
}

/// Expectations over the whole drill; every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillExpect {
    /// Most traffic-seconds served by a region whose health check is failing, as a
    /// duration (`"1m30s"`: 90 traffic-seconds).
    pub max_unhealthy_traffic: Option<String>,
    /// Incidents the failover function's ledger holds at the end.
    pub incidents: Option<usize>,
    /// Most time from each incident's first failure to service restored (`"5m"`).
    pub max_rto: Option<String>,
    /// Every change of every incident was seen INSYNC.
    pub all_insync: Option<bool>,
    /// Every incident is closed at the end.
    pub all_closed: Option<bool>,
    /// Planned events (operator switchovers, not incidents) the ledger holds at the end.
    pub planned: Option<usize>,
}

fn ten_minutes() -> String {
    "10m".into()
}
fn five_minutes() -> String {
    "5m".into()
}
fn one_hour() -> String {
    "1h".into()
}
fn auto() -> String {
    "auto".into()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hysteresis: ten_minutes(),
            cooldown: five_minutes(),
            rpo: one_hour(),
            failback: auto(),
            return_steps: None,
            return_bake: None,
        }
    }
}

/// One point of the timeline: exactly one action (or none, for a pure check).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Offset from the start, e.g. `"10m"`, `"1h30m"`, `"90s"`.
    pub at: String,
    /// A CloudWatch alarm changes state (in CloudWatch, at `at`); the transition is
    /// delivered to the failover handler unless `lost`.
    pub alarm: Option<AlarmStep>,
    /// A Route 53 health check flips (ground truth of the region's health).
    pub health: Option<HealthStep>,
    /// A backup lands in the primary backup bucket; delivered to the verifier.
    pub backup: Option<BackupStep>,
    /// A scheduled tick: the failover function re-evaluates.
    #[serde(default)]
    pub tick: bool,
    /// A scheduled tick: the verifier's dead-man check.
    #[serde(default)]
    pub dead_man: bool,
    /// The verifier's restore test of each source's newest verified backup (its duration
    /// is the restore part of the RTO in the report).
    #[serde(default)]
    pub restore_test: bool,
    /// An operator command (`kbha ops ...`) at the step's time.
    pub ops: Option<OpsStep>,
    /// What must hold after the step.
    pub expect: Option<Expect>,
}

/// An alarm transition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmStep {
    /// `primary` or `secondary`.
    pub target: String,
    /// `ALARM` or `OK`.
    pub state: String,
    /// `sns` (default), `eventbridge` or `alarm-action`.
    #[serde(default = "sns")]
    pub shape: String,
    /// The state changes in CloudWatch but no event is delivered (default false).
    #[serde(default)]
    pub lost: bool,
}

fn sns() -> String {
    "sns".into()
}

/// An operator command, as `kbha ops <command>` takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsStep {
    /// `switchover` or `abort`.
    pub command: String,
    /// `switchover`: the destination (`primary` or `secondary`).
    pub to: Option<String>,
    /// `switchover`: steps, percent rising to 100 (default: the function's
    /// `KBHA_RETURN_STEPS`).
    pub steps: Option<String>,
    /// `switchover`: how long each step holds (default: the function's
    /// `KBHA_RETURN_BAKE_SECONDS`).
    pub bake: Option<String>,
    /// Why (recorded and announced).
    pub reason: Option<String>,
}

/// A health-check flip.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthStep {
    /// `primary` or `secondary`.
    pub target: String,
    /// The new status.
    pub healthy: bool,
}

/// A backup landing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupStep {
    /// `good`, `late` or `corrupt`.
    pub kind: BackupKind,
    /// How long before `at` the backup was taken (its manifest's `created_at`);
    /// default 5m, for `late` backups typically hours.
    #[serde(default = "five_minutes")]
    pub age: String,
    /// Whether the cross-region copy lands too (default true).
    #[serde(default = "yes")]
    pub copy: bool,
}

fn yes() -> bool {
    true
}

/// What a backup looks like.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// A sound archive with a matching manifest.
    Good,
    /// A sound archive taken long before it landed.
    Late,
    /// An archive whose bytes do not match its manifest (damaged in transit).
    Corrupt,
}

/// Expectations checked after a step; every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Route 53 weights by set identifier, read back through ListResourceRecordSets.
    pub weights: Option<BTreeMap<String, u32>>,
    /// The failover handler's action for this step (`Applied`, `NoChange`, `Refused`, ...).
    pub action: Option<String>,
    /// The verifier's verdict for this step (`Ok`, `Warning`, `Breach`, `Corrupt`).
    pub verdict: Option<String>,
    /// Notices delivered so far (SNS deliveries read back from the subscribed queue).
    pub notices: Option<usize>,
    /// Alerts the alert router delivered to the severity topics so far (read back from
    /// their queues).
    pub alerts: Option<usize>,
    /// The stepped shift's step in place after this step (1-based; 0: none taken yet),
    /// from the plan note of the step's decision records.
    pub plan_step: Option<usize>,
    /// How the stepped shift ended at this step: `completed`, `rolled_back`, `superseded`,
    /// `aborted` or `abandoned`.
    pub plan_outcome: Option<String>,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let s: Scenario = toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let mut last = 0;
        for (i, step) in s.steps.iter().enumerate() {
            let at = parse_duration(&step.at).with_context(|| format!("step {}: `at`", i + 1))?;
            if at < last {
                bail!("step {}: at = {:?} goes back in time; list steps in time order", i + 1, step.at);
            }
            last = at;
            let actions = [
                step.alarm.is_some(),
                step.health.is_some(),
                step.backup.is_some(),
                step.tick,
                step.dead_man,
                step.restore_test,
                step.ops.is_some(),
            ];
            if actions.iter().filter(|a| **a).count() > 1 {
                bail!("step {}: more than one action; split it into steps at the same `at`", i + 1);
            }
            for t in [step.alarm.as_ref().map(|a| &a.target), step.health.as_ref().map(|h| &h.target)].into_iter().flatten() {
                if t != "primary" && t != "secondary" {
                    bail!("step {}: target {t:?}; expected `primary` or `secondary`", i + 1);
                }
            }
            if let Some(b) = &step.backup {
                parse_duration(&b.age).with_context(|| format!("step {}: backup age", i + 1))?;
            }
            if let Some(o) = &step.ops {
                o.check().with_context(|| format!("step {}: ops", i + 1))?;
            }
            if let Some(p) = step.expect.as_ref().and_then(|e| e.plan_outcome.as_deref())
                && !PLAN_OUTCOMES.contains(&p)
            {
                bail!("step {}: plan_outcome = {p:?}; expected one of {}", i + 1, PLAN_OUTCOMES.join(", "));
            }
        }
        for d in [&s.settings.hysteresis, &s.settings.cooldown, &s.settings.rpo] {
            parse_duration(d).context("settings")?;
        }
        if let Some(steps) = &s.settings.return_steps {
            kbha_core::plan::parse_steps(steps, 0).map_err(anyhow::Error::msg).context("settings: return_steps")?;
        }
        if let Some(bake) = &s.settings.return_bake {
            parse_duration(bake).context("settings: return_bake")?;
        }
        if !matches!(s.settings.failback.as_str(), "auto" | "manual") {
            bail!("settings: failback = {:?}; expected \"auto\" or \"manual\"", s.settings.failback);
        }
        if let Some(m) = &s.expect.max_unhealthy_traffic {
            parse_duration(m).context("expect: max_unhealthy_traffic")?;
        }
        Ok(s)
    }
}

/// The ways a stepped shift ends, as `plan_outcome` names them.
pub const PLAN_OUTCOMES: [&str; 5] = ["completed", "rolled_back", "superseded", "aborted", "abandoned"];

impl OpsStep {
    /// Checks the command and its arguments.
    fn check(&self) -> Result<()> {
        match self.command.as_str() {
            "switchover" => {
                match self.to.as_deref() {
                    Some("primary" | "secondary") => {}
                    Some(t) => bail!("switchover to {t:?}; expected `primary` or `secondary`"),
                    None => bail!("switchover needs `to`"),
                }
                if let Some(steps) = &self.steps {
                    kbha_core::plan::parse_steps(steps, 0).map_err(anyhow::Error::msg).context("steps")?;
                }
                if let Some(bake) = &self.bake {
                    parse_duration(bake).context("bake")?;
                }
            }
            "abort" => {
                if self.to.is_some() || self.steps.is_some() || self.bake.is_some() {
                    bail!("abort takes only `reason`");
                }
            }
            other => bail!("command {other:?}; expected `switchover` or `abort`"),
        }
        Ok(())
    }
}

/// `"1h30m"`, `"10m"`, `"90s"`, `"0"` -> milliseconds (the syntax `kbha ops` and `kbha report` read too).
pub use kbha::report::parse_duration;

/// `+HH:MM:SS` of an offset.
pub fn offset(ms: i64) -> String {
    let s = ms / 1000;
    format!("+{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_reject() {
        assert_eq!(parse_duration("1h30m").ok(), Some(5_400_000));
        assert_eq!(parse_duration("90s").ok(), Some(90_000));
        assert_eq!(parse_duration("0").ok(), Some(0));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5d").is_err());
        assert_eq!(offset(3_723_000), "+01:02:03");
    }

    #[test]
    fn steps_out_of_order_or_with_two_actions_are_rejected() {
        let dir = std::env::temp_dir().join(format!("kbha-scn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let p = dir.join("a.toml");
        std::fs::write(&p, "name='a'\n[[step]]\nat='5m'\ntick=true\n[[step]]\nat='1m'\ntick=true\n").ok();
        assert!(Scenario::load(&p).is_err());
        std::fs::write(&p, "name='a'\n[[step]]\nat='5m'\ntick=true\ndead_man=true\n").ok();
        assert!(Scenario::load(&p).is_err());
        std::fs::write(&p, "name='a'\n[[step]]\nat='5m'\nhealth={target='tertiary',healthy=false}\n").ok();
        assert!(Scenario::load(&p).is_err());
        std::fs::write(&p, "name='a'\n[[step]]\nat='5m'\ntick=true\nexpect={weights={primary=100}}\n").ok();
        assert!(Scenario::load(&p).is_ok());
    }

    #[test]
    fn failback_lost_alarms_and_the_unhealthy_traffic_bound_parse() {
        let dir = std::env::temp_dir().join(format!("kbha-scn2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let p = dir.join("b.toml");
        let ok = "name='b'\n[settings]\nfailback='manual'\n[expect]\nmax_unhealthy_traffic='1m30s'\n\
                  [[step]]\nat='5m'\nalarm={target='primary',state='OK',lost=true}\n";
        std::fs::write(&p, ok).ok();
        let s = Scenario::load(&p).ok();
        assert_eq!(s.as_ref().map(|s| s.settings.failback.as_str()), Some("manual"));
        assert_eq!(s.as_ref().and_then(|s| s.expect.max_unhealthy_traffic.clone()).as_deref(), Some("1m30s"));
        assert_eq!(s.as_ref().and_then(|s| s.steps[0].alarm.as_ref()).map(|a| a.lost), Some(true));
        let defaults = "name='b'\n[[step]]\nat='5m'\nalarm={target='primary',state='ALARM'}\n";
        std::fs::write(&p, defaults).ok();
        let s = Scenario::load(&p).ok();
        assert_eq!(s.as_ref().map(|s| s.settings.failback.as_str()), Some("auto"));
        assert_eq!(s.as_ref().and_then(|s| s.steps[0].alarm.as_ref()).map(|a| a.lost), Some(false));
        assert!(s.is_some_and(|s| s.expect.max_unhealthy_traffic.is_none()));
        std::fs::write(&p, "name='b'\n[settings]\nfailback='sometimes'\n[[step]]\nat='5m'\ntick=true\n").ok();
        assert!(Scenario::load(&p).is_err());
        std::fs::write(&p, "name='b'\n[expect]\nmax_unhealthy_traffic='90'\n[[step]]\nat='5m'\ntick=true\n").ok();
        assert!(Scenario::load(&p).is_err());
    }

    #[test]
    fn stepped_returns_and_operator_commands_parse_and_bad_ones_are_rejected() {
        let dir = std::env::temp_dir().join(format!("kbha-scn3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let p = dir.join("c.toml");
        let ok = "name='c'\n[settings]\nreturn_steps='10,50,100'\nreturn_bake='2m'\n[expect]\nplanned=1\n\
                  [[step]]\nat='5m'\nops={command='switchover',to='secondary',steps='50,100',bake='5m'}\n\
                  expect={plan_step=1}\n[[step]]\nat='6m'\nops={command='abort'}\nexpect={plan_outcome='aborted'}\n";
        std::fs::write(&p, ok).ok();
        let s = Scenario::load(&p).ok();
        assert_eq!(s.as_ref().and_then(|s| s.settings.return_steps.clone()).as_deref(), Some("10,50,100"));
        assert_eq!(s.as_ref().and_then(|s| s.settings.return_bake.clone()).as_deref(), Some("2m"));
        assert_eq!(s.as_ref().and_then(|s| s.expect.planned), Some(1));
        assert_eq!(s.as_ref().and_then(|s| s.steps[0].ops.as_ref()).and_then(|o| o.to.clone()).as_deref(), Some("secondary"));
        assert_eq!(s.as_ref().and_then(|s| s.steps[0].expect.as_ref()).and_then(|e| e.plan_step), Some(1));
        std::fs::write(&p, "name='c'\n[[step]]\nat='5m'\ntick=true\n").ok();
        assert!(Scenario::load(&p).is_ok_and(|s| s.settings.return_steps.is_none() && s.settings.return_bake.is_none()));
        for bad in [
            "[settings]\nreturn_steps='10,50'\n[[step]]\nat='5m'\ntick=true\n",
            "[settings]\nreturn_bake='300'\n[[step]]\nat='5m'\ntick=true\n",
            "[[step]]\nat='5m'\nops={command='switchover'}\n",
            "[[step]]\nat='5m'\nops={command='switchover',to='tertiary'}\n",
            "[[step]]\nat='5m'\nops={command='switchover',to='primary',steps='50,10'}\n",
            "[[step]]\nat='5m'\nops={command='abort',to='primary'}\n",
            "[[step]]\nat='5m'\nops={command='pause'}\n",
            "[[step]]\nat='5m'\nops={command='abort'}\ntick=true\n",
            "[[step]]\nat='5m'\ntick=true\nexpect={plan_outcome='finished'}\n",
        ] {
            std::fs::write(&p, format!("name='c'\n{bad}")).ok();
            assert!(Scenario::load(&p).is_err(), "{bad}");
        }
    }
}
