//! Route 53: the weighted record set, compare-and-swap changes, health-check status.

use std::future::Future;

use aws_sdk_route53::Client;
use aws_sdk_route53::types::{AliasTarget as SdkAliasTarget, Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
use kbha_core::Health;

use crate::AwsError;

/// Route 53 counts a health check healthy when more than 18 % of its checkers report
/// success (Developer Guide, "How Amazon Route 53 determines whether a health check is
/// healthy"); a bare majority would call an endpoint down during a partial network split.
pub const HEALTHY_CHECKER_FRACTION: f64 = 0.18;

/// An alias record's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasTarget {
    /// Hosted zone of the target (e.g. the load balancer's canonical zone).
    pub hosted_zone_id: String,
    /// DNS name of the target.
    pub dns_name: String,
    /// Whether Route 53 evaluates the target's health.
    pub evaluate_target_health: bool,
}

/// One weighted record, with every field Route 53 compares on DELETE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedRecord {
    /// Fully qualified name, as Route 53 returns it (trailing dot).
    pub name: String,
    /// Record type (`A`, `AAAA`, `CNAME`, ...).
    pub rtype: String,
    /// SetIdentifier.
    pub set_identifier: String,
    /// Weight, 0..=255.
    pub weight: u32,
    /// TTL in seconds; `None` for alias records.
    pub ttl: Option<i64>,
    /// Record values; empty for alias records.
    pub values: Vec<String>,
    /// Alias target, for alias records.
    pub alias: Option<AliasTarget>,
    /// Health check attached to the record.
    pub health_check_id: Option<String>,
}

impl WeightedRecord {
    /// The same record with another weight: the usual CREATE half of a swap.
    pub fn with_weight(&self, weight: u32) -> Self {
        WeightedRecord { weight, ..self.clone() }
    }
}

/// The `(current, new)` pairs that set `weights` (set identifier -> weight) on the
/// `current` records, for [`Dns::swap_records`]: one pair for *every* record of the set,
/// unchanged ones too (DELETE and CREATE of the same values), so the batch is a
/// compare-and-swap over the whole set. Route 53 then rejects it if any record changed
/// since it was read, even one this change leaves alone: two writers each draining a
/// different record cannot both succeed and leave every weight at 0. Set identifiers not
/// in `current` are reported back as unknown.
pub fn swaps_for_weights<'a>(
    current: &[WeightedRecord],
    weights: impl IntoIterator<Item = (&'a str, u32)>,
) -> Result<Vec<(WeightedRecord, WeightedRecord)>, Vec<String>> {
    let mut weighted = Vec::new();
    let mut unknown = Vec::new();
    for (set_identifier, weight) in weights {
        match current.iter().find(|r| r.set_identifier == set_identifier) {
            Some(_) => weighted.push((set_identifier, weight)),
            None => unknown.push(set_identifier.to_owned()),
        }
    }
    let swaps = current
        .iter()
        .map(|r| {
            let w = weighted.iter().rev().find(|(id, _)| *id == r.set_identifier).map_or(r.weight, |(_, w)| *w);
            (r.clone(), r.with_weight(w))
        })
        .collect::<Vec<_>>();
    if unknown.is_empty() { Ok(swaps) } else { Err(unknown) }
}

/// Where a Route 53 change stands (GetChange).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeStatus {
    /// Not yet on every Route 53 authoritative server.
    Pending,
    /// On every authoritative server: DNS answers the new records.
    InSync,
}

/// What the failover function needs from DNS.
pub trait Dns: Send + Sync {
    /// Every weighted record of exactly `name` (trailing dot optional, any case) and
    /// `rtype` in the zone, all pages read.
    fn weighted_records(
        &self,
        zone_id: &str,
        name: &str,
        rtype: &str,
    ) -> impl Future<Output = Result<Vec<WeightedRecord>, AwsError>> + Send;

    /// One atomic change batch that, for each `(current, new)` pair, DELETEs the exact
    /// current record and CREATEs its new version. Returns the change id (without the
    /// `/change/` prefix). [`AwsError::Conflict`] when a record changed since it was read.
    fn swap_records(
        &self,
        zone_id: &str,
        swaps: &[(WeightedRecord, WeightedRecord)],
        comment: &str,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;

    /// The health check's verdict, aggregated from its checkers as Route 53 does
    /// ([`HEALTHY_CHECKER_FRACTION`]); [`Health::Unknown`] when no checker reported.
    fn health_status(&self, health_check_id: &str) -> impl Future<Output = Result<Health, AwsError>> + Send;

    /// Whether the change `change_id` (as [`Dns::swap_records`] returns it; a `/change/`
    /// prefix is accepted) has reached every Route 53 authoritative server. An id Route 53
    /// never issued (or has forgotten) is an error (`NoSuchChange`, HTTP 404).
    fn change_status(&self, change_id: &str) -> impl Future<Output = Result<ChangeStatus, AwsError>> + Send;
}

/// [`Dns`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct Route53Dns {
    client: Client,
}

