"""Test policy: reports what the WASI sandbox lets a CPython policy reach.

With `event_id` `loop`, `hog` or `raise` it misbehaves instead (endless loop, unbounded
memory, an exception that is not a policy-error), for the host's limits.

Built by scripts/build-python-policies.sh into target/policies/sandbox-probe-py.wasm;
crates/policy-host/tests/python.rs decides once with it and checks every finding.
It holds, with a JSON object of findings as its reason.
"""

import json
import os
import sys
import time

import wit_world
from wit_world.imports import types as t


def attempt(f):
    """`ok: <value>` or the exception's type name: what the sandbox answered."""
    try:
        return "ok: " + repr(f())
    except BaseException as e:  # noqa: BLE001 - the answer is the exception
        return type(e).__name__


def connect():
    import socket

    with socket.create_connection(("127.0.0.1", 80), timeout=1):
        return "connected"


def lookup():
    import socket

    return socket.getaddrinfo("localhost", 80)


def write_file():
    with open("/tmp/kbha-probe", "w") as f:
        f.write("x")
    return "written"


def probe():
    print("to stdout")  # discarded by the host
    print("to stderr", file=sys.stderr)
    return {
        "env": dict(os.environ),
        "argv": list(sys.argv),
        "listdir_root": attempt(lambda: os.listdir("/")),
        "listdir_cwd": attempt(lambda: os.listdir(".")),
        "read_passwd": attempt(lambda: open("/etc/passwd").read()),
        "write_tmp": attempt(write_file),
        "stdin": attempt(lambda: sys.stdin.read()),
        "connect": attempt(connect),
        "getaddrinfo": attempt(lookup),
        "time_ms": round(time.time() * 1000),
        "monotonic_ns": time.monotonic_ns(),
        "urandom": os.urandom(8).hex(),
    }


def hostile(kind):
    """Misbehaviour the host must contain, chosen by the input's `event_id`."""
    if kind == "loop":
        n = 0
        while True:
            n += 1
    if kind == "hog":
        blocks = []
        while True:
            blocks.append(bytearray(16 << 20))
    if kind == "raise":
        raise RuntimeError("not a policy-error")


class WitWorld(wit_world.WitWorld):
    def decide(self, input: t.FailoverInput) -> t.FailoverDecision:
        hostile(input.event_id)
        return t.FailoverDecision(
            action=t.FailoverAction_Hold(), reason=json.dumps(probe(), sort_keys=True), alerts=[]
        )
