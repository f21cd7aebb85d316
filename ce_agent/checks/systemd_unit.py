"""The `systemd_unit` check: the state of a systemd unit as `systemctl show` reports it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from typing import Annotated

import msgspec

from ce_agent.contracts import Check, Metric, Result, Status
from ce_agent.durations import format_duration

UNIT_SUFFIXES = tuple(".service .socket .device .mount .automount .swap .target .path .timer .slice .scope".split())
PROPERTIES = ("ActiveState", "SubState", "LoadState", "Result")
#: states on the way to another: worth a WARNING, not yet an outage
TRANSITIONAL = frozenset({"activating", "deactivating", "reloading", "refreshing", "maintenance"})
#: states a unit rests in; a mismatch with one of these is CRITICAL
STEADY = frozenset({"active", "inactive", "failed"})
#: where systemd keeps its runtime state; it exists exactly when systemd is the running init (sd_booted)
_SYSTEMD_RUNTIME = "/run/systemd/system"


def unit_name(unit: str) -> str:
    """The full unit name: `.service` is added unless the name ends in a unit type."""
    unit = unit.strip()
    return unit if unit.endswith(UNIT_SUFFIXES) else f"{unit}.service"


def parse_show(text: str) -> dict[str, str]:
    """The `Key=Value` lines of `systemctl show`."""
    props = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            props[key.strip()] = value.strip()
    return props


def evaluate_unit(unit: str, expect: str, props: Mapping[str, str]) -> Result:
    """OK in the expected state, WARNING on the way to another, CRITICAL in another, UNKNOWN when not known."""
    active = props.get("ActiveState", "")
    sub = props.get("SubState", "")
    load = props.get("LoadState", "")
    outcome = props.get("Result", "")
    if load == "not-found":
        return Result(Status.UNKNOWN, f"{unit}: no such unit (LoadState=not-found)")
    if not active:
        return Result(Status.UNKNOWN, f"{unit}: systemctl reported no ActiveState")
    if active == expect:
        status = Status.OK
    elif active in TRANSITIONAL:
        status = Status.WARNING
    elif active in STEADY:
        status = Status.CRITICAL
    else:
        status = Status.UNKNOWN
    notes = [sub] if sub and sub != active else []
    if load and load != "loaded":
        notes.append(f"load state {load}")
    if outcome and outcome != "success":
        notes.append(f"result {outcome}")
    summary = f"{unit} {active}" + (f" ({', '.join(notes)})" if notes else "")
    if status is not Status.OK:
        summary += f", expected {expect}"
    metric = Metric("systemd_unit_active", float(active == "active"), "", {"unit": unit}, min=0, max=1)
    return Result(status, summary, [metric])


class SystemdUnitCheck(Check):
    """The ActiveState of a systemd unit (`systemctl show`): OK when it is the expected one."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        unit: Annotated[
            str, msgspec.Meta(min_length=1, description="The unit, e.g. nginx (.service is added when there is no unit type).")
        ]
        expect: Annotated[
            str, msgspec.Meta(description="The ActiveState that is OK: active, inactive, failed, ...")
        ] = "active"

    EXAMPLES = """\
- name: nginx is running
  systemd_unit: {unit: nginx}
- name: backup timer is armed
  systemd_unit: {unit: backup.timer, expect: active}
"""

    def run(self) -> Result:
        if not self.options.unit.strip():
            return Result(Status.UNKNOWN, "systemd_unit: the unit name is empty")
        unit = unit_name(self.options.unit)
        timeout = self.context.timeout
        argv = ["systemctl", "show", f"--property={','.join(PROPERTIES)}", "--no-pager", "--", unit]
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=timeout
            )
        except FileNotFoundError:
            return Result(Status.UNKNOWN, f"{unit}: systemctl not found (is this a systemd machine?)")
        except PermissionError:
            return Result(Status.UNKNOWN, f"{unit}: permission denied running systemctl")
        except subprocess.TimeoutExpired:
            return Result(Status.UNKNOWN, f"{unit}: systemctl timed out after {format_duration(timeout)}")
        if done.returncode != 0:
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()
            said = reason[0] if reason else f"exit {done.returncode}"
            if not os.path.isdir(_SYSTEMD_RUNTIME):
                return Result(Status.UNKNOWN, f"{unit}: systemd is not running on this machine (systemctl: {said})")
            return Result(Status.UNKNOWN, f"{unit}: systemctl failed: {said}")
        return evaluate_unit(unit, self.options.expect, parse_show(done.stdout))
