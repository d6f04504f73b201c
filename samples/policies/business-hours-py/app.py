"""Sample kbha failover policy in Python: no automatic failback outside business hours.

A line-for-line port of `samples/policies/business-hours` (Rust), which builds on
`policies/failover-default`: failing over happens at any hour exactly as the default
policy decides it (an evacuation onto a recovered primary included); failing back to
the primary while nothing is down is kept only inside business hours
(`open_hour` to `close_hour` UTC, the end excluded), otherwise the policy holds and
says why. The time is the input's `now`: the policy reads no clock, so the same input
always gives the same decision. Both implementations pass the same golden cases
(`samples/policies/business-hours/cases`).

Config keys: every key of the default policy (`active_weight`, `hysteresis_s`,
`failback`, `rpo_s`, `allow_data_loss`, `return_steps`, `return_bake_s`), plus `open_hour` (default 9) and
`close_hour` (default 17).
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import types as t

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def invalid_config(message):
    return Err(t.PolicyError_InvalidConfig(message))


def invalid_input(message):
    return Err(t.PolicyError_InvalidInput(message))


# ------------------------------------------------------------------ config
# The same parsing and messages as the Rust SDK's `Config` (policies/sdk/src/config.rs).


class Config:
    def __init__(self, entries):
        self.entries = entries

    def raw(self, key):
        # The first entry of a key wins, as in the SDK.
        for e in self.entries:
            if e.key == key:
                return e.value
        return None

    def get_u64(self, key, default):
        v = self.raw(key)
        if v is None:
            return default
        s = v.strip()
        digits = s[1:] if s.startswith("+") else s
        # Rust's u64 parse: ASCII digits only (no `_`, no sign other than `+`).
        if not digits or not all("0" <= c <= "9" for c in digits) or int(digits) > U64_MAX:
            raise invalid_config(f"`{key}` must be a non-negative integer, got `{v}`")
        return int(digits)

    def get_bool(self, key, default):
        v = self.raw(key)
        if v is None:
            return default
        s = v.strip().lower()
        if s in ("true", "yes", "1"):
            return True
        if s in ("false", "no", "0"):
            return False
        raise invalid_config(f"`{key}` must be `true` or `false`, got `{v}`")

    def get_str(self, key, default):
        v = self.raw(key)
        return default if v is None else v

    def get_choice(self, key, allowed, default):
        v = self.raw(key)
        if v is None:
            return default
        if v in allowed:
            return v
        choices = ", ".join(f"`{a}`" for a in allowed)
        raise invalid_config(f"`{key}` must be one of {choices}, got `{v}`")


# Rust integer semantics the default policy relies on.


def sat_mul_u64(a, b):
    return min(a * b, U64_MAX)


def as_i64(u):
    return u - 2**64 if u > I64_MAX else u


def as_u64(i):
    return i % 2**64


def wrap_i64(x):
    """Rust's (release-profile) wrapping i64 arithmetic."""
    return (x + 2**63) % 2**64 - 2**63


def sat_add_i64(a, b):
    return max(I64_MIN, min(I64_MAX, a + b))


def fmt_secs(s):
    """Human-readable duration for reasons, e.g. `9m 30s`."""
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    if h == 0 and m == 0:
        return f"{sec}s"
    if h == 0:
        return f"{m}m {sec}s"
    return f"{h}h {m}m"


def alert(severity, summary, detail):
    return t.Alert(severity=severity, summary=summary, detail=detail)


def hold(reason, alerts):
    return t.FailoverDecision(action=t.FailoverAction_Hold(), reason=reason, alerts=alerts)


def shift(targets, to, weight, reason, alerts):
    weights = [
        t.Weight(set_identifier=x.set_identifier, weight=weight if x.set_identifier == to else 0)
        for x in targets
    ]
    return t.FailoverDecision(
        action=t.FailoverAction_ShiftWeights(t.Shift(weights=weights, force=False)),
        reason=reason,
        alerts=alerts,
    )


