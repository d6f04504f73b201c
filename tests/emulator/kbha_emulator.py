#!/usr/bin/env python3
"""kbha's local AWS emulator: moto's server plus what moto gets wrong for us.

Run by the Rust test harness (tests/harness); usable by hand too:

    .venv/bin/python tests/emulator/kbha_emulator.py [--port N]

It listens on 127.0.0.1 (port 0 = a free port), prints exactly one line
``KBHA_EMULATOR_READY <port>`` on stdout, and exits when stdin reaches EOF (so a
killed test process never leaves an orphan) or on SIGTERM/SIGINT.

On top of moto it adds:

* a strict Route 53 ChangeResourceRecordSets, as Route 53 documents it: the batch
  is validated whole and applied atomically; changes apply in order against the
  batch's evolving view (DELETE + CREATE of one record is the compare-and-swap
  idiom); DELETE must match the current record exactly; DELETE with a
  SetIdentifier touches only that name and type; CREATE of an existing record
  fails. Errors are InvalidChangeBatch in Route 53's current XML shape
  (``<ErrorResponse><Error><Type>Sender</Type><Code>InvalidChangeBatch</Code>
  <Message>[msg, msg]</Message>...``). Change ids are unique.
* ListResourceRecordSets paged like Route 53 (StartRecordIdentifier honoured).
* GetChange that answers PENDING for a change's first GetChange read(s), then INSYNC
  (see ``/_kbha/change-propagation``), and NoSuchChange (404, the XML error shape
  above) for an id ChangeResourceRecordSets here never issued (moto's fixed ids from
  CreateHostedZone and the like included; moto answers INSYNC for anything).
* GetHealthCheckStatus that reports what tests set through the control API,
  as observations from several checker regions like Route 53 does.
* CloudWatch PutCompositeAlarm, which moto 5.2 lacks (moto's alarms already model
  composite alarms: an alarm with a rule, listed by DescribeAlarms as CompositeAlarms).
* Lambda ListAliases by function ARN: moto 5 looks the ARN up still URL-encoded and
  answers ResourceNotFound; Lambda accepts a name or an ARN there as everywhere.
* a control API on the same port, under ``/_kbha/``:
    - ``PUT  /_kbha/health-checks/<id>`` body ``{"status": "healthy"|"unhealthy"}``
      or ``{"failing_checkers": n}`` (n of the 8 checkers report failure);
    - ``GET  /_kbha/health-checks/<id>``;
    - ``POST /_kbha/faults`` body ``{"service": "route53", "path_regex": "/rrset",
      "method": "POST", "status": 400, "code": "PriorRequestNotComplete",
      "message": "...", "count": 2}``: the next ``count`` matching requests get
      that error instead of reaching moto; with ``"delay_ms": n`` they are held n ms
      first (and without ``code`` then passed on: a slow service); with
      ``"reset": "before"`` the connection is reset (RST, no answer) before moto sees
      the request, with ``"reset": "after"`` once moto has handled it (the change is
      made, the answer is lost). Every key but one of ``code``, ``delay_ms`` or
      ``reset`` is optional; ``target`` matches X-Amz-Target; ``"skip": k`` lets the
      first k matching requests through untouched;
    - ``DELETE /_kbha/faults`` clears them; ``GET /_kbha/ping`` answers ``ok``;
    - ``GET /_kbha/changes/<zone id>``: the comments of every change batch the zone
      accepted, in order (so tests count changes, not just read the end state);
    - ``PUT /_kbha/change-propagation`` body ``{"pending_reads": n}``: a change made
      afterwards reports PENDING on its first n GetChange reads, INSYNC after (default 1;
      0: INSYNC at once), as Route 53 propagates a change in about a minute;
    - ``PUT /_kbha/alarm-state`` body ``{"region": "us-east-1", "name": "...",
      "state": "ALARM", "reason": "...", "since_ms": n}``: sets the alarm's state like
      SetAlarmState, but with StateUpdatedTimestamp = ``since_ms`` (ms since epoch)
      instead of the real clock, for tests that run in simulated time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import socket
import string
import struct
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from moto.cloudwatch.models import cloudwatch_backends
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.route53.exceptions import InvalidInput, Route53ClientError
from moto.route53.models import RecordSet, reverse_domain_name
from moto.route53.responses import Route53
from werkzeug.serving import make_server

# ------------------------------------------------------------------ Route 53 strict layer

# Record fields Route 53 compares when a DELETE names a record.
_COMPARED_FIELDS = (
    "TTL",
    "Weight",
    "Region",
    "Failover",
    "GeoLocation",
    "MultiValueAnswer",
    "HealthCheckId",
)


class StrictInvalidChangeBatch(Route53ClientError):
    """InvalidChangeBatch with every failing change listed, like Route 53 reports it."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("InvalidChangeBatch", "[" + ", ".join(messages) + "]")


