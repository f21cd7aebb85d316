"""The `heartbeat` check: a cron job pinged (`ce-agent ping NAME`) in time, with a grace period."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Annotated

import msgspec

from ce_agent.contracts import Check, Metric, Result, Status
from ce_agent.durations import format_duration
from ce_agent.options import Duration

#: what a heartbeat name may hold: it is typed on crontab lines, so nothing a shell would interpret
PING_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Pings:
    """The newest ping of each kind (seconds since the epoch); None for a kind never received."""

    success: float | None = None
    start: float | None = None
    fail: float | None = None

    @property
    def newest(self) -> tuple[str, float] | None:
        seen = [(at, kind) for kind, at in (("success", self.success), ("start", self.start), ("fail", self.fail))
                if at is not None]
        if not seen:
            return None
        at, kind = max(seen)
        return kind, at


def expected_runs(schedule: str, now: float, tz: tzinfo | None = None) -> tuple[float, float]:
    """The two latest times a cron schedule fires at or before `now`: (the one before, the last one).

    Without `tz` the schedule is read in the machine's local time, as cron reads a crontab (DST included)."""
    from croniter import croniter

    # croniter's get_prev() skips a time equal to its start: start just after `now` so `now` itself counts
    start = datetime.fromtimestamp(now + 0.001, tz)
    times = croniter(schedule, start)
    last = times.get_prev(datetime).timestamp()
    before = times.get_prev(datetime).timestamp()
    return before, last


def judge(
    name: str,
    pings: Pings,
    now: float,
    *,
    grace: float,
    period: float | None = None,
    schedule: str | None = None,
    tz: tzinfo | None = None,
) -> Result:
    """Pure but for the clock passed in: is the job `name` on time, given its newest pings?

    In order: no ping at all is CRITICAL; a newest ping that is a failure is CRITICAL; a start newer than
    the last success and younger than `grace` is OK (the job is running); then the last success must be
    at most `period + grace` old, or (with a cron `schedule`) at or after the last run time whose grace
    has passed (the run before it while the last run is within its grace)."""
    every = f"every {format_duration(period)}" if period is not None else f'schedule "{schedule}"'
    terms = f"{every}, grace {format_duration(grace)}"
    age = None if pings.success is None else max(0.0, now - pings.success)
    metrics = [Metric("heartbeat_age_seconds", age, "s", {"name": name}, min=0)]
    newest = pings.newest
    if newest is None:
        return Result(Status.CRITICAL, f"no ping yet for {name}; run `ce-agent ping {name}` from the job", metrics)
    last_success = "never succeeded" if age is None else f"last success {_ago(age)}"
    kind, at = newest
    if kind == "fail":
        return Result(Status.CRITICAL, f"{name} reported a failure {_ago(now - at)} ({last_success}; {terms})",
                      metrics)
    started = pings.start
    running = started is not None and (pings.success is None or started > pings.success)
    if started is not None and running and now - started < grace:
        return Result(Status.OK, f"{name} running, started {_ago(now - started)} ({last_success}; {terms})", metrics)
    if schedule is not None:
        before, last = expected_runs(schedule, now, tz)
        due = last if now - last > grace else before  # late only once the grace is over, as with `period`
        late = pings.success is None or pings.success < due
        if late:
            when = datetime.fromtimestamp(due, tz).strftime("%Y-%m-%d %H:%M")
            return Result(Status.CRITICAL, f"{name} is late: no success ping for the run due at {when} "
                                           f"({last_success}; {terms})", metrics)
    else:
        assert period is not None
        if age is None or age > period + grace:
            overdue = "" if age is None else f", overdue by {format_duration(age - period - grace)}"
            return Result(Status.CRITICAL, f"{name} is late: {last_success}{overdue} ({terms})", metrics)
    assert age is not None
    unfinished = f"; started {_ago(now - started)}, not finished" if started is not None and running else ""
    return Result(Status.OK, f"{name} pinged {_ago(age)} ({terms}){unfinished}", metrics)


def _ago(seconds: float) -> str:
    return f"{format_duration(max(0.0, seconds))} ago"


class HeartbeatCheck(Check):
    """A cron job pinged in time: `ce-agent ping NAME` after each run, within its period or schedule plus grace."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        name: Annotated[
            str, msgspec.Meta(description="The heartbeat's name, as the job pings it: `ce-agent ping NAME`.")
        ]
        period: Annotated[
            Duration | None,
            msgspec.Meta(description="How often the job pings; give this or `schedule`."),
        ] = None
        schedule: Annotated[
            str | None,
            msgspec.Meta(description="When the job runs (cron, local time); give this or `period`."),
        ] = None
        grace: Annotated[
            Duration, msgspec.Meta(description="How late a ping may be (how long a run may take) before CRITICAL.")
        ] = Duration(300)

        def __post_init__(self) -> None:
            # checked when the playbook loads, so `validate` reports it with the file and line
            if not PING_NAME.fullmatch(self.name):
                raise ValueError(f"name: {self.name!r} may hold only letters, digits, '_', '.' and '-'")
            if (self.period is None) == (self.schedule is None):
                raise ValueError("period: give exactly one of 'period' (how often the job pings)"
                                 " or 'schedule' (its cron schedule)")
            if self.period is not None and self.period <= 0:
                raise ValueError("period: must be more than 0")
            if self.schedule is not None:
                from ce_agent.schedules import cron_error

                error = cron_error(self.schedule)
                if error:
                    raise ValueError(f"schedule: {error}")

    EXAMPLES = """\
# crontab: 0 2 * * *  /usr/local/bin/backup && ce-agent ping backup || ce-agent ping backup --fail
- name: Nightly backup ran
  heartbeat: {name: backup, schedule: "0 2 * * *", grace: 2h}
- name: Queue worker alive
  heartbeat: {name: worker, period: 5m}
"""

    def run(self) -> Result:
        import time

        from ce_agent.store import DB_NAME, Store, StoreError, default_state_dir

        opts = self.options
        state_dir = self.context.state_dir or default_state_dir(os.environ, os.geteuid(), Path.home())
        path = Path(state_dir) / DB_NAME
        now = time.time()
        pings = Pings()
        if path.exists():  # no database yet means no ping yet: not a reason to create one
            try:
                store, _notices = Store.open(path, now)
                try:
                    found = {kind: store.last_ping(opts.name, kind) for kind in ("success", "start", "fail")}
                finally:
                    store.close()
            except StoreError as exc:
                return Result(Status.UNKNOWN, f"cannot read the pings of {opts.name}: {exc}")
            pings = Pings(**{kind: ping[1] if ping else None for kind, ping in found.items()})
        return judge(opts.name, pings, now, grace=opts.grace, period=opts.period, schedule=opts.schedule)
