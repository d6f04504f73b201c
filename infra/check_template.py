"""Checks infra/template.yaml: each function's role against infra/permissions.toml; that
infra/health-alarms.yaml defines the health-check alarms exactly as the main template; and
that every function has every self-monitoring alarm, each notifying the ops topic and none
the alert router's topics (a broken router must still page someone).

    .venv-infra/bin/python infra/check_template.py [template] [permissions]

A role must grant exactly the IAM actions of the calls its function makes (permissions.toml)
plus the platform's: a missing one fails in AWS with AccessDenied (as a pinned policy did
without s3:GetObjectVersion), an extra one is privilege nobody uses. Each bucket a function
reads policies from must also grant s3:GetObjectVersion next to s3:GetObject. Before the
real check, the checker proves it can fail: it must reject the template with an action
removed and with one added. Exits 1 with one line per problem. Runs in .ci/infra-checks.sh.
"""

import copy
import json
import sys
import tomllib
from pathlib import Path

from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parent.parent


def actions_of(statement):
    if statement.get("Effect") != "Allow":
        return set()
    action = statement.get("Action", [])
    return {action} if isinstance(action, str) else set(action)


def role_statements(template, role):
    """Every statement attached to `role`: inline policies and AWS::IAM::Policy resources."""
    resources = template["Resources"]
    props = resources[role].get("Properties", {})
    statements = []
    for policy in props.get("Policies", []):
        statements += policy["PolicyDocument"]["Statement"]
    for res in resources.values():
        if res.get("Type") == "AWS::IAM::Policy" and {"Ref": role} in res["Properties"].get("Roles", []):
            statements += res["Properties"]["PolicyDocument"]["Statement"]
    return statements, props.get("ManagedPolicyArns", [])


def problems(template, perms):
    out = []
    resources = template["Resources"]
    ops = perms["operations"]
    platform = set(perms["platform"]["actions"])
    functions = {
        name: res for name, res in resources.items() if res.get("Type") == "AWS::Serverless::Function"
    }
    roles_in_use = {json.dumps(res["Properties"].get("Role")): name for name, res in functions.items()}
    for fname, spec in perms["functions"].items():
        role = spec["role"]
        if role not in resources:
            out.append(f"{fname}: role {role} is not in the template")
            continue
        if json.dumps({"Fn::GetAtt": [role, "Arn"]}) not in roles_in_use:
            out.append(f"{fname}: no function in the template runs as {role}")
        unknown = [c for c in spec["calls"] if c not in ops]
        if unknown:
            out.append(f"{fname}: calls {unknown} are not in [operations]")
        want = set().union(*(set(ops.get(c, [])) for c in spec["calls"])) | platform
        if spec.get("versioned_reads"):
            want.add("s3:GetObjectVersion")
        statements, managed = role_statements(template, role)
        if managed:
            out.append(f"{fname}: {role} has managed policies {managed}; list their actions here instead")
        granted = set().union(*(actions_of(s) for s in statements)) if statements else set()
        for a in sorted(want - granted):
            out.append(f"{fname}: {role} does not grant {a}, which its calls need")
        for a in sorted(granted - want):
            out.append(f"{fname}: {role} grants {a}, which none of its calls in infra/permissions.toml needs")
        for bucket in spec.get("versioned_reads", []):
            reads = [s for s in statements if bucket in json.dumps(s.get("Resource"))]
            got = set().union(*(actions_of(s) for s in reads)) if reads else set()
            for a in ("s3:GetObject", "s3:GetObjectVersion"):
                if a not in got:
                    out.append(f"{fname}: {role} does not grant {a} on {bucket}; a pinned policy (?versionId=) would not load")
    listed = {spec["role"] for spec in perms["functions"].values()}
    for name, res in functions.items():
        role = res["Properties"].get("Role", {}).get("Fn::GetAtt", [None])[0]
        if role not in listed:
            out.append(f"{name}: runs as {role}, which infra/permissions.toml does not list")
    return out


ALARMS = ("PrimaryUnhealthyAlarm", "SecondaryUnhealthyAlarm")


def alarm_differences(main, companion):
    """The health-check alarms outside us-east-1 (infra/health-alarms.yaml) must be the main
    template's, property for property: the failover is configured with their ARNs, and a
    different threshold would make the placement change behaviour. Only the health check
    (a parameter there, a resource here) and the topic differ."""
    out = []

    def normal(props, health_ref, topic_ref):
        text = json.dumps(props, sort_keys=True)
        return text.replace(json.dumps(health_ref), '"<health check>"').replace(json.dumps(topic_ref), '"<topic>"')

    for name in ALARMS:
        which = name.removesuffix("UnhealthyAlarm")
        here = main["Resources"][name]
        there = companion["Resources"].get(name)
        if there is None:
            out.append(f"infra/health-alarms.yaml has no {name}")
            continue
        a = normal(here["Properties"], {"Ref": f"{which}HealthCheck"}, {"Ref": "AlarmsTopic"})
        b = normal(there["Properties"], {"Ref": f"{which}HealthCheckId"}, {"Ref": "HealthAlarmsTopic"})
        if a != b:
            out.append(f"{name} differs between infra/template.yaml and infra/health-alarms.yaml:\n  {a}\n  {b}")
    return out


