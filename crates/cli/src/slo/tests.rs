//! `kbha slo`: the workbook's table, validation errors, the rendered alarms against
//! CloudWatch's limits and the alert router, and the golden file.

use super::*;
use serde_json::Value as Json;

const SAMPLE: &str = include_str!("../../../../samples/slo/knowledgebeast.toml");

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/slo/knowledgebeast.rendered.json")
}

fn rendered_sample() -> Result<Json> {
    Ok(serde_json::from_str(&render(&parse(SAMPLE)?, Topic::Parameter)?)?)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

const THIRTY_DAYS: u64 = 30 * 86_400;

// ------------------------------------------------------------------ the workbook's table

#[test]
fn the_windows_are_the_workbooks() {
    let windows: Vec<_> = WORKBOOK.iter().map(|p| (p.class, p.long_s, p.short_s)).collect();
    assert_eq!(
        windows,
        [
            (AlertClass::Page, 3_600, 300),
            (AlertClass::Page, 21_600, 1_800),
            (AlertClass::Ticket, 86_400, 7_200),
            (AlertClass::Ticket, 259_200, 21_600),
        ]
    );
    for p in WORKBOOK {
        assert_eq!(p.long_s, 12 * p.short_s, "the short window is 1/12 of the long one");
    }
}

#[test]
fn burn_rates_for_thirty_days_are_14_4_6_3_1_exactly() {
    let burn: Vec<f64> = WORKBOOK.iter().map(|p| p.burn_rate(THIRTY_DAYS)).collect();
    assert_eq!(burn, [14.4, 6.0, 3.0, 1.0]);
    assert_eq!(num(burn[0]), "14.4");
}

#[test]
fn each_alert_consumes_the_workbooks_share_of_the_budget() {
    // 14.4 x 1h/30d = 2 %, 6 x 6h/30d = 5 %, 3 x 1d/30d = 10 %, 1 x 3d/30d = 10 %.
    let consumed: Vec<f64> = WORKBOOK.iter().map(|p| p.budget_consumed_percent(THIRTY_DAYS)).collect();
    assert_eq!(consumed, [2.0, 5.0, 10.0, 10.0]);
    for p in WORKBOOK {
        let by_hand = 100.0 * p.burn_rate(THIRTY_DAYS) * p.long_s as f64 / THIRTY_DAYS as f64;
        assert!(close(by_hand, p.budget_consumed_percent(THIRTY_DAYS)));
    }
}

#[test]
fn thresholds_are_burn_rate_times_error_budget() -> Result<()> {
    let cases: [(f64, [f64; 4]); 4] = [
        (99.95, [0.0072, 0.003, 0.0015, 0.0005]), // 14.4 x 0.0005 = 0.0072
        (99.9, [0.0144, 0.006, 0.003, 0.001]),
        (99.0, [0.144, 0.06, 0.03, 0.01]),
        (95.0, [0.72, 0.3, 0.15, 0.05]),
    ];
    for (objective, want) in cases {
        let slo = parse(&format!(
            "service = \"s\"\n[[slo]]\nname = \"x\"\nobjective = {objective}\n[slo.ratio]\nnamespace = \"N\"\nbad = [\"B\"]\ntotal = [\"T\"]\n"
        ))?
        .slos
        .remove(0);
        assert!(close(slo.budget(), (100.0 - objective) / 100.0), "{objective}");
        let got: Vec<f64> = WORKBOOK.iter().map(|p| p.error_ratio_threshold(slo.window_s, slo.budget())).collect();
        assert_eq!(got, want, "objective {objective}");
    }
    Ok(())
}

#[test]
fn other_windows_keep_the_budget_shares_and_scale_the_burn_rates() -> Result<()> {
    // Sloth's 28-day windows: 13.44, 5.6, 2.8, 0.933...
    let w = parse_window("28d")?;
    let burn: Vec<f64> = WORKBOOK.iter().map(|p| p.burn_rate(w)).collect();
    assert_eq!(&burn[..3], [13.44, 5.6, 2.8]);
    assert!(close(burn[3], 28.0 / 30.0));
    let consumed: Vec<f64> = WORKBOOK.iter().map(|p| p.budget_consumed_percent(w)).collect();
    assert_eq!(consumed, [2.0, 5.0, 10.0, 10.0]);
    Ok(())
}

#[test]
fn every_window_fits_one_cloudwatch_alarm_period() {
    // Period * EvaluationPeriods <= 7 days, and <= 1 day for periods under an hour.
    for p in WORKBOOK {
        for w in [p.long_s, p.short_s] {
            assert!(w.is_multiple_of(60) && w <= max_evaluation_range_s(w), "{}", span(w));
        }
    }
    assert_eq!(max_evaluation_range_s(1_800), 86_400);
    assert_eq!(max_evaluation_range_s(3_600), 604_800);
    assert_eq!([300, 1_800, 3_600, 7_200, 21_600, 86_400, 259_200].map(span), ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]);
}

