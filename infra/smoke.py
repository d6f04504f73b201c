#!/usr/bin/env python3
"""Emulator side of the deploy smoke test in .ci/infra-checks.sh.

Runs with the emulator venv's boto3 against the local AWS emulator
(tests/emulator/kbha_emulator.py) at $AWS_ENDPOINT_URL:

    smoke.py provision <env-file>   zone + weighted records + health checks (primary
                                    unhealthy), notice topic with a queue, state bucket;
                                    writes the failover's KBHA_* variables to <env-file>
    smoke.py check-failover <env-file>
                                    after one invocation with the primary's alarm: reads the
                                    weights back through Route 53 and the notice through SQS
    smoke.py role                   creates the execution role `cargo lambda deploy` is given
    smoke.py check-deployed <name> <env-file> <zip-size-min>
                                    GetFunction: the function exists with the runtime,
                                    architecture and settings from Cargo.toml's
                                    [package.metadata.lambda.deploy] (RUST_LOG from its env),
                                    and the KBHA_* variables from <env-file>
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import boto3

ZONE = "example.com."
RECORD = "app.example.com."
STATE_BUCKET = "kbha-state"
ALARM = "kbha-api-primary-unhealthy"  # the alarm in samples/events/cloudwatch-alarm-sns.json


def client(service: str):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def set_health(health_check_id: str, status: str) -> None:
    req = urllib.request.Request(
        f"{os.environ['AWS_ENDPOINT_URL']}/_kbha/health-checks/{health_check_id}",
        data=json.dumps({"status": status}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 200:
            sys.exit(f"control API answered {resp.status} for health check {health_check_id}")


def provision(env_file: str) -> None:
    r53 = client("route53")
    zone_id = r53.create_hosted_zone(Name=ZONE, CallerReference="kbha-smoke")["HostedZone"]["Id"].split("/")[-1]
    targets, changes = [], []
    for ident, region, weight, value, status in (
        ("primary", "us-east-1", 100, "192.0.2.10", "unhealthy"),
        ("secondary", "us-west-2", 0, "198.51.100.10", "healthy"),
    ):
        hc = r53.create_health_check(
            CallerReference=f"kbha-smoke-{ident}",
            HealthCheckConfig={
                "Type": "HTTPS",
                "FullyQualifiedDomainName": f"{ident}.example.com",
                "Port": 443,
                "ResourcePath": "/health",
            },
        )["HealthCheck"]["Id"]
        set_health(hc, status)
        changes.append(
            {
                "Action": "CREATE",
                "ResourceRecordSet": {
                    "Name": RECORD,
                    "Type": "A",
                    "SetIdentifier": ident,
                    "Weight": weight,
                    "TTL": 60,
                    "ResourceRecords": [{"Value": value}],
                    "HealthCheckId": hc,
                },
            }
        )
        target = {"set_identifier": ident, "region": region, "health_check_id": hc}
        if ident == "primary":
            target.update(primary=True, alarms=[ALARM])
        targets.append(target)
    r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})

    topic = client("sns").create_topic(Name="kbha-notices")["TopicArn"]
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName="kbha-notices-smoke")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    client("s3").create_bucket(Bucket=STATE_BUCKET)

    env = {
        "KBHA_HOSTED_ZONE_ID": zone_id,
        "KBHA_RECORD_NAME": RECORD,
        "KBHA_TARGETS": json.dumps(targets, separators=(",", ":")),
        "KBHA_NOTIFY_TOPIC_ARN": topic,
        "KBHA_STATE_BUCKET": STATE_BUCKET,
        "KBHA_SMOKE_QUEUE_URL": queue_url,
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    # Single quotes: the env-file reader takes the JSON list verbatim.
    with open(env_file, "w") as f:
        f.writelines(f"{k}='{v}'\n" for k, v in env.items())


def read_env(env_file: str) -> dict[str, str]:
    env = {}
    for line in open(env_file):
        k, _, v = line.strip().partition("=")
        env[k] = v.strip("'")
    return env


def check_failover(env_file: str) -> None:
    env = read_env(env_file)
    sets = client("route53").list_resource_record_sets(HostedZoneId=env["KBHA_HOSTED_ZONE_ID"])["ResourceRecordSets"]
    weights = {r["SetIdentifier"]: r["Weight"] for r in sets if r["Name"] == RECORD and "SetIdentifier" in r}
    if weights != {"primary": 0, "secondary": 100}:
        sys.exit(f"expected the failover to move traffic to the secondary, Route 53 has {weights}")
    sqs = client("sqs")
    deadline = time.time() + 10
    while time.time() < deadline:
        msgs = sqs.receive_message(QueueUrl=env["KBHA_SMOKE_QUEUE_URL"], WaitTimeSeconds=1).get("Messages", [])
        for m in msgs:
            notice = json.loads(json.loads(m["Body"])["Message"])
            if notice.get("new_weights") or notice.get("type"):
                print(f"route 53 weights {weights}; notice {notice.get('type')}: {notice.get('summary')}")
                return
    sys.exit("no notice arrived on the notice topic")


def role() -> None:
    iam = client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    print(iam.create_role(RoleName="kbha-smoke", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])


def check_deployed(name: str, env_file: str, min_size: int) -> None:
    fn = client("lambda").get_function(FunctionName=name)["Configuration"]
    variables = fn.get("Environment", {}).get("Variables", {})
    want_env = {k: v for k, v in read_env(env_file).items() if k.startswith("KBHA_")}
    want_env["RUST_LOG"] = "info"
    wrong = {k: variables.get(k) for k, v in want_env.items() if variables.get(k) != v}
    if wrong:
        sys.exit(f"GetFunction {name}: environment differs from the env file and Cargo.toml: {wrong}")
    want = {
        "Runtime": "provided.al2023",
        "Architectures": ["arm64"],
        "Handler": "bootstrap",
        "MemorySize": 256,
        "Timeout": 60,
    }
    got = {k: fn.get(k) for k in want}
    if got != want:
        sys.exit(f"GetFunction {name}: expected {want}, got {got}")
    if fn.get("TracingConfig", {}).get("Mode") != "Active":
        sys.exit(f"GetFunction {name}: tracing is {fn.get('TracingConfig')}, Cargo.toml says active")
    if fn.get("CodeSize", 0) < min_size:
        sys.exit(f"GetFunction {name}: code size {fn.get('CodeSize')} is smaller than the zipped binary")
    print(f"GetFunction {name}: {got}, tracing Active, {len(variables)} variables, {fn['CodeSize']} bytes of code")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "provision":
        provision(*args)
    elif cmd == "check-failover":
        check_failover(*args)
    elif cmd == "role":
        role()
    elif cmd == "check-deployed":
        check_deployed(args[0], args[1], int(args[2]))
    else:
        sys.exit(f"unknown command `{cmd}`")