# Alarm suffix -> (namespace, metric): every function has one of each.
MONITORS = {
    "ErrorsAlarm": ("AWS/Lambda", "Errors"),
    "ThrottlesAlarm": ("AWS/Lambda", "Throttles"),
    "DurationAlarm": ("AWS/Lambda", "Duration"),
    "AsyncDroppedAlarm": ("AWS/Lambda", "AsyncEventsDropped"),
    "AsyncAgeAlarm": ("AWS/Lambda", "AsyncEventAge"),
    "PolicyFaultsAlarm": ("kbha", "PolicyFaults"),
    "FallbacksAlarm": ("kbha", "Fallbacks"),
    "ShadowDisagreementsAlarm": ("kbha", "ShadowDisagreements"),
}
# Topics the alert router reads: kbha's own alarms must not depend on it.
ROUTER_TOPICS = ("AlarmsTopic", "NoticesTopic")


def monitoring_problems(template):
    out = []
    resources = template["Resources"]
    functions = [n.removesuffix("Function") for n, r in resources.items() if r.get("Type") == "AWS::Serverless::Function"]
    if not functions:
        out.append("no functions in the template")
    for fn in functions:
        for suffix, (namespace, metric) in MONITORS.items():
            name = f"{fn}{suffix}"
            alarm = resources.get(name)
            if alarm is None:
                out.append(f"{fn}: no {name} ({namespace} {metric})")
                continue
            props = alarm["Properties"]
            if (props.get("Namespace"), props.get("MetricName")) != (namespace, metric):
                out.append(f"{name}: watches {props.get('Namespace')} {props.get('MetricName')}, expected {namespace} {metric}")
            dims = json.dumps(props.get("Dimensions"))
            if f"{fn}Function" not in dims and fn.lower() not in dims.replace("-", "").lower():
                out.append(f"{name}: its dimensions {dims} do not name the {fn} function")
    own = [
        n for n, r in resources.items()
        if r.get("Type") == "AWS::CloudWatch::Alarm" and "component=kbha" in json.dumps(r["Properties"].get("AlarmDescription"))
    ]
    for name in own + ["FailoverDeadManAlarm", "DeadLettersAlarm"]:
        props = resources.get(name, {}).get("Properties")
        if props is None:
            out.append(f"no {name}")
            continue
        actions = props.get("AlarmActions", [])
        if {"Ref": "OpsTopic"} not in actions:
            out.append(f"{name}: does not notify the ops topic")
        for topic in ROUTER_TOPICS:
            if {"Ref": topic} in actions + props.get("OKActions", []):
                out.append(f"{name}: notifies {topic}, which goes through the alert router")
    return out


def main():
    template_path = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "infra/template.yaml"
    perms_path = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "infra/permissions.toml"
    template = cfn_yaml.load(str(template_path))
    perms = tomllib.loads(perms_path.read_text())

    # The check must be able to fail: one action taken away, one added.
    first = perms["functions"]["failover"]["role"]
    fewer = copy.deepcopy(template)
    for policy in fewer["Resources"][first]["Properties"]["Policies"]:
        for s in policy["PolicyDocument"]["Statement"]:
            if isinstance(s.get("Action"), list) and "s3:GetObjectVersion" in s["Action"]:
                s["Action"] = [a for a in s["Action"] if a != "s3:GetObjectVersion"]
    more = copy.deepcopy(template)
    more["Resources"][first]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": "*"}
    )
    for label, broken in (("without s3:GetObjectVersion", fewer), ("with s3:DeleteObject", more)):
        if not problems(broken, perms):
            print(f"check_template: the check passed a template {label}: it cannot fail", file=sys.stderr)
            return 1

    companion = cfn_yaml.load(str(REPO / "infra/health-alarms.yaml"))
    changed = copy.deepcopy(companion)
    changed["Resources"][ALARMS[0]]["Properties"]["Threshold"] = 2
    if not alarm_differences(template, changed):
        print("check_template: the alarm comparison passed a changed threshold: it cannot fail", file=sys.stderr)
        return 1

    unwatched = copy.deepcopy(template)
    del unwatched["Resources"]["AlertRouterThrottlesAlarm"]
    routed = copy.deepcopy(template)
    routed["Resources"]["FailoverDeadManAlarm"]["Properties"]["AlarmActions"].append({"Ref": "AlarmsTopic"})
    for label, broken in (("without a throttles alarm", unwatched), ("with the dead-man through the router", routed)):
        if not monitoring_problems(broken):
            print(f"check_template: the monitoring check passed a template {label}: it cannot fail", file=sys.stderr)
            return 1

    found = problems(template, perms) + alarm_differences(template, companion) + monitoring_problems(template)
    for p in found:
        print(p, file=sys.stderr)
    if found:
        print(f"{len(found)} permission problem(s): fix {template_path} or {perms_path}", file=sys.stderr)
        return 1
    n = len(perms["functions"])
    print(f"permissions: {n} roles grant exactly what their calls need (infra/permissions.toml)")
    print("placement: infra/health-alarms.yaml defines the health-check alarms as infra/template.yaml")
    print(f"monitoring: {len(MONITORS)} alarms for each function, the dead-man and the dead letters, all on the ops topic, none through the router")
    return 0


if __name__ == "__main__":
    sys.exit(main())