// ------------------------------------------------------------------ validation

/// A minimal valid spec with `extra` spliced into the SLO table.
fn one_slo(slo_fields: &str, sli: &str) -> String {
    format!("service = \"s\"\n[[slo]]\nname = \"x\"\n{slo_fields}\n{sli}\n")
}

const RATIO: &str = "[slo.ratio]\nnamespace = \"AWS/ApplicationELB\"\nbad = [\"HTTPCode_Target_5XX_Count\"]\ntotal = [\"RequestCount\"]";

fn error(spec: &str) -> String {
    match parse(spec) {
        Ok(m) => panic!("accepted: {m:?}\n{spec}"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_error(spec: &str, want: &[&str]) {
    let e = error(spec);
    for w in want {
        assert!(e.contains(w), "`{w}` not in: {e}");
    }
    assert!(e.starts_with(|c: char| c.is_ascii_lowercase()), "lowercase errors: {e}");
}

#[test]
fn unknown_fields_are_named() {
    assert_error("service = \"s\"\nslos = []\n", &["line 2, `slos = []`: unknown field `slos`, expected one of"]);
    assert_error(&one_slo("objective = 99.9\nobjectiv = 1", RATIO), &["unknown field `objectiv`"]);
    assert_error(&one_slo("objective = 99.9", &format!("{RATIO}\nstatistics = \"Sum\"")), &["unknown field `statistics`"]);
    assert_error(&format!("{}\n[severity]\npager = \"critical\"\n", one_slo("objective = 99.9", RATIO)), &["unknown field `pager`"]);
}

#[test]
fn objective_must_be_strictly_between_0_and_100() {
    for bad in ["100", "0", "-1", "150", "100.0"] {
        assert_error(&one_slo(&format!("objective = {bad}"), RATIO), &["slo `x`: objective", "out of range", "between 0 and 100"]);
    }
    assert_error(&one_slo("", RATIO), &["missing field `objective`"]);
    assert_error(&one_slo("objective = \"99.9\"", RATIO), &["line 4, `objective = \"99.9\"`: invalid type: string"]);
    // Too low for the workbook's page burn rate: the 1h alert could never fire.
    assert_error(&one_slo("objective = 90", RATIO), &["slo `x`: objective 90", "error ratio of 1.44", "above 93.0"]);
    assert!(parse(&one_slo("objective = 93.5", RATIO)).is_ok());
}

#[test]
fn windows_are_whole_days_from_7_to_90() {
    for (w, want) in [
        ("30", "not a number of days like 30d"),
        ("30 days", "not a number of days"),
        ("d", "not a number of days"),
        ("-3d", "not a number of days"),
        ("1.5d", "not a number of days"),
        ("720h", "not a number of days"),
        ("5d", "out of range: give 7d to 90d"),
        ("365d", "out of range"),
    ] {
        assert_error(&one_slo(&format!("objective = 99.9\nwindow = \"{w}\""), RATIO), &["slo `x`: window", want]);
    }
    assert_eq!(parse(&one_slo("objective = 99.9\nwindow = \"28d\"", RATIO)).map(|m| m.slos[0].window_s).ok(), Some(28 * 86_400));
    assert_eq!(parse(&one_slo("objective = 99.9", RATIO)).map(|m| m.slos[0].window_s).ok(), Some(THIRTY_DAYS), "default 30d");
}

#[test]
fn metric_names_must_be_given() {
    let sli = |bad: &str, total: &str| format!("[slo.ratio]\nnamespace = \"N\"\nbad = {bad}\ntotal = {total}");
    assert_error(&one_slo("objective = 99.9", &sli("[\"\"]", "[\"T\"]")), &["slo `x`: ratio.bad: empty metric name"]);
    assert_error(&one_slo("objective = 99.9", &sli("[\"B\"]", "[\" \"]")), &["ratio.total: empty metric name"]);
    assert_error(&one_slo("objective = 99.9", &sli("[]", "[\"T\"]")), &["ratio.bad is empty"]);
    assert_error(&one_slo("objective = 99.9", &sli("[\"B\", \"B\"]", "[\"T\"]")), &["ratio.bad: a metric is listed twice"]);
    assert_error(
        &one_slo("objective = 99.9", "[slo.ratio]\nnamespace = \"\"\nbad = [\"B\"]\ntotal = [\"T\"]"),
        &["ratio.namespace is empty"],
    );
    assert_error(&one_slo("objective = 99.9", "[slo.ratio]\nnamespace = \"N\"\ntotal = [\"T\"]"), &["missing field `bad`"]);
    assert_error(
        &one_slo("objective = 99", "[slo.latency]\nnamespace = \"AWS/ApplicationELB\"\nmetric = \"\"\nthreshold = 1.0"),
        &["latency.metric: empty metric name"],
    );
    assert_error(
        &one_slo("objective = 99", "[slo.latency]\nnamespace = \"AWS/ApplicationELB\"\nmetric = \"TargetResponseTime\"\nthreshold = 0"),
        &["latency.threshold 0 must be above 0"],
    );
}

#[test]
fn an_slo_has_exactly_one_sli() {
    assert_error(&one_slo("objective = 99.9", ""), &["slo `x`: no SLI"]);
    let latency = "[slo.latency]\nnamespace = \"AWS/ApplicationELB\"\nmetric = \"TargetResponseTime\"\nthreshold = 0.5";
    assert_error(&one_slo("objective = 99.9", &format!("{RATIO}\n{latency}")), &["not both"]);
    assert_error(
        &one_slo("objective = 99.9", &format!("{RATIO}\nstatistic = \"Average\"")),
        &["ratio.statistic: `Average` is not Sum or SampleCount"],
    );
}

#[test]
fn names_parameters_labels_and_severities_are_checked() {
    assert_error(&one_slo("objective = 99.9", RATIO).replace("name = \"x\"", "name = \"Availability\""), &["slo `Availability`: name"]);
    assert_error(
        &format!("{}[[slo]]\nname = \"x\"\nobjective = 99\n{RATIO}\n", one_slo("objective = 99.9", RATIO)),
        &["slo `x`: a second SLO"],
    );
    let dims = |v: &str| one_slo("objective = 99.9", &format!("{RATIO}\ndimensions = {{ LoadBalancer = \"{v}\" }}"));
    assert_error(
        &dims("${LoadBalancer}"),
        &["ratio.dimensions.LoadBalancer: `${LoadBalancer}` is not declared: add [parameters.LoadBalancer]"],
    );
    assert_error(&dims("app/${LoadBalancer}"), &["must be the whole value"]);
    assert_error(&dims(""), &["ratio.dimensions.LoadBalancer is empty"]);
    let with_parameter = |name: &str| {
        one_slo("objective = 99.9", RATIO).replacen(
            "service = \"s\"\n",
            &format!("service = \"s\"\n[parameters.{name}]\ndescription = \"d\"\n"),
            1,
        )
    };
    let unused = with_parameter("TargetGroup");
    assert_error(&unused, &["parameters.TargetGroup: declared but no dimension or value uses `${TargetGroup}`"]);
    assert_error(&with_parameter("NamePrefix"), &["parameters.NamePrefix: `NamePrefix` is a parameter kbha slo render declares itself"]);
    assert_error(&with_parameter("AlertRouterAliasArn"), &["parameters.AlertRouterAliasArn"]);
    assert_error(&with_parameter("SloAlarmsTopic"), &["parameters.SloAlarmsTopic: names starting with Slo"]);
    assert_error(&format!("labels = {{ severity = \"critical\" }}\n{}", one_slo("objective = 99.9", RATIO)), &["labels.severity"]);
    assert_error(&format!("labels = {{ team = \"two words\" }}\n{}", one_slo("objective = 99.9", RATIO)), &["labels.team"]);
    assert_error(
        &format!("{}[severity]\npage = \"urgent\"\n", one_slo("objective = 99.9", RATIO)),
        &["severity: `urgent` is not one of critical, warning, info"],
    );
    assert_error("service = \"s\"\n", &["nothing to render"]);
}

#[test]
fn capacity_is_checked() {
    let base = "service = \"s\"\n[parameters.Desired]\ntype = \"Number\"\ndescription = \"d\"\n[capacity]\nnamespace = \"AWS/ApplicationELB\"\nmetric = \"HealthyHostCount\"\n";
    assert_error(base, &["capacity: the full capacity is missing"]);
    assert!(parse(&format!("{base}desired = \"${{Desired}}\"\n")).is_ok());
    assert_error(&format!("{base}desired = 0\n"), &["capacity.desired 0"]);
    assert_error(&format!("{base}desired = 2.5\n"), &["capacity.desired: a float"]);
    assert_error(
        &format!("{base}desired = \"${{Other}}\"\n"),
        &["`${Other}` is not declared as a [parameters.Other] with type = \"Number\""],
    );
    assert_error(&format!("{base}desired = \"${{Desired}}\"\nmin_fraction = 1\n"), &["capacity.min_fraction 1 is out of range"]);
    assert_error(&format!("{base}desired = \"${{Desired}}\"\nfor = \"2h\"\n"), &["capacity.for: `2h`"]);
    assert_error(&format!("{base}desired = \"${{Desired}}\"\nseverity = \"page\"\n"), &["capacity.severity: `page`"]);
    assert_error(&format!("{base}desired = \"${{Desired}}\"\nduration = \"2m\"\n"), &["unknown field `duration`"]);
}

// ------------------------------------------------------------------ the rendered template

fn resources(t: &Json) -> Vec<(&String, &Json)> {
    t["Resources"].as_object().map(|m| m.iter().collect()).unwrap_or_default()
}

#[test]
fn the_sample_renders_eight_window_alarms_and_two_composites_per_slo() -> Result<()> {
    let model = parse(SAMPLE)?;
    let names: Vec<&str> = model.slos.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["availability", "latency-p95", "latency-p99", "errors"]);
    assert_eq!(model.slos.iter().map(|s| s.objective).collect::<Vec<_>>(), [99.95, 95.0, 99.0, 99.9]);
    let t = rendered_sample()?;
    let count = |kind: &str| resources(&t).iter().filter(|(_, r)| r["Type"] == kind).count();
    assert_eq!(count("AWS::CloudWatch::Alarm"), 4 * 8 + 1);
    assert_eq!(count("AWS::CloudWatch::CompositeAlarm"), 4 * 2);
    assert_eq!(resources(&t).len(), 41);

    let page1h = &t["Resources"]["SloAvailabilityPage1h"]["Properties"];
    assert_eq!(page1h["Threshold"], 14.4);
    assert_eq!(page1h["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(page1h["EvaluationPeriods"], 1);
    assert_eq!(page1h["TreatMissingData"], "notBreaching");
    let metrics = page1h["Metrics"].as_array().map(Vec::as_slice).unwrap_or_default();
    assert_eq!(metrics.len(), 4);
    assert_eq!(metrics[3]["Expression"], "(FILL(bad1, 0) + FILL(bad2, 0)) / (total1) / 0.0005");
    for m in &metrics[..3] {
        assert_eq!(m["MetricStat"]["Period"], 3600);
        assert_eq!(m["MetricStat"]["Stat"], "Sum");
        assert_eq!(m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"], "LoadBalancer");
    }
    assert!(page1h.get("AlarmActions").is_none(), "window alarms notify through their composite only");

    let ticket3d = &t["Resources"]["SloAvailabilityTicket3d"]["Properties"];
    assert_eq!(ticket3d["Threshold"], 1.0);
    assert_eq!(ticket3d["Metrics"][0]["MetricStat"]["Period"], 259_200);
    assert_eq!(t["Resources"]["SloAvailabilityTicket6h"]["Properties"]["Threshold"], 1.0);
    assert_eq!(t["Resources"]["SloAvailabilityPage6h"]["Properties"]["Threshold"], 6.0);

    let p95 = &t["Resources"]["SloLatencyP95Page5m"]["Properties"];
    assert_eq!(p95["Metrics"][0]["MetricStat"]["Stat"], "PR(:0.5)");
    assert_eq!(p95["Metrics"][0]["MetricStat"]["Period"], 300);
    assert_eq!(p95["Metrics"][1]["Expression"], "(100 - fast) / 100 / 0.05");
    assert_eq!(t["Resources"]["SloLatencyP99Page1h"]["Properties"]["Metrics"][0]["MetricStat"]["Stat"], "PR(:1)");

    let page = &t["Resources"]["SloAvailabilityPage"]["Properties"];
    assert_eq!(
        page["AlarmRule"]["Fn::Sub"],
        "(ALARM(\"${SloAvailabilityPage1h}\") AND ALARM(\"${SloAvailabilityPage5m}\")) OR (ALARM(\"${SloAvailabilityPage6h}\") AND ALARM(\"${SloAvailabilityPage30m}\"))"
    );
    assert_eq!(page["AlarmName"]["Fn::Sub"], "${NamePrefix}-slo-availability-page");
    assert_eq!(page["AlarmActions"][0]["Ref"], "AlarmsTopicArn");
    assert_eq!(page["OKActions"][0]["Ref"], "AlarmsTopicArn");
    let ticket = &t["Resources"]["SloAvailabilityTicket"]["Properties"];
    assert_eq!(
        ticket["AlarmRule"]["Fn::Sub"],
        "(ALARM(\"${SloAvailabilityTicket1d}\") AND ALARM(\"${SloAvailabilityTicket2h}\")) OR (ALARM(\"${SloAvailabilityTicket3d}\") AND ALARM(\"${SloAvailabilityTicket6h}\"))"
    );
    Ok(())
}

#[test]
fn composite_descriptions_carry_the_labels_the_router_reads() -> Result<()> {
    let t = rendered_sample()?;
    let mut seen = 0;
    for (id, r) in resources(&t) {
        let alerting = r["Type"] == "AWS::CloudWatch::CompositeAlarm" || r["Properties"].get("AlarmActions").is_some();
        if !alerting {
            continue;
        }
        seen += 1;
        let description = r["Properties"]["AlarmDescription"].as_str().unwrap_or_default();
        let name = format!("kbha-{id}");
        // The notification CloudWatch sends for a composite alarm, through SNS.
        let message = serde_json::json!({
            "AlarmName": name,
            "AlarmDescription": description,
            "AlarmArn": format!("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{name}"),
            "AWSAccountId": "123456789012",
            "NewStateValue": "ALARM",
            "StateChangeTime": "2026-11-26T10:00:00.000+0000",
            "AlarmRule": "ALARM(a) AND ALARM(b)",
        });
        let event = serde_json::json!({"Records": [{"EventSource": "aws:sns", "Sns": {
            "MessageId": "m", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:kbha-alarms",
            "Subject": "ALARM", "Message": message.to_string(), "Timestamp": "2026-11-26T10:00:01.000Z"}}]});
        let alerts = kbha_alert_router::normalise::normalise_event(&event, 0);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0].alert;
        assert_eq!(a.labels.get("service").map(String::as_str), Some("knowledgebeast"), "{description}");
        assert_eq!(a.region.as_deref(), Some("eu-west-1"));
        let severity = a.severity_hint.map(|s| s.as_str());
        if id.ends_with("Page") {
            assert_eq!(severity, Some("critical"), "{description}");
            assert_eq!(a.labels.get("alert").map(String::as_str), Some("page"));
        } else if id.ends_with("Ticket") {
            assert_eq!(severity, Some("warning"), "{description}");
            assert_eq!(a.labels.get("alert").map(String::as_str), Some("ticket"));
        } else {
            assert_eq!(id, "FailoverRequiredAlarm");
            assert_eq!(severity, Some("critical"));
            assert_eq!(a.labels.get("rule").map(String::as_str), Some("failover-required"));
        }
        if id.starts_with("Slo") {
            let slo = a.labels.get("slo").cloned().unwrap_or_default();
            assert!(["availability", "latency-p95", "latency-p99", "errors"].contains(&slo.as_str()), "{description}");
            assert_eq!(
                composite_logical_id(
                    &parse(SAMPLE)?.slos.into_iter().find(|s| s.name == slo).ok_or_else(|| anyhow!("{slo}"))?,
                    if id.ends_with("Page") { AlertClass::Page } else { AlertClass::Ticket }
                ),
                *id
            );
        }
    }
    assert_eq!(seen, 9, "8 composites and FailoverRequired");
    Ok(())
}

#[test]
fn every_alarm_stays_within_cloudwatch_and_cloudformation_limits() -> Result<()> {
    let t = rendered_sample()?;
    let ids: BTreeSet<&String> = resources(&t).into_iter().map(|(id, _)| id).collect();
    for (id, r) in resources(&t) {
        let p = &r["Properties"];
        let description = p["AlarmDescription"].as_str().unwrap_or_default();
        assert!(!description.is_empty() && description.len() <= 1024, "{id}");
        let name = p["AlarmName"]["Fn::Sub"].as_str().unwrap_or_default().replace("${NamePrefix}", "kbha-longest-prefix1");
        assert!(name.len() <= 255 && name.starts_with("kbha-longest-prefix1-"), "{id}: {name}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
        if r["Type"] == "AWS::CloudWatch::CompositeAlarm" {
            let rule = p["AlarmRule"]["Fn::Sub"].as_str().unwrap_or_default();
            for part in rule.split("${").skip(1) {
                let child = part.split('}').next().unwrap_or_default().to_owned();
                assert!(ids.contains(&child), "{id} refers to {child}");
            }
            continue;
        }
        let metrics = p["Metrics"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert_eq!(metrics.iter().filter(|m| m["ReturnData"] == true).count(), 1, "{id}: one result");
        assert!(metrics.len() <= 11, "{id}");
        let mut periods = BTreeSet::new();
        for m in metrics {
            let qid = m["Id"].as_str().unwrap_or_default();
            assert!(
                qid.starts_with(|c: char| c.is_ascii_lowercase()) && qid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{id}: {qid}"
            );
            if let Some(period) = m["MetricStat"]["Period"].as_u64() {
                periods.insert(period);
            }
        }
        assert_eq!(periods.len(), 1, "{id}: one period");
        let period = periods.into_iter().next().unwrap_or_default();
        let evaluation = p["EvaluationPeriods"].as_u64().unwrap_or_default();
        assert!(period.is_multiple_of(60) && period * evaluation <= max_evaluation_range_s(period), "{id}: {period} x {evaluation}");
        assert!(p["DatapointsToAlarm"].as_u64().unwrap_or_default() <= evaluation);
    }
    Ok(())
}

#[test]
fn failover_required_is_healthy_over_desired_under_half_for_two_minutes() -> Result<()> {
    let t = rendered_sample()?;
    let p = &t["Resources"]["FailoverRequiredAlarm"]["Properties"];
    assert_eq!(p["AlarmName"]["Fn::Sub"], "${NamePrefix}-failover-required");
    assert_eq!(p["Metrics"][0]["MetricStat"]["Metric"]["MetricName"], "HealthyHostCount");
    assert_eq!(p["Metrics"][0]["MetricStat"]["Stat"], "Minimum");
    assert_eq!(p["Metrics"][0]["MetricStat"]["Period"], 60);
    assert_eq!(p["Metrics"][1]["Expression"]["Fn::Sub"], "healthy / ${DesiredCapacity}");
    assert_eq!((p["Threshold"].as_f64(), p["ComparisonOperator"].as_str()), (Some(0.5), Some("LessThanThreshold")));
    assert_eq!((p["EvaluationPeriods"].as_u64(), p["DatapointsToAlarm"].as_u64()), (Some(2), Some(2)));
    assert_eq!(p["TreatMissingData"], "breaching");
    assert_eq!(t["Parameters"]["DesiredCapacity"]["Type"], "Number");
    assert_eq!(t["Outputs"]["FailoverRequiredAlarmArn"]["Value"]["Fn::GetAtt"][0], "FailoverRequiredAlarm");

    // A desired metric instead of a number.
    let spec = "service = \"s\"\n[capacity]\nnamespace = \"AWS/ApplicationELB\"\nmetric = \"HealthyHostCount\"\n[capacity.desired_metric]\nnamespace = \"ECS/ContainerInsights\"\nmetric = \"DesiredTaskCount\"\ndimensions = { ClusterName = \"api\", ServiceName = \"api\" }\n";
    let t: Json = serde_json::from_str(&render(&parse(spec)?, Topic::Parameter)?)?;
    let p = &t["Resources"]["FailoverRequiredAlarm"]["Properties"];
    assert_eq!(p["Metrics"][1]["MetricStat"]["Metric"]["MetricName"], "DesiredTaskCount");
    assert_eq!(p["Metrics"][1]["MetricStat"]["Stat"], "Maximum");
    assert_eq!(p["Metrics"][2]["Expression"], "healthy / desired");
    Ok(())
}

#[test]
fn parameters_come_first_with_the_stacks_and_then_the_specs() -> Result<()> {
    let t = rendered_sample()?;
    let params = t["Parameters"].as_object().map(|m| m.keys().cloned().collect::<BTreeSet<_>>()).unwrap_or_default();
    assert_eq!(params, ["AlarmsTopicArn", "DesiredCapacity", "LoadBalancer", "NamePrefix", "TargetGroup"].map(String::from).into());
    assert_eq!(t["Parameters"]["NamePrefix"]["Default"], "kbha");
    assert_eq!(t["Parameters"]["LoadBalancer"]["AllowedPattern"], "^app/[A-Za-z0-9-]+/[0-9a-f]+$");
    assert!(t["Parameters"]["AlarmsTopicArn"].get("Default").is_none());
    Ok(())
}

#[test]
fn rendering_is_stable_and_the_checked_in_golden_file_is_up_to_date() -> Result<()> {
    let fresh = render(&parse(SAMPLE)?, Topic::Parameter)?;
    assert_eq!(fresh, render(&parse(SAMPLE)?, Topic::Parameter)?, "same bytes on every render");
    let path = golden_path();
    if std::env::var_os("KBHA_BLESS").is_some() {
        std::fs::write(&path, &fresh)?;
    }
    let checked_in = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    assert!(
        checked_in == fresh,
        "{} is out of date: regenerate it with\n  cargo kbha slo render --spec samples/slo/knowledgebeast.toml --out samples/slo/knowledgebeast.rendered.json\n(or KBHA_BLESS=1 cargo test -p kbha --lib slo) and review the diff",
        path.display()
    );
    Ok(())
}

#[test]
fn create_topic_makes_the_topic_the_router_subscribes_to() -> Result<()> {
    let t: Json = serde_json::from_str(&render(&parse(SAMPLE)?, Topic::Create)?)?;
    let params = t["Parameters"].as_object().map(|m| m.keys().cloned().collect::<BTreeSet<_>>()).unwrap_or_default();
    assert!(params.contains("AlertRouterAliasArn") && !params.contains("AlarmsTopicArn"), "{params:?}");
    let r = &t["Resources"];
    assert_eq!(r["SloAlarmsTopic"]["Type"], "AWS::SNS::Topic");
    assert_eq!(r["SloAlarmsTopic"]["Properties"]["TopicName"]["Fn::Sub"], "${NamePrefix}-slo-alarms");
    assert_eq!(r["SloAlarmsTopic"]["Metadata"]["checkov"]["skip"][0]["id"], "CKV_AWS_26");
    let statement = &r["SloAlarmsTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(
        (&statement["Principal"]["Service"], &statement["Action"]),
        (&Json::from("cloudwatch.amazonaws.com"), &Json::from("sns:Publish"))
    );
    assert_eq!(r["SloAlarmsRouterSubscription"]["Properties"]["Endpoint"]["Ref"], "AlertRouterAliasArn");
    assert_eq!(r["SloAlarmsRouterSubscription"]["Properties"]["Protocol"], "lambda");
    let mut alerting = 0;
    for (id, res) in resources(&t) {
        if let Some(actions) = res["Properties"].get("AlarmActions") {
            alerting += 1;
            assert_eq!(actions[0]["Ref"], "SloAlarmsTopic", "{id}");
            assert_eq!(res["Properties"]["OKActions"][0]["Ref"], "SloAlarmsTopic", "{id}");
        }
    }
    assert_eq!(alerting, 9);
    assert_eq!(t["Outputs"]["SloAlarmsTopicArn"]["Value"]["Ref"], "SloAlarmsTopic");
    Ok(())
}
