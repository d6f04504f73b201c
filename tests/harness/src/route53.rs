//! Route 53 fixtures: a hosted zone with health-checked weighted records, read and
//! changed through the raw SDK.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, HealthCheckConfig, HealthCheckType};
use kbha_aws::WeightedRecord;

use crate::Emulator;

impl Emulator {
    /// Creates a hosted zone, a health check per target and the weighted records.
    pub async fn create_weighted_fixture(&self, spec: &WeightedSpec) -> Result<WeightedFixture> {
        let r53 = self.route53().await;
        let zone = r53
            .create_hosted_zone()
            .name(&spec.zone_name)
            .caller_reference(format!("kbha-{}", spec.zone_name))
            .send()
            .await
            .context("CreateHostedZone")?;
        let zone_id = zone.hosted_zone().map(|z| z.id().trim_start_matches("/hostedzone/").to_owned()).context("zone id")?;
        let record_name = kbha_aws::normalize_name(&spec.record_name);

        let mut targets = Vec::new();
        let mut changes = Vec::new();
        for t in &spec.targets {
            let hc = r53
                .create_health_check()
                .caller_reference(format!("kbha-hc-{}", t.set_identifier))
                .health_check_config(
                    HealthCheckConfig::builder()
                        .r#type(HealthCheckType::Https)
                        .fully_qualified_domain_name(format!("{}.{}", t.set_identifier, spec.zone_name.trim_end_matches('.')))
                        .port(443)
                        .resource_path("/health")
                        .build()?,
                )
                .send()
                .await
                .context("CreateHealthCheck")?;
            let hc_id = hc.health_check().map(|h| h.id().to_owned()).context("health check id")?;
            let record = WeightedRecord {
                name: record_name.clone(),
                rtype: spec.rtype.clone(),
                set_identifier: t.set_identifier.clone(),
                weight: t.weight,
                ttl: Some(spec.ttl),
                values: vec![t.value.clone()],
                alias: None,
                health_check_id: Some(hc_id.clone()),
            };
            changes.push(Change::builder().action(ChangeAction::Create).resource_record_set(kbha_aws::to_sdk_record(&record)?).build()?);
            targets.push(FixtureTarget {
                set_identifier: t.set_identifier.clone(),
                region: t.region.clone(),
                health_check_id: hc_id,
                record,
            });
        }
        r53.change_resource_record_sets()
            .hosted_zone_id(&zone_id)
            .change_batch(ChangeBatch::builder().set_changes(Some(changes)).build()?)
            .send()
            .await
            .context("ChangeResourceRecordSets (fixture)")?;
        Ok(WeightedFixture { zone_id, record_name, rtype: spec.rtype.clone(), targets })
    }

