#!/usr/bin/env python3
"""Emulator side of the deploy smoke test in .ci/infra-checks.sh.

Runs with the emulator venv's boto3 against the local AWS emulator
(tests/emulator/kbha_emulator.py) at $AWS_ENDPOINT_URL:

    smoke.py provision <dir>        what the three functions need, as the template wires it:
                                    zone + weighted records + health checks (primary
                                    unhealthy), notice and severity topics with a queue
                                    each, state bucket, backup bucket with the backup of
                                    samples/events/s3-object-created.json; writes each
                                    function's variables to <dir>/<package>.env
    smoke.py check <package> <dir>  after one invocation of that function on its sample
                                    event, reads the result back through the AWS APIs:
                                    Route 53 weights and the notice (failover), the
                                    verification record and status object (verifier), a
                                    delivery on a severity topic (alert router)
    smoke.py role                   creates the execution role `cargo lambda deploy` is given
    smoke.py check-deployed <name> <env-file> <package.zip> <bootstrap>
                                    GetFunction: the function exists with the runtime,
                                    architecture and settings from Cargo.toml's
                                    [package.metadata.lambda.deploy] (RUST_LOG from its env),
                                    and the KBHA_* variables from <env-file>; its code is
                                    <package.zip> (size, SHA-256) holding <bootstrap>
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import boto3

ZONE = "example.com."
RECORD = "app.example.com."
STATE_BUCKET = "kbha-state"
ALARM = "kbha-api-primary-unhealthy"  # the alarm in samples/events/cloudwatch-alarm-sns.json
SEVERITIES = ("critical", "warning", "info")
BACKUP_EVENT = "samples/events/s3-object-created.json"


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


def topic_with_queue(name: str) -> tuple[str, str]:
    topic = client("sns").create_topic(Name=name)["TopicArn"]
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{name}-smoke")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, queue_url


def backup_object() -> tuple[str, str]:
    """The bucket and (URL-decoded) key of the sample S3 event."""
    s3 = json.load(open(BACKUP_EVENT))["Records"][0]["s3"]
    return s3["bucket"]["name"], urllib.parse.unquote_plus(s3["object"]["key"])


def tar_gz() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, body in (("chroma/data.bin", os.urandom(4096)), ("chroma/meta.json", b'{"collections": 3}')):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return raw.getvalue()


def write_env(path: str, env: dict[str, str]) -> None:
    aws = {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    # Single quotes: the env-file reader takes JSON values verbatim.
    with open(path, "w") as f:
        f.writelines(f"{k}='{v}'\n" for k, v in {**env, **aws}.items())


def provision(out: str) -> None:
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

    notices, notices_queue = topic_with_queue("kbha-notices")
    client("s3").create_bucket(Bucket=STATE_BUCKET)
    write_env(
        f"{out}/kbha-failover.env",
        {
            "KBHA_HOSTED_ZONE_ID": zone_id,
            "KBHA_RECORD_NAME": RECORD,
            "KBHA_TARGETS": json.dumps(targets, separators=(",", ":")),
            "KBHA_NOTIFY_TOPIC_ARN": notices,
            "KBHA_STATE_BUCKET": STATE_BUCKET,
            "KBHA_REPLICATION_STATUS": f"s3://{STATE_BUCKET}/kbha/replication/status/",
            "KBHA_SMOKE_QUEUE_URL": notices_queue,
        },
    )

    bucket, key = backup_object()
    client("s3").create_bucket(Bucket=bucket)
    client("s3").put_object(Bucket=bucket, Key=key, Body=tar_gz())
    source = {"name": "chromadb", "bucket": bucket, "prefix": key.split("/")[0] + "/", "region": "us-east-1"}
    write_env(
        f"{out}/kbha-replication-verifier.env",
        {
            "KBHA_BACKUP_SOURCES": json.dumps([source], separators=(",", ":")),
            "KBHA_STATE_BUCKET": STATE_BUCKET,
            "KBHA_NOTIFY_TOPIC_ARN": notices,
        },
    )

    destinations, queues = {}, {}
    for severity in SEVERITIES:
        destinations[severity], queues[severity] = topic_with_queue(f"kbha-alerts-{severity}")
    write_env(
        f"{out}/kbha-alert-router.env",
        {
            "KBHA_DESTINATIONS": json.dumps(destinations, separators=(",", ":")),
            "KBHA_DEFAULT_DESTINATION": "critical",
            "KBHA_STATE_BUCKET": STATE_BUCKET,
            "KBHA_SMOKE_QUEUES": json.dumps(queues, separators=(",", ":")),
        },
    )


def read_env(env_file: str) -> dict[str, str]:
    env = {}
    for line in open(env_file):
        k, _, v = line.strip().partition("=")
        env[k] = v.strip("'")
    return env


def receive(queue_url: str, secs: float) -> list[dict]:
    sqs = client("sqs")
    deadline = time.time() + secs
    while time.time() < deadline:
        msgs = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", [])
        if msgs:
            return [json.loads(m["Body"]) for m in msgs]
    return []


def check_failover(out: str) -> None:
    env = read_env(f"{out}/kbha-failover.env")
    sets = client("route53").list_resource_record_sets(HostedZoneId=env["KBHA_HOSTED_ZONE_ID"])["ResourceRecordSets"]
    weights = {r["SetIdentifier"]: r["Weight"] for r in sets if r["Name"] == RECORD and "SetIdentifier" in r}
    if weights != {"primary": 0, "secondary": 100}:
        sys.exit(f"expected the failover to move traffic to the secondary, Route 53 has {weights}")
    for envelope in receive(env["KBHA_SMOKE_QUEUE_URL"], 10):
        notice = json.loads(envelope["Message"])
        print(f"route 53 weights {weights}; notice {notice.get('type')}: {notice.get('summary')}")
        return
    sys.exit("no notice arrived on the notice topic")


def check_verifier(out: str) -> None:
    bucket, key = backup_object()
    s3 = client("s3")
    record_key = f"kbha/replication/records/{bucket}/{key}.json"
    try:
        record = json.loads(s3.get_object(Bucket=STATE_BUCKET, Key=record_key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        sys.exit(f"no verification record at s3://{STATE_BUCKET}/{record_key}")
    verdict = json.dumps(record.get("verdict", record))[:200]
    if "ok" not in verdict:
        sys.exit(f"a fresh, intact backup was not verified ok: {verdict}")
    try:
        status = json.loads(s3.get_object(Bucket=STATE_BUCKET, Key="kbha/replication/status/us-east-1.json")["Body"].read())
    except s3.exceptions.NoSuchKey:
        sys.exit("no status object for us-east-1, which the failover's RPO gate reads")
    print(f"verification record {record_key}: {verdict}; status {status}")


def check_router(out: str) -> None:
    queues = json.loads(read_env(f"{out}/kbha-alert-router.env")["KBHA_SMOKE_QUEUES"])
    deadline = time.time() + 10
    while time.time() < deadline:
        for severity, url in queues.items():
            for envelope in receive(url, 1):
                print(f"alert delivered on `{severity}`: {envelope.get('Subject')}")
                return
    sys.exit("the alarm reached none of the severity topics")


def role() -> None:
    iam = client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    print(iam.create_role(RoleName="kbha-smoke", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"])


def check_deployed(name: str, env_file: str, package: str, bootstrap: str) -> None:
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
    # The deployed code is the package cargo lambda zipped (Lambda reports its size and
    # base64 SHA-256), and the package holds the binary that was built.
    data = Path(package).read_bytes()
    want_code = {"CodeSize": len(data), "CodeSha256": base64.b64encode(hashlib.sha256(data).digest()).decode()}
    got_code = {k: fn.get(k) for k in want_code}
    if got_code != want_code:
        sys.exit(f"GetFunction {name}: deployed code {got_code}, but {package} is {want_code}")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        inside = z.read("bootstrap")
    if inside != Path(bootstrap).read_bytes():
        sys.exit(f"{package}: its bootstrap is not {bootstrap}")
    print(f"GetFunction {name}: {got}, tracing Active, {len(variables)} variables, {fn['CodeSize']} bytes of code")


def check_alias(name: str, alias: str) -> None:
    """The stack's triggers invoke the `live` alias (AutoPublishAlias): a code update must
    publish a version and move the alias to it, or the triggers keep running the old code."""
    lam = client("lambda")
    got = lam.get_alias(FunctionName=name, Name=alias)
    version = got["FunctionVersion"]
    if version == "$LATEST":
        sys.exit(f"alias {alias} of {name} points at $LATEST; a deploy must publish a version")
    latest = lam.get_function(FunctionName=name)["Configuration"]
    published = lam.get_function(FunctionName=name, Qualifier=version)["Configuration"]
    if published.get("CodeSha256") != latest.get("CodeSha256"):
        sys.exit(f"alias {alias} of {name} -> version {version}, whose code is not the code just deployed")
    print(f"alias {alias} of {name} -> version {version}, the code just deployed")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    checks = {"kbha-failover": check_failover, "kbha-replication-verifier": check_verifier, "kbha-alert-router": check_router}
    if cmd == "provision":
        provision(*args)
    elif cmd == "check":
        checks[args[0]](args[1])
    elif cmd == "role":
        role()
    elif cmd == "check-alias":
        check_alias(args[0], args[1])
    elif cmd == "check-deployed":
        check_deployed(args[0], args[1], args[2], args[3])
    else:
        sys.exit(f"unknown command `{cmd}`")