def parse_steps(text):
    """Parses `10,25,50,75,100`: rising percentages ending at 100 (Rust: `parse_steps`)."""

    def bad(why):
        return invalid_config(
            f"`return_steps` {why}; write rising percentages ending at 100, e.g. `10,25,50,75,100`"
        )

    steps = []
    for part in text.split(","):
        p = part.strip().rstrip("%").strip()
        # Rust's u8 parse: ASCII digits with an optional `+`, at most 255.
        digits = p[1:] if p.startswith("+") else p
        if not digits or not all("0" <= c <= "9" for c in digits) or int(digits) > 255:
            raise bad(f"has `{p}`, not a percentage")
        v = int(digits)
        if v == 0 or v > 100 or (steps and steps[-1] >= v):
            raise bad(f"has `{v}` out of order or outside 1..=100")
        steps.append(v)
    if not steps or steps[-1] != 100:
        raise bad("does not end at 100")
    return steps


# -------------------------------------------------------- default failover
# policies/failover-default/src/lib.rs (contract kbha:policy@0.3.0): evacuate at once
# when a target carrying traffic is down, to the best target that is not down; hold
# while a carrier is unproven; fail back once the primary has been up (`up_since`,
# not `alarm_state_since`) for the hysteresis.


class Settings:
    def __init__(self, config):
        active_weight = config.get_u64("active_weight", 100)
        if active_weight == 0 or active_weight > 255:
            raise invalid_config(f"`active_weight` must be between 1 and 255, got `{active_weight}`")
        self.active_weight = active_weight
        self.hysteresis_s = config.get_u64("hysteresis_s", 600)
        self.manual_failback = config.get_choice("failback", ["auto", "manual"], "auto") == "manual"
        self.rpo_s = config.get_u64("rpo_s", 3600)
        self.allow_data_loss = config.get_bool("allow_data_loss", False)
        self.return_steps = parse_steps(config.get_str("return_steps", "10,25,50,75,100"))
        self.return_bake_s = config.get_u64("return_bake_s", 300)


# A target's condition, as the host's guardrails see it; ordered as the Rust enum
# (`Up < Unproven < Down`) for the candidate ranking.
UP, UNPROVEN, DOWN = 0, 1, 2


def condition(x):
    if x.health == t.Health.UNHEALTHY or x.alarm_state == t.AlarmState.ALARM:
        return DOWN
    if x.alarm_state == t.AlarmState.INSUFFICIENT_DATA:
        return UNPROVEN
    return UP


def default_decide(inp):
    settings = Settings(Config(inp.config))
    primaries = [x for x in inp.targets if x.primary]
    if not primaries:
        raise invalid_input(f"no target of `{inp.record_name}` is marked primary; mark exactly one")
    if len(primaries) > 1:
        raise invalid_input(
            f"more than one target of `{inp.record_name}` is marked primary; mark exactly one"
        )
    primary = primaries[0]
    all_zero = all(x.weight == 0 for x in inp.targets)

    def carries(x):
        return all_zero or x.weight > 0

    down = next((x for x in inp.targets if carries(x) and condition(x) == DOWN), None)
    if down is not None:
        return evacuate(inp, down, settings)
    unproven = next((x for x in inp.targets if carries(x) and condition(x) == UNPROVEN), None)
    if unproven is not None:
        u_id = unproven.set_identifier
        return hold(
            f"`{u_id}` carries traffic and has insufficient alarm data; holding until its state is known",
            [
                alert(
                    t.Severity.WARNING,
                    f"kbha: `{u_id}` alarm has insufficient data",
                    f"An alarm of `{u_id}` of `{inp.record_name}` reports INSUFFICIENT_DATA while its "
                    "health check does not fail; no failover decision is taken until it reports OK or ALARM.",
                )
            ],
        )
    p_id = primary.set_identifier
    if carries(primary):
        return hold(f"primary `{p_id}` is up and carrying traffic", [])
    c = condition(primary)
    if c == DOWN:
        return hold(f"primary `{p_id}` is down and carries no traffic", [])
    if c == UNPROVEN:
        return hold(
            f"primary `{p_id}` has insufficient alarm data; no failback until its state is known",
            [],
        )
    return fail_back(inp, primary, settings)