def _norm_name(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _key(rr: dict[str, Any]) -> tuple[str, str, str | None]:
    return (_norm_name(rr["Name"]), rr["Type"], rr.get("SetIdentifier"))


def _describe(rr: dict[str, Any]) -> str:
    name, rtype, set_id = _key(rr)
    out = f"[name='{name}', type='{rtype}'"
    if set_id is not None:
        out += f", set-identifier='{set_id}'"
    return out + "]"


def _canonical(rr: dict[str, Any]) -> dict[str, Any]:
    """Everything that identifies a record's current values, normalised for comparison."""
    out: dict[str, Any] = {}
    for f in _COMPARED_FIELDS:
        v = rr.get(f)
        if v is None:
            continue
        if f in ("TTL", "Weight"):
            v = int(v)
        if f == "MultiValueAnswer":
            v = str(v).lower() in ("true", "1")
        out[f] = v
    values = rr.get("ResourceRecords")
    if values:
        # The wire shape is [{"Value": v}], moto stores [v]; order does not matter to DNS.
        out["ResourceRecords"] = sorted(
            (x["Value"] if isinstance(x, dict) else x) for x in values
        )
    alias = rr.get("AliasTarget")
    if alias:
        out["AliasTarget"] = (
            alias.get("HostedZoneId"),
            _norm_name(alias.get("DNSName", "")),
            str(alias.get("EvaluateTargetHealth", False)).lower() in ("true", "1"),
        )
    return out


def _stored_as_dict(rs: RecordSet) -> dict[str, Any]:
    return {
        "Name": rs.name,
        "Type": rs.type,
        "SetIdentifier": rs.set_identifier,
        "TTL": rs.ttl,
        "Weight": rs.weight,
        "Region": rs.region,
        "Failover": rs.failover,
        "GeoLocation": rs.geo_location,
        "MultiValueAnswer": rs.multi_value_answer,
        "HealthCheckId": rs.health_check_id,
        "ResourceRecords": rs.records,
        "AliasTarget": rs.alias_target,
    }


def _to_record_set(rr: dict[str, Any]) -> RecordSet:
    rr = dict(rr)
    if not rr["Name"].endswith("."):
        rr["Name"] += "."
    if "ResourceRecords" in rr:
        rr["ResourceRecords"] = [
            x["Value"] if isinstance(x, dict) else x for x in rr["ResourceRecords"]
        ]
    return RecordSet(rr)


def _check_record_shape(rr: dict[str, Any], zone_name: str) -> str | None:
    name = _norm_name(rr["Name"])
    zone = _norm_name(zone_name)
    if not (name == zone or name.endswith("." + zone)):
        return f"RRSet with DNS name {name} is not permitted in zone {zone}"
    has_values = bool(rr.get("ResourceRecords"))
    has_alias = bool(rr.get("AliasTarget"))
    if has_values == has_alias:
        return (
            "Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and "
            f"ResourceRecords], or TrafficPolicyInstanceId], but found "
            f"{'both' if has_values else 'none'} in Change with {_describe(rr)}"
        )
    if has_values and rr.get("TTL") is None:
        return f"Invalid request: Missing field 'TTL' in Change with {_describe(rr)}"
    weight = rr.get("Weight")
    if weight is not None:
        if not 0 <= int(weight) <= 255:
            return f"Invalid request: weight {weight} is out of range 0..255 in {_describe(rr)}"
        if rr.get("SetIdentifier") is None:
            return f"Invalid request: Missing field 'SetIdentifier' in Change with {_describe(rr)}"
    return None


_zone_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
_zone_locks_guard = threading.Lock()


def _zone_lock(zone_id: str) -> threading.Lock:
    with _zone_locks_guard:
        return _zone_locks[zone_id]


def apply_change_batch(zone: Any, changes: list[dict[str, Any]]) -> None:
    """Validates the whole batch against an evolving copy of the zone, then swaps it in.

    Raises StrictInvalidChangeBatch naming every failing change; nothing is applied then.
    """
    view: list[dict[str, Any]] = [_stored_as_dict(rs) for rs in zone.rrsets]
    objects: list[RecordSet | None] = list(zone.rrsets)
    errors: list[str] = []

    def find(rr: dict[str, Any]) -> int | None:
        k = _key(rr)
        for i, cur in enumerate(view):
            if _key(cur) == k:
                return i
        return None

    for change in changes:
        action = change.get("Action")
        rr = change.get("ResourceRecordSet") or {}
        if action not in ("CREATE", "DELETE", "UPSERT"):
            errors.append(f"Invalid request: unknown action {action!r}")
            continue
        if not rr.get("Name") or not rr.get("Type"):
            errors.append("Invalid request: ResourceRecordSet needs Name and Type")
            continue
        shape_error = _check_record_shape(rr, zone.name)
        if shape_error:
            errors.append(shape_error)
            continue
        idx = find(rr)
        if action == "DELETE":
            if idx is None:
                errors.append(
                    f"Tried to delete resource record set {_describe(rr)} but it was not found"
                )
            elif _canonical(view[idx]) != _canonical(rr):
                errors.append(
                    f"Tried to delete resource record set {_describe(rr)} but the values "
                    "provided do not match the current values"
                )
            else:
                del view[idx]
                del objects[idx]
            continue
        # CREATE / UPSERT: a weighted record may not share name+type with a simple one.
        name, rtype, set_id = _key(rr)
        clash = any(
            _norm_name(cur["Name"]) == name
            and cur["Type"] == rtype
            and (cur.get("SetIdentifier") is None) != (set_id is None)
            for cur in view
        )
        if clash:
            errors.append(
                f"RRSet of type {rtype} with DNS name {name} is not permitted because a "
                "conflicting RRSet of type " + rtype + " with the same DNS name already "
                "exists in zone " + _norm_name(zone.name)
            )
            continue
        if action == "CREATE" and idx is not None:
            errors.append(
                f"Tried to create resource record set {_describe(rr)} but it already exists"
            )
            continue
        stored = _stored_as_dict(_to_record_set(rr))
        if idx is None:
            view.append(stored)
            objects.append(None)
        else:
            view[idx] = stored
            objects[idx] = None
        # Remember the request form to build the RecordSet once the batch is accepted.
        view[idx if idx is not None else -1]["_request"] = rr

    if errors:
        raise StrictInvalidChangeBatch(errors)
    zone.rrsets = [
        obj if obj is not None else _to_record_set(cur["_request"])
        for obj, cur in zip(objects, view)
    ]


# zone id -> comments of the change batches it accepted, in order (tests count changes).
_change_log: dict[str, list[str]] = defaultdict(list)
_change_log_guard = threading.Lock()


def _change_id() -> str:
    return "C" + "".join(random.choices(string.ascii_uppercase + string.digits, k=20))


# Change id -> [GetChange reads left that answer PENDING, submitted at], for every change
# _strict_change_resource_record_sets issued; guarded by _change_log_guard.
_changes: dict[str, list[Any]] = {}
# GetChange reads a new change answers PENDING before INSYNC (PUT /_kbha/change-propagation).
_propagation = {"pending_reads": 1}


def _get_change(self: Route53) -> ActionResult:
    """GetChange: PENDING for the change's first pending reads, then INSYNC; NoSuchChange
    (404, Route 53's XML error shape) for an id this emulator never issued."""
    change_id = str(self._get_param("Id") or "").split("/")[-1]
    with _change_log_guard:
        entry = _changes.get(change_id)
        if entry is None:
            raise Route53ClientError("NoSuchChange", f"A change with the specified change ID does not exist: {change_id}")
        status = "PENDING" if entry[0] > 0 else "INSYNC"
        entry[0] = max(0, entry[0] - 1)
    return ActionResult({"ChangeInfo": {"Id": "/change/" + change_id, "Status": status, "SubmittedAt": entry[1]}})


def _strict_change_resource_record_sets(self: Route53) -> ActionResult:
    zone_id = self._get_param("HostedZoneId")
    changes = self._get_param("ChangeBatch.Changes") or []
    comment = self._get_param("ChangeBatch.Comment")
    zone = self.backend.get_hosted_zone(zone_id)  # raises NoSuchHostedZone
    with _zone_lock(zone.id):
        apply_change_batch(zone, changes)
        with _change_log_guard:
            _change_log[str(zone.id).split("/")[-1]].append(comment or "")
    change_id = _change_id()
    submitted = utcnow()
    with _change_log_guard:
        _changes[change_id] = [_propagation["pending_reads"], submitted]
    info: dict[str, Any] = {
        "Id": "/change/" + change_id,
        # Route 53 answers PENDING and reaches INSYNC later (GetChange below).
        "Status": "PENDING",
        "SubmittedAt": submitted,
    }
    if comment:
        info["Comment"] = comment
    return ActionResult({"ChangeInfo": info})


# ----------------------------------------------------------------- health checks

# The regions Route 53 health checkers run in (GetCheckerIpRanges / docs).
CHECKER_REGIONS = [
    ("us-east-1", "15.177.2.10"),
    ("us-west-1", "15.177.10.10"),
    ("us-west-2", "15.177.14.10"),
    ("eu-west-1", "15.177.62.10"),
    ("ap-southeast-1", "15.177.42.10"),
    ("ap-southeast-2", "15.177.46.10"),
    ("ap-northeast-1", "15.177.34.10"),
    ("sa-east-1", "15.177.50.10"),
]
_SUCCESS = "Success: HTTP Status Code 200, OK"
_FAILURE = (
    "Failure: Connection timed out. The endpoint or the internet connection is down, "
    "or requests are being blocked by your firewall. See "
    "https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/dns-failover-router-firewall-rules.html"
)

# health-check id -> number of failing checkers (absent: all pass).
_failing_checkers: dict[str, int] = {}
_health_guard = threading.Lock()


def _get_health_check_status(self: Route53) -> ActionResult:
    hc_id = self._get_param("HealthCheckId")
    self.backend.get_health_check(hc_id)  # raises NoSuchHealthCheck
    with _health_guard:
        failing = _failing_checkers.get(hc_id, 0)
    now = utcnow()
    observations = []
    for i, (region, ip) in enumerate(CHECKER_REGIONS):
        observations.append(
            {
                "Region": region,
                "IPAddress": ip,
                "StatusReport": {
                    "Status": _FAILURE if i < failing else _SUCCESS,
                    "CheckedTime": now,
                },
            }
        )
    return ActionResult({"HealthCheckObservations": observations})


def _list_resource_record_sets(self: Route53) -> ActionResult:
    """ListResourceRecordSets ordered and paged like Route 53: by reversed name, type,
    then set identifier, honouring StartRecordIdentifier (moto ignores it, so a page
    boundary inside one weighted set would repeat records forever)."""
    zone = self.backend.get_hosted_zone(self._get_param("HostedZoneId"))
    start_name = self._get_param("StartRecordName")
    start_type = self._get_param("StartRecordType")
    start_id = self._get_param("StartRecordIdentifier")
    max_items = self._get_int_param("MaxItems", 300)
    if (start_type and not start_name) or (start_id and not start_type):
        raise InvalidInput("The input is not valid")

    def order(rs: RecordSet) -> tuple[str, str, str]:
        return (reverse_domain_name(rs.name.lower()), rs.type or "", rs.set_identifier or "")

    records = sorted(zone.rrsets, key=order)
    if start_name:
        start = (reverse_domain_name(start_name.lower()), start_type or "", start_id or "")
        records = [r for r in records if order(r) >= start]
    page, rest = records[:max_items], records[max_items:]
    result: dict[str, Any] = {
        "ResourceRecordSets": page,
        "IsTruncated": bool(rest),
        "MaxItems": str(max_items),
    }
    if rest:
        result["NextRecordName"] = rest[0].name
        result["NextRecordType"] = rest[0].type
        if rest[0].set_identifier:
            result["NextRecordIdentifier"] = rest[0].set_identifier
    return ActionResult(result)


def install_route53_patches() -> None:
    """Replaces moto's handlers (the response layer dispatches by action name)."""
    Route53.change_resource_record_sets = _strict_change_resource_record_sets  # type: ignore[method-assign]
    Route53.get_health_check_status = _get_health_check_status  # type: ignore[method-assign]
    Route53.list_resource_record_sets = _list_resource_record_sets  # type: ignore[method-assign]
    Route53.get_change = _get_change  # type: ignore[method-assign]


# ------------------------------------------------------------------ CloudWatch additions

_ALARM_STATES = ("OK", "ALARM", "INSUFFICIENT_DATA")


def _put_composite_alarm(self: CloudWatchResponse) -> ActionResult:
    """PutCompositeAlarm: an alarm with a rule and no metric, as moto models composite alarms.

    The rule is stored, not evaluated (moto evaluates no alarm); set states with SetAlarmState.
    """
    self.cloudwatch_backend.put_metric_alarm(
        name=self._get_param("AlarmName"),
        namespace=None,  # type: ignore[arg-type]
        metric_name=None,  # type: ignore[arg-type]
        comparison_operator=None,  # type: ignore[arg-type]
        evaluation_periods=None,  # type: ignore[arg-type]
        period=None,  # type: ignore[arg-type]
        threshold=None,  # type: ignore[arg-type]
        statistic=None,  # type: ignore[arg-type]
        description=self._get_param("AlarmDescription"),
        dimensions=[],
        alarm_actions=self._get_param("AlarmActions", []),
        ok_actions=self._get_param("OKActions", []),
        insufficient_data_actions=self._get_param("InsufficientDataActions", []),
        actions_enabled=self._get_bool_param("ActionsEnabled", True),
        rule=self._get_param("AlarmRule"),
        tags=self._get_param("Tags", []),
    )
    return EmptyResult()


def set_alarm_state_at(region: str, name: str, state: str, reason: str, since_ms: int) -> str | None:
    """Sets an alarm's state with a given StateUpdatedTimestamp; returns an error or None."""
    if state not in _ALARM_STATES:
        return f"state must be one of {', '.join(_ALARM_STATES)}"
    alarm = cloudwatch_backends[DEFAULT_ACCOUNT_ID][region].alarms.get(name)
    if alarm is None:
        return f"no alarm {name} in {region}"
    alarm.update_state(reason, "{}", state)
    # moto keeps naive UTC datetimes (moto.core.utils.utcnow); timedelta keeps the ms exact.
    alarm.state_updated_timestamp = datetime(1970, 1, 1) + timedelta(milliseconds=since_ms)
    return None


def install_lambda_patches() -> None:
    """ListAliases with the function's ARN in the path (moto does not unquote it there)."""
    from urllib.parse import unquote

    from moto.awslambda.responses import LambdaResponse

    original = LambdaResponse.list_aliases

    def list_aliases(self: Any) -> Any:
        parts = self.path.split("/")
        parts[-2] = unquote(parts[-2])
        self.path = "/".join(parts)
        return original(self)

    LambdaResponse.list_aliases = list_aliases  # type: ignore[method-assign]


def install_cloudwatch_patches() -> None:
    """Adds what moto's CloudWatch lacks (the response layer dispatches by action name)."""
    CloudWatchResponse.put_composite_alarm = _put_composite_alarm  # type: ignore[attr-defined]


# ------------------------------------------------------------------ control + faults

_faults: list[dict[str, Any]] = []
_faults_guard = threading.Lock()

_SERVICE_RE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")


def _service_of(environ: dict[str, Any]) -> str | None:
    m = _SERVICE_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return m.group(1) if m else None


def _take_fault(environ: dict[str, Any]) -> dict[str, Any] | None:
    service = _service_of(environ)
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "")
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    with _faults_guard:
        for fault in _faults:
            if fault.get("service") not in (None, service):
                continue
            if fault.get("method") not in (None, method):
                continue
            if fault.get("path_regex") and not re.search(fault["path_regex"], path):
                continue
            if fault.get("target") and fault["target"] != target:
                continue
            if fault.get("skip", 0) > 0:
                # The first `skip` matching requests pass (fail the second PUT, not the first).
                fault["skip"] -= 1
                return None
            fault["count"] = fault.get("count", 1) - 1
            if fault["count"] <= 0:
                _faults.remove(fault)
            return dict(fault)
    return None