impl Route53Dns {
    /// Wraps a Route 53 client.
    pub fn new(client: Client) -> Self {
        Route53Dns { client }
    }

    /// Builds the client from a shared SDK configuration.
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        Route53Dns::new(Client::new(conf))
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Lowercase with a trailing dot: Route 53 names are case-insensitive and returned
/// fully qualified.
pub fn normalize_name(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// Aggregates checker observations into a verdict, as Route 53 does.
pub fn aggregate_health<'a>(statuses: impl IntoIterator<Item = &'a str>) -> Health {
    let (mut total, mut ok) = (0u32, 0u32);
    for s in statuses {
        total += 1;
        if s.starts_with("Success") {
            ok += 1;
        }
    }
    if total == 0 {
        Health::Unknown
    } else if f64::from(ok) > HEALTHY_CHECKER_FRACTION * f64::from(total) {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

const LIST: &str = "ListResourceRecordSets";
const CHANGE: &str = "ChangeResourceRecordSets";
const HEALTH: &str = "GetHealthCheckStatus";
const GET_CHANGE: &str = "GetChange";

fn from_sdk_record(rrs: &ResourceRecordSet) -> Option<WeightedRecord> {
    let weight = u32::try_from(rrs.weight()?).ok()?;
    Some(WeightedRecord {
        name: rrs.name().to_owned(),
        rtype: rrs.r#type().as_str().to_owned(),
        set_identifier: rrs.set_identifier()?.to_owned(),
        weight,
        ttl: rrs.ttl(),
        values: rrs.resource_records().iter().map(|r| r.value().to_owned()).collect(),
        alias: rrs.alias_target().map(|a| AliasTarget {
            hosted_zone_id: a.hosted_zone_id().to_owned(),
            dns_name: a.dns_name().to_owned(),
            evaluate_target_health: a.evaluate_target_health(),
        }),
        health_check_id: rrs.health_check_id().map(str::to_owned),
    })
}

/// The SDK form of a record, exactly as kbha writes it in change batches (tests create
/// fixtures with it too, so fixtures and changes cannot drift apart).
pub fn to_sdk_record(r: &WeightedRecord) -> Result<ResourceRecordSet, AwsError> {
    let bad = |e: aws_sdk_route53::error::BuildError| AwsError::invalid(CHANGE, e.to_string());
    let mut b = ResourceRecordSet::builder()
        .name(&r.name)
        .r#type(RrType::from(r.rtype.as_str()))
        .set_identifier(&r.set_identifier)
        .weight(i64::from(r.weight))
        .set_ttl(r.ttl)
        .set_health_check_id(r.health_check_id.clone());
    for v in &r.values {
        b = b.resource_records(ResourceRecord::builder().value(v).build().map_err(bad)?);
    }
    if let Some(a) = &r.alias {
        b = b.alias_target(
            SdkAliasTarget::builder()
                .hosted_zone_id(&a.hosted_zone_id)
                .dns_name(&a.dns_name)
                .evaluate_target_health(a.evaluate_target_health)
                .build()
                .map_err(bad)?,
        );
    }
    b.build().map_err(bad)
}

fn change(action: ChangeAction, r: &WeightedRecord) -> Result<Change, AwsError> {
    Change::builder().action(action).resource_record_set(to_sdk_record(r)?).build().map_err(|e| AwsError::invalid(CHANGE, e.to_string()))
}

impl Dns for Route53Dns {
    async fn weighted_records(&self, zone_id: &str, name: &str, rtype: &str) -> Result<Vec<WeightedRecord>, AwsError> {
        let want_name = normalize_name(name);
        let mut out = Vec::new();
        // Start at the record itself: Route 53 lists in (name, type, identifier) order.
        let mut next: (Option<String>, Option<RrType>, Option<String>) = (Some(want_name.clone()), Some(RrType::from(rtype)), None);
        loop {
            let page = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(zone_id)
                .set_start_record_name(next.0.clone())
                .set_start_record_type(next.1.clone())
                .set_start_record_identifier(next.2.clone())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(LIST, e))?;
            let mut past_ours = false;
            for rrs in page.resource_record_sets() {
                if normalize_name(rrs.name()) == want_name && rrs.r#type().as_str() == rtype {
                    if let Some(r) = from_sdk_record(rrs) {
                        out.push(r);
                    }
                } else if !out.is_empty() {
                    past_ours = true;
                }
            }
            if !page.is_truncated() || past_ours {
                break;
            }
            let following = (
                page.next_record_name().map(str::to_owned),
                page.next_record_type().cloned(),
                page.next_record_identifier().map(str::to_owned),
            );
            if following.0.as_deref().map(normalize_name).as_deref() != Some(want_name.as_str())
                || following.1.as_ref().map(RrType::as_str) != Some(rtype)
            {
                break;
            }
            // A service that ignores StartRecordIdentifier would hand the same page back forever.
            if following == next {
                return Err(AwsError::invalid(LIST, "pagination did not advance; the service ignored the next record identifier"));
            }
            next = following;
        }
        out.sort_by(|a, b| a.set_identifier.cmp(&b.set_identifier));
        out.dedup_by(|a, b| a.set_identifier == b.set_identifier);
        Ok(out)
    }

    async fn swap_records(&self, zone_id: &str, swaps: &[(WeightedRecord, WeightedRecord)], comment: &str) -> Result<String, AwsError> {
        if swaps.is_empty() {
            return Err(AwsError::invalid(CHANGE, "no records to change"));
        }
        let mut changes = Vec::with_capacity(swaps.len() * 2);
        for (current, new) in swaps {
            changes.push(change(ChangeAction::Delete, current)?);
            changes.push(change(ChangeAction::Create, new)?);
        }
        let batch = ChangeBatch::builder()
            .set_changes(Some(changes))
            .comment(comment)
            .build()
            .map_err(|e| AwsError::invalid(CHANGE, e.to_string()))?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(CHANGE, e))?;
        let id = out
            .change_info()
            .map(|c| c.id().trim_start_matches("/change/").to_owned())
            .ok_or_else(|| AwsError::invalid(CHANGE, "response carried no change id"))?;
        Ok(id)
    }