def fail_back(inp, primary, settings):
    """The primary is up and carries nothing: fail back once it has been up for the hysteresis."""
    p_id = primary.set_identifier
    if settings.manual_failback:
        return hold(
            f"primary `{p_id}` is up again; failback is manual",
            [
                alert(
                    t.Severity.INFO,
                    f"kbha: `{p_id}` recovered, manual failback pending",
                    f"Primary `{p_id}` of `{inp.record_name}` is up but carries no traffic. "
                    "Failback is configured as manual: shift the weights back when ready.",
                )
            ],
        )
    hysteresis_ms = as_i64(sat_mul_u64(settings.hysteresis_s, 1000))
    since = primary.up_since
    if since is None:
        return hold(
            f"primary `{p_id}` is up but since when is unknown; waiting for hysteresis of "
            f"{fmt_secs(settings.hysteresis_s)} before failback",
            [],
        )
    due = sat_add_i64(since, hysteresis_ms)
    if due <= inp.now:
        reason = f"primary `{p_id}` has been up for at least {fmt_secs(settings.hysteresis_s)}; failing back"
        if settings.return_steps == [100]:
            return shift(inp.targets, p_id, settings.active_weight, reason, [])
        bake_ms = sat_mul_u64(settings.return_bake_s, 1000)
        weights = [
            t.Weight(set_identifier=x.set_identifier, weight=settings.active_weight if x.set_identifier == p_id else 0)
            for x in inp.targets
        ]
        steps = [t.PlanStep(percent=p, bake_ms=bake_ms) for p in settings.return_steps]
        return t.FailoverDecision(
            action=t.FailoverAction_ShiftInSteps(t.Plan(weights=weights, steps=steps)),
            reason=f"{reason} in steps of {'/'.join(str(p) for p in settings.return_steps)} % "
            f"({fmt_secs(settings.return_bake_s)} each)",
            alerts=[],
        )
    # Rust: `(remaining_ms as u64).div_ceil(1000)` on a wrapping i64 subtraction.
    remaining_ms = as_u64(wrap_i64(due - inp.now))
    remaining_s = -(-remaining_ms // 1000)
    return hold(
        f"primary `{p_id}` is up; waiting for hysteresis, {fmt_secs(remaining_s)} remaining before failback",
        [],
    )


def rank(x, rpo_ms, index):
    """Ranks evacuation candidates: smaller is better."""
    # Within the RPO, then unknown (shift with a warning), then past it (hold, or shift
    # with `allow_data_loss`).
    age = x.replication_age_ms
    if age is None:
        rpo_class = 1
    elif age <= rpo_ms:
        rpo_class = 0
    else:
        rpo_class = 2
    return (
        condition(x),
        rpo_class,
        # Up the longest first; unknown last.
        I64_MAX if x.up_since is None else x.up_since,
        not x.primary,
        U64_MAX if age is None else age,
        index,
    )


def evacuate(inp, down, settings):
    """A target carrying traffic is down: choose where the traffic goes, if anywhere."""
    d_id = down.set_identifier
    rpo_ms = sat_mul_u64(settings.rpo_s, 1000)
    candidates = [(i, x) for i, x in enumerate(inp.targets) if condition(x) != DOWN]
    if not candidates:
        return hold(
            f"`{d_id}` is down and every other target is down too; nowhere to move traffic",
            [
                alert(
                    t.Severity.CRITICAL,
                    f"kbha: every target of `{inp.record_name}` is down",
                    f"`{d_id}` carries traffic and is down, and no other target is up. "
                    "Traffic stays where it is; manual intervention is needed.",
                )
            ],
        )
    _, best = min(candidates, key=lambda c: rank(c[1], rpo_ms, c[0]))
    b_id = best.set_identifier
    age = best.replication_age_ms
    alerts = []
    if age is not None and age > rpo_ms and not settings.allow_data_loss:
        return hold(
            f"`{d_id}` is down but `{b_id}` replication is {fmt_secs(age // 1000)} old, "
            f"over the RPO of {fmt_secs(settings.rpo_s)}; holding",
            [
                alert(
                    t.Severity.CRITICAL,
                    f"kbha: failover to `{b_id}` blocked by RPO",
                    f"`{d_id}` of `{inp.record_name}` is down. `{b_id}` has data "
                    f"{fmt_secs(age // 1000)} old, over the RPO of {fmt_secs(settings.rpo_s)}; "
                    "failing over would lose data. Set `allow_data_loss = true` or fail over by "
                    "hand to accept the loss.",
                )
            ],
        )
    if age is not None and age > rpo_ms:
        alerts.append(
            alert(
                t.Severity.WARNING,
                f"kbha: failover to `{b_id}` past the RPO",
                f"`{b_id}` has data {fmt_secs(age // 1000)} old, over the RPO of "
                f"{fmt_secs(settings.rpo_s)}; shifting anyway because `allow_data_loss` is set.",
            )
        )
    elif age is None:
        alerts.append(
            alert(
                t.Severity.WARNING,
                f"kbha: replication age of `{b_id}` unknown",
                f"Failing over to `{b_id}` without knowing how fresh its data is; "
                "check the replication verifier.",
            )
        )
    if condition(best) == UNPROVEN:
        alerts.append(
            alert(
                t.Severity.WARNING,
                f"kbha: evacuating to `{b_id}` with insufficient alarm data",
                f"`{d_id}` is down; `{b_id}` is the best target left although an alarm of it "
                "has insufficient data.",
            )
        )
    if down.primary:
        reason = f"primary `{d_id}` is down; shifting traffic to `{b_id}`"
    else:
        reason = f"`{d_id}` carries traffic and is down; evacuating to `{b_id}`"
    return shift(inp.targets, b_id, settings.active_weight, reason, alerts)


# ---------------------------------------------------------- business hours
# samples/policies/business-hours/src/lib.rs


def parse_hours(config):
    open_hour = config.get_u64("open_hour", 9)
    close_hour = config.get_u64("close_hour", 17)
    if open_hour >= close_hour or close_hour > 24:
        raise invalid_config(
            "business hours must satisfy 0 <= `open_hour` < `close_hour` <= 24, "
            f"got {open_hour} and {close_hour}"
        )
    return open_hour, close_hour


def contain(hours, now_ms):
    """Whether `now_ms` falls in `[open_hour, close_hour)` UTC (Python's % is Euclidean here)."""
    of_day = now_ms % DAY_MS
    return hours[0] * HOUR_MS <= of_day < hours[1] * HOUR_MS


def is_failback(inp, decision):
    """Whether `decision` is a failback: it gives weight back to a primary that carries none
    now while no target carrying traffic is down. A shift onto the primary away from a
    down target (the default policy evacuates to a recovered primary when the secondary
    fails) is an evacuation, urgent at any hour."""
    # A stepped return (the default policy's failback unless `return_steps` is `100`) is a
    # failback as much as a shift at once.
    if isinstance(decision.action, t.FailoverAction_ShiftWeights):
        weights = decision.action.value.weights
    elif isinstance(decision.action, t.FailoverAction_ShiftInSteps):
        weights = decision.action.value.weights
    else:
        return False
    # As the default policy counts carriers: all of them when every weight is 0.
    all_zero = all(x.weight == 0 for x in inp.targets)
    if any((all_zero or x.weight > 0) and condition(x) == DOWN for x in inp.targets):
        return False
    return any(
        w.set_identifier == p.set_identifier and w.weight > 0
        for p in inp.targets
        if p.primary and p.weight == 0
        for w in weights
    )


def decide(inp):
    hours = parse_hours(Config(inp.config))
    decision = default_decide(inp)
    if not is_failback(inp, decision) or contain(hours, inp.now):
        return decision
    return hold(
        f"outside business hours ({hours[0]:02}:00-{hours[1]:02}:00 UTC): holding the failback "
        f"the default policy would make ({decision.reason})",
        decision.alerts,
    )


class WitWorld(wit_world.WitWorld):
    """The component's export: `decide`, raising `Err(policy-error)` to refuse."""

    def decide(self, input: t.FailoverInput) -> t.FailoverDecision:
        return decide(input)