def _fault_response(environ: dict[str, Any], fault: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    status = int(fault.get("status", 400))
    code = fault["code"]
    message = fault.get("message", f"injected fault {code}")
    service = _service_of(environ)
    content_type = environ.get("CONTENT_TYPE", "")
    if "json" in content_type:
        body = json.dumps({"__type": code, "message": message}).encode()
        ctype = "application/x-amz-json-1.0"
    elif service == "s3":
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>kbha-fault</RequestId></Error>"
        ).encode()
        ctype = "application/xml"
    else:
        fault_type = "Receiver" if status >= 500 else "Sender"
        body = (
            f'<?xml version="1.0"?>\n<ErrorResponse><Error><Type>{fault_type}</Type>'
            f"<Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>kbha-fault</RequestId></ErrorResponse>"
        ).encode()
        ctype = "text/xml"
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
    if service == "s3" or "json" in content_type:
        headers.append(("x-amzn-ErrorType", code))
    return f"{status} Injected", headers, body


def _reset(environ: dict[str, Any]) -> None:
    """Aborts the client's connection with a TCP RST and no answer.

    SO_LINGER 0 makes the close abortive; SHUT_RD ends werkzeug's keep-alive loop without
    sending a FIN; the server's ``shutdown_request`` (see ``_abortive_shutdown``) then
    closes without the SHUT_WR it would normally send. Raising ConnectionResetError
    makes werkzeug treat it as a dropped connection.
    """
    # Read the body first: werkzeug would otherwise parse it as the next request and
    # answer that, which the client sees as garbage rather than a reset.
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)
    except (OSError, ValueError):
        pass
    sock = environ["werkzeug.socket"]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    raise ConnectionResetError("kbha fault: connection reset")


