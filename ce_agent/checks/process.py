"""The `process` check: how many processes match a name or a command-line regex, against a min and max."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import msgspec
import psutil

from ce_agent.contracts import Check, Metric, Result, Status

#: pids named in the summary; the count says how many there are in all
SUMMARY_PIDS = 5


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What the match looks at in one process."""

    pid: int
    name: str
    cmdline: tuple[str, ...] = ()
    username: str = ""


def probe_processes() -> list[ProcessInfo]:
    """Every process but the agent itself (it would match the patterns it was given)."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "username"]):
        if proc.pid == me:
            continue
        info = proc.info
        found.append(
            ProcessInfo(proc.pid, info.get("name") or "", tuple(info.get("cmdline") or ()), info.get("username") or "")
        )
    return found


def select_processes(
    processes: Iterable[ProcessInfo], name: str | None, cmdline: re.Pattern[str] | None, user: str | None
) -> list[ProcessInfo]:
    """The processes with exactly this name, whose command line (joined by spaces) matches, of this user."""
    return [
        p
        for p in processes
        if (name is None or p.name == name)
        and (cmdline is None or cmdline.search(" ".join(p.cmdline)) is not None)
        and (user is None or p.username == user)
    ]


def evaluate_processes(matched: list[ProcessInfo], what: str, minimum: int, maximum: int | None) -> Result:
    """CRITICAL when the count is below `minimum` or above `maximum`."""
    count = len(matched)
    status = Status.CRITICAL if count < minimum or (maximum is not None and count > maximum) else Status.OK
    noun = "process" if count == 1 else "processes"
    summary = f"{count} {noun} {what}"
    if matched:
        pids = sorted(p.pid for p in matched)
        more = ", ..." if len(pids) > SUMMARY_PIDS else ""
        summary += f" (pid{'s' if count != 1 else ''} {', '.join(map(str, pids[:SUMMARY_PIDS]))}{more})"
    if status is Status.CRITICAL:
        summary += f", expected {_expected(minimum, maximum)}"
    crit = f"{minimum}:{maximum if maximum is not None else ''}"
    return Result(status, summary, [Metric("process_instances", float(count), "", {}, None, crit, 0)])


def _expected(minimum: int, maximum: int | None) -> str:
    if maximum is None:
        return f"at least {minimum}"
    if minimum == maximum:
        return f"exactly {minimum}"
    return f"between {minimum} and {maximum}" if minimum > 0 else f"at most {maximum}"


class ProcessCheck(Check):
    """Count the processes with a name or a command line matching a regex; CRITICAL outside [min, max]."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        name: Annotated[
            str | None, msgspec.Meta(description="The exact process name (as `ps -e` shows it), e.g. nginx.")
        ] = None
        cmdline: Annotated[
            str | None,
            msgspec.Meta(description="A regex searched in the command line (arguments joined by spaces)."),
        ] = None
        user: Annotated[str | None, msgspec.Meta(description="Only count processes of this user name.")] = None
        min: Annotated[int, msgspec.Meta(ge=0, description="CRITICAL when fewer processes match.")] = 1
        max: Annotated[
            Annotated[int, msgspec.Meta(ge=0)] | None,
            msgspec.Meta(description="CRITICAL when more processes match (`max: 0` alone: none may run)."),
        ] = None

        def __post_init__(self) -> None:
            # checked here, not in run(): `ce-agent validate` then reports them at the task's line
            if self.name is None and self.cmdline is None:
                raise ValueError("give 'name', 'cmdline' or both to choose the processes")
            if self.cmdline is not None:
                try:
                    re.compile(self.cmdline)
                except re.error as exc:
                    raise ValueError(f"cmdline: not a valid regular expression: {exc}") from None
            if self.max is not None and self.max < _minimum(self.min, self.max):
                raise ValueError(f"max: {self.max} is below min {self.min}")

    EXAMPLES = """\
- name: nginx runs
  process: {name: nginx, min: 1}
- name: exactly one backup job
  process: {cmdline: "borg create .*::daily", user: backup, min: 0, max: 1}
"""

    def run(self) -> Result:
        opts = self.options
        minimum = _minimum(opts.min, opts.max)
        pattern = re.compile(opts.cmdline) if opts.cmdline is not None else None
        matched = select_processes(probe_processes(), opts.name, pattern, opts.user)
        result = evaluate_processes(matched, _describe(opts), minimum, opts.max)
        labels = {key: value for key in ("name", "cmdline", "user") if (value := getattr(opts, key)) is not None}
        result.metrics = [Metric(m.name, m.value, m.unit, labels, m.warn, m.crit, m.min, m.max) for m in result.metrics]
        return result


def _minimum(minimum: int, maximum: int | None) -> int:
    # `max: 0` alone says "must not run"; the default min of 1 would contradict it
    return 0 if maximum == 0 and minimum == 1 else minimum


def _describe(opts: ProcessCheck.Options) -> str:
    parts = []
    if opts.name is not None:
        parts.append(f"named {opts.name!r}")
    if opts.cmdline is not None:
        parts.append(f"matching /{opts.cmdline}/")
    if opts.user is not None:
        parts.append(f"of user {opts.user!r}")
    return " ".join(parts)