    /// The weighted records of `name`/`rtype`, read straight through
    /// ListResourceRecordSets (independently of kbha-aws's reader).
    pub async fn read_weighted_records(&self, zone_id: &str, name: &str, rtype: &str) -> Result<Vec<WeightedRecord>> {
        let r53 = self.route53().await;
        let out = r53.list_resource_record_sets().hosted_zone_id(zone_id).max_items(300).send().await.context("ListResourceRecordSets")?;
        let want = kbha_aws::normalize_name(name);
        let mut records: Vec<WeightedRecord> = out
            .resource_record_sets()
            .iter()
            .filter(|r| kbha_aws::normalize_name(r.name()) == want && r.r#type().as_str() == rtype)
            .filter_map(|r| {
                Some(WeightedRecord {
                    name: r.name().to_owned(),
                    rtype: r.r#type().as_str().to_owned(),
                    set_identifier: r.set_identifier()?.to_owned(),
                    weight: u32::try_from(r.weight()?).ok()?,
                    ttl: r.ttl(),
                    values: r.resource_records().iter().map(|v| v.value().to_owned()).collect(),
                    alias: None,
                    health_check_id: r.health_check_id().map(str::to_owned),
                })
            })
            .collect();
        records.sort_by(|a, b| a.set_identifier.cmp(&b.set_identifier));
        Ok(records)
    }

    /// `set identifier -> weight` of the fixture's record set, read back from Route 53.
    pub async fn weights(&self, fx: &WeightedFixture) -> Result<BTreeMap<String, u32>> {
        Ok(self
            .read_weighted_records(&fx.zone_id, &fx.record_name, &fx.rtype)
            .await?
            .into_iter()
            .map(|r| (r.set_identifier, r.weight))
            .collect())
    }

    /// Changes one record's weight the way another operator would (DELETE + CREATE
    /// through the raw SDK), e.g. between a function's read and its write.
    pub async fn set_weight(&self, fx: &WeightedFixture, set_identifier: &str, weight: u32) -> Result<()> {
        let current = self
            .read_weighted_records(&fx.zone_id, &fx.record_name, &fx.rtype)
            .await?
            .into_iter()
            .find(|r| r.set_identifier == set_identifier)
            .with_context(|| format!("no record with set identifier `{set_identifier}`"))?;
        let changes = vec![
            Change::builder().action(ChangeAction::Delete).resource_record_set(kbha_aws::to_sdk_record(&current)?).build()?,
            Change::builder()
                .action(ChangeAction::Create)
                .resource_record_set(kbha_aws::to_sdk_record(&current.with_weight(weight))?)
                .build()?,
        ];
        self.route53()
            .await
            .change_resource_record_sets()
            .hosted_zone_id(&fx.zone_id)
            .change_batch(ChangeBatch::builder().set_changes(Some(changes)).comment("operator").build()?)
            .send()
            .await
            .context("ChangeResourceRecordSets (set_weight)")?;
        Ok(())
    }
}

/// One target of a weighted fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// SetIdentifier.
    pub set_identifier: String,
    /// Region it stands for (informational; the record is a plain weighted record).
    pub region: String,
    /// Initial weight.
    pub weight: u32,
    /// The A/AAAA/CNAME value.
    pub value: String,
}

/// What [`Emulator::create_weighted_fixture`] creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedSpec {
    /// Hosted zone name.
    pub zone_name: String,
    /// Record name inside it.
    pub record_name: String,
    /// Record type.
    pub rtype: String,
    /// TTL of every record.
    pub ttl: i64,
    /// The targets, each with its own health check.
    pub targets: Vec<TargetSpec>,
}

impl Default for WeightedSpec {
    /// `app.example.com.` A, TTL 60: `primary` (us-east-1, weight 100, 192.0.2.10) and
    /// `secondary` (us-west-2, weight 0, 198.51.100.10).
    fn default() -> Self {
        WeightedSpec {
            zone_name: "example.com.".into(),
            record_name: "app.example.com.".into(),
            rtype: "A".into(),
            ttl: 60,
            targets: vec![
                TargetSpec { set_identifier: "primary".into(), region: "us-east-1".into(), weight: 100, value: "192.0.2.10".into() },
                TargetSpec { set_identifier: "secondary".into(), region: "us-west-2".into(), weight: 0, value: "198.51.100.10".into() },
            ],
        }
    }
}

/// A target as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureTarget {
    /// SetIdentifier.
    pub set_identifier: String,
    /// Region it stands for.
    pub region: String,
    /// Its Route 53 health check.
    pub health_check_id: String,
    /// The record as created.
    pub record: WeightedRecord,
}

/// A zone with a weighted record set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedFixture {
    /// Hosted zone id, without the `/hostedzone/` prefix.
    pub zone_id: String,
    /// Record name, fully qualified.
    pub record_name: String,
    /// Record type.
    pub rtype: String,
    /// The targets, in spec order.
    pub targets: Vec<FixtureTarget>,
}

impl WeightedFixture {
    /// The target with this set identifier.
    pub fn target(&self, set_identifier: &str) -> Option<&FixtureTarget> {
        self.targets.iter().find(|t| t.set_identifier == set_identifier)
    }
}