def _abortive_shutdown(server: Any) -> None:
    """Closes reset connections without the FIN socketserver sends before closing."""
    normal = server.shutdown_request

    def shutdown_request(request: socket.socket) -> None:
        try:
            linger = struct.unpack("ii", request.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
        except OSError:
            linger = (0, 0)
        if linger == (1, 0):
            server.close_request(request)
        else:
            normal(request)

    server.shutdown_request = shutdown_request


def _json_response(start_response: Callable, status: str, obj: Any) -> list[bytes]:
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _control(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        body = json.loads(raw) if raw else {}
    except (ValueError, json.JSONDecodeError) as e:
        return _json_response(start_response, "400 Bad Request", {"error": f"bad json body: {e}"})

    if path == "/_kbha/ping":
        return _json_response(start_response, "200 OK", "ok")

    m = re.fullmatch(r"/_kbha/health-checks/([^/]+)", path)
    if m:
        hc_id = m.group(1)
        if method == "PUT":
            if "failing_checkers" in body:
                failing = int(body["failing_checkers"])
            elif body.get("status") in ("healthy", "unhealthy"):
                failing = 0 if body["status"] == "healthy" else len(CHECKER_REGIONS)
            else:
                return _json_response(
                    start_response,
                    "400 Bad Request",
                    {"error": 'body must be {"status": "healthy"|"unhealthy"} or {"failing_checkers": n}'},
                )
            with _health_guard:
                _failing_checkers[hc_id] = max(0, min(failing, len(CHECKER_REGIONS)))
        with _health_guard:
            failing = _failing_checkers.get(hc_id, 0)
        return _json_response(
            start_response,
            "200 OK",
            {"id": hc_id, "failing_checkers": failing, "checkers": len(CHECKER_REGIONS)},
        )

    m = re.fullmatch(r"/_kbha/changes/([^/]+)", path)
    if m:
        with _change_log_guard:
            comments = list(_change_log.get(m.group(1), []))
        return _json_response(start_response, "200 OK", {"zone": m.group(1), "comments": comments})

    if path == "/_kbha/change-propagation" and method == "PUT":
        n = body.get("pending_reads") if isinstance(body, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return _json_response(
                start_response, "400 Bad Request", {"error": 'body must be {"pending_reads": n} with n >= 0'}
            )
        with _change_log_guard:
            _propagation["pending_reads"] = n
        return _json_response(start_response, "200 OK", {"pending_reads": n})

    if path == "/_kbha/alarm-state" and method == "PUT":
        # The name travels in the body: alarm names may hold `/` and `%`.
        try:
            region, name = str(body["region"]), str(body["name"])
            state, since_ms = str(body["state"]), int(body["since_ms"])
        except (KeyError, TypeError, ValueError):
            return _json_response(
                start_response,
                "400 Bad Request",
                {"error": 'body must be {"region": r, "name": n, "state": "OK"|"ALARM"|"INSUFFICIENT_DATA", "since_ms": ms}'},
            )
        error = set_alarm_state_at(region, name, state, str(body.get("reason", "set by a kbha test")), since_ms)
        if error is not None:
            return _json_response(start_response, "400 Bad Request", {"error": error})
        return _json_response(start_response, "200 OK", {"alarm": name, "state": state, "since_ms": since_ms})

    if path == "/_kbha/faults":
        with _faults_guard:
            if method == "POST":
                if "code" not in body and "delay_ms" not in body and "reset" not in body:
                    return _json_response(
                        start_response, "400 Bad Request", {"error": "fault needs `code`, `delay_ms` or `reset`"}
                    )
                if body.get("reset") not in (None, "before", "after"):
                    return _json_response(
                        start_response, "400 Bad Request", {"error": '`reset` is "before" or "after"'}
                    )
                _faults.append(body)
            elif method == "DELETE":
                _faults.clear()
            return _json_response(start_response, "200 OK", list(_faults))

    return _json_response(start_response, "404 Not Found", {"error": f"no control endpoint {path}"})


class KbhaMiddleware:
    """Control API and fault injection in front of moto's dispatcher."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/_kbha/"):
            return _control(environ, start_response)
        fault = _take_fault(environ)
        if fault is not None:
            if fault.get("delay_ms"):
                time.sleep(float(fault["delay_ms"]) / 1000.0)
            if fault.get("reset") == "after":
                # Let moto do the work (a change is applied), then lose the answer.
                result = self.app(environ, lambda *_a, **_k: (lambda _data: None))
                try:
                    for _ in result:
                        pass
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
            if fault.get("reset"):
                _reset(environ)
            if fault.get("code"):
                status, headers, body = _fault_response(environ, fault)
                start_response(status, headers)
                return [body]
        return self.app(environ, start_response)


# ------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args()

    if not args.verbose and not os.environ.get("KBHA_EMULATOR_VERBOSE"):
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    install_route53_patches()
    install_cloudwatch_patches()
    install_lambda_patches()
    app = KbhaMiddleware(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    _abortive_shutdown(server)

    def stop(*_: Any) -> None:
        # os._exit: serve_forever runs in the main thread and moto holds no state worth flushing.
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            stop()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"KBHA_EMULATOR_READY {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