    async fn change_status(&self, change_id: &str) -> Result<ChangeStatus, AwsError> {
        let id = change_id.trim_start_matches("/change/");
        let out = self.client.get_change().id(id).send().await.map_err(|e| AwsError::from_sdk(GET_CHANGE, e))?;
        let info = out.change_info().ok_or_else(|| AwsError::invalid(GET_CHANGE, "response carried no change info"))?;
        Ok(match info.status() {
            aws_sdk_route53::types::ChangeStatus::Insync => ChangeStatus::InSync,
            // PENDING, or a status this SDK does not know: not known to be in sync.
            _ => ChangeStatus::Pending,
        })
    }

    async fn health_status(&self, health_check_id: &str) -> Result<Health, AwsError> {
        let out = self
            .client
            .get_health_check_status()
            .health_check_id(health_check_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(HEALTH, e))?;
        Ok(aggregate_health(out.health_check_observations().iter().filter_map(|o| o.status_report().and_then(|r| r.status()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_route53s_18_percent_rule() {
        let ok = "Success: HTTP Status Code 200, OK";
        let bad = "Failure: Connection timed out.";
        assert_eq!(aggregate_health([ok, ok, bad, bad, bad, bad, bad, bad]), Health::Healthy);
        assert_eq!(aggregate_health([ok, bad, bad, bad, bad, bad, bad, bad]), Health::Unhealthy);
        assert_eq!(aggregate_health([]), Health::Unknown);
    }

    #[test]
    fn swaps_cover_every_record_of_the_set() {
        let rec = |id: &str, w: u32| WeightedRecord {
            name: "app.example.com.".into(),
            rtype: "A".into(),
            set_identifier: id.into(),
            weight: w,
            ttl: Some(60),
            values: vec!["192.0.2.1".into()],
            alias: None,
            health_check_id: None,
        };
        let current = [rec("a", 100), rec("b", 0)];
        let swaps = swaps_for_weights(&current, [("a", 0), ("b", 0)]).expect("known ids");
        assert_eq!(
            swaps,
            vec![(rec("a", 100), rec("a", 0)), (rec("b", 0), rec("b", 0))],
            "the unchanged record is in the batch too, so a concurrent change to it conflicts"
        );
        assert_eq!(swaps_for_weights(&current, [("c", 1)]), Err(vec!["c".to_owned()]));
    }

    #[test]
    fn names_compare_fully_qualified_and_case_insensitive() {
        assert_eq!(normalize_name("App.Example.com"), "app.example.com.");
        assert_eq!(normalize_name("app.example.com."), "app.example.com.");
    }
}
