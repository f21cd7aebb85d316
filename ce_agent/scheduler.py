"""The agent daemon's schedule arithmetic: pure functions of a clock value passed in (no sleeping, no clock reads)."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ce_agent.durations import format_duration
from ce_agent.schedules import cron_error

_EPOCH = datetime(1970, 1, 1)
_ONE_SECOND = timedelta(seconds=1)
# No zone changes its offset twice within a week, so probing at this step finds every transition.
_PROBE_STEP = 7 * 86400.0
# A day covers every fall-back repeat in tzdata; used to notice that t lies in a repeated hour.
_LOOKBACK = 86400.0
# Far more DST transitions than any real cron needs to cross before it matches.
_MAX_SEGMENTS = 64


@dataclass(frozen=True)
class Schedule:
    """When a task is due: a cron expression in a zone, or an interval with a per-task jitter.

    DST (cron only): a schedule whose hour field starts with `*` (`0 * * * *`, `*/5 * * * *`) follows
    the clock: it runs at every real instant whose local time matches, so it skips the hour lost in
    spring and runs in both passes of the hour repeated in autumn. Any other schedule (a fixed hour,
    `30 2 * * *`) runs once per matching local time: a time skipped by spring-forward runs once at the
    end of the gap (02:30 -> 03:00), a time repeated by fall-back runs at its first occurrence only.
    This is Vixie cron's / cronie's rule."""

    cron: str | None = None
    interval: float | None = None
    jitter: float = 0.0
    tz: tzinfo | None = None  # for cron; None = UTC
    _iter: Any = field(default=None, init=False, repr=False, compare=False)
    _follows_clock: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("a schedule has exactly one of `schedule` (cron) or `interval`")
        if self.cron is not None:
            error = cron_error(self.cron)
            if error:
                raise ValueError(error)
            if self.jitter:
                raise ValueError("`jitter` applies to `interval` schedules only")
            from croniter import croniter

            # Parsing the expression is most of croniter's cost: parse once, then only move the cursor.
            object.__setattr__(self, "_iter", croniter(self.cron, _EPOCH))
            object.__setattr__(self, "_follows_clock", self.cron.split()[1].startswith("*"))
        else:
            assert self.interval is not None
            if not self.interval > 0:
                raise ValueError(f"`interval` must be positive, got {self.interval}")
            if not 0 <= self.jitter <= self.interval:
                raise ValueError(f"`jitter` must be between 0s and the interval ({format_duration(self.interval)}), "
                                 f"got {format_duration(self.jitter)}")
            if self.tz is not None:
                raise ValueError("`timezone` applies to cron schedules only")

    def jitter_offset(self, key: str) -> float:
        """The task's fixed offset in [0, jitter): a hash of its key, so a restart keeps the phase."""
        if not self.jitter:
            return 0.0
        fraction = (int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") >> 11) / 2**53
        return min(fraction * self.jitter, math.nextafter(self.jitter, 0.0))

    def next_after(self, t: float, key: str = "") -> float:
        """The first due time strictly after `t` (epoch seconds); `key` names the task (for jitter)."""
        if self.interval is not None:
            offset = self.jitter_offset(key)
            due = (math.floor((t - offset) / self.interval) + 1) * self.interval + offset
            return due if due > t else due + self.interval  # float rounding at exact due times
        return self._next_cron(t)

    def _next_cron(self, t: float) -> float:
        # Walk the zone's constant-offset segments from t: within one, local time is instant + offset.
        zone = self.tz or timezone.utc
        cur, off = t, _offset(t, zone)
        start, inclusive = _wall(t, off), False
        if not self._follows_clock:
            repeat_end = _repeat_end(t, off, zone)
            if repeat_end is not None and start < repeat_end:
                # t is in the second pass of a repeated hour: those local times already ran.
                start, inclusive = repeat_end, True
        for _ in range(_MAX_SEGMENTS):
            wall = self._first_wall(start, inclusive)
            guess = _instant(wall, off)
            change = _transition(cur, guess, off, zone)
            if change is None:
                return guess
            new_off = _offset(change, zone)
            if new_off > off:  # spring forward: local times [change+off, change+new_off) do not exist
                if not self._follows_clock and wall < _wall(change, new_off):
                    return change
                start = _wall(change, new_off)
            else:  # fall back: local times [change+new_off, change+off) happen again
                start = _wall(change, new_off if self._follows_clock else off)
            cur, off, inclusive = change, new_off, True
        raise ValueError(f"cron schedule {self.cron!r} has no time after {t}")

    def _first_wall(self, start: datetime, inclusive: bool) -> datetime:
        # Cron has one-second resolution and inclusive starts are whole seconds (transitions).
        self._iter.set_current(start - _ONE_SECOND if inclusive else start, force=True)
        return self._iter.get_next(datetime)


def parse_schedule(
    cron: str | None,
    interval: float | None,
    jitter: float = 0.0,
    timezone: str | None = None,
    local_tz: tzinfo | None = None,
) -> Schedule:
    """A task's schedule from its playbook fields; `local_tz` (the machine's zone) is the cron default.

    Raises ValueError with a message for the user."""
    tz: tzinfo | None = local_tz if cron is not None else None
    if timezone is not None:
        if cron is None:
            raise ValueError("`timezone` applies to cron schedules only")
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {timezone!r} (expected an IANA name such as Europe/Berlin)") from None
    return Schedule(cron=cron, interval=interval, jitter=jitter, tz=tz)


DEFAULT_INTERVAL = 60.0  # a task without `schedule` or `interval` runs every minute


def task_schedule(task: Any, local_tz: tzinfo | None = None) -> Schedule:
    """A playbook task's schedule (`schedule`/`interval`, `jitter`, `timezone`); every minute when it
    gives none. Raises ValueError with a message for the user."""
    interval = task.interval
    if task.schedule is None and interval is None:
        interval = DEFAULT_INTERVAL
    return parse_schedule(task.schedule, interval, task.jitter, task.timezone, local_tz)


def local_zone(environ: Mapping[str, str], localtime: str = "/etc/localtime") -> tzinfo:
    """The machine's time zone with its DST rules (cron's default): $TZ, else /etc/localtime, else UTC."""
    name = environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        # /etc/localtime usually links into the zoneinfo tree: its path there is the zone's IANA name
        target = os.path.realpath(localtime)
        if "/zoneinfo/" in target:
            try:
                return ZoneInfo(target.split("/zoneinfo/", 1)[1])
            except (ZoneInfoNotFoundError, ValueError):
                pass
        with open(localtime, "rb") as data:
            return ZoneInfo.from_file(data, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


@dataclass
class TaskClock:
    """One task's bookkeeping in the daemon."""

    next_due: float
    running: bool = False
    skipped: int = 0  # due times refused because the previous run was still going (runs never overlap)
    last_start: float | None = None

    def finished(self) -> None:
        self.running = False


@dataclass(frozen=True)
class Start:
    """A task to start now; `lateness` is how long after its due time it starts (seconds)."""

    key: str
    due: float
    lateness: float


def first_clock(schedule: Schedule, key: str, now: float) -> TaskClock:
    """A new task's clock: due at its first schedule time after `now`."""
    return TaskClock(next_due=schedule.next_after(now, key))


def due_tasks(clocks: Mapping[str, TaskClock], schedules: Mapping[str, Schedule], now: float) -> list[Start]:
    """The tasks to start at `now`, updating their clocks.

    A due task starts once, however many due times a suspend or a clock jump made it miss, and its
    next due time is the first after `now` (no burst). A task still running is not started again:
    its due time moves on and `skipped` counts it. When the clock went back past a task's last
    start, its next due time is pulled in to at most the second schedule time after `now`, so a
    daily job does not run twice while a per-minute check is not silent for the hour the clock lost."""
    starts: list[Start] = []
    # tasks sharing a schedule (and a jitter offset) share the answer: compute it once per call
    memo: dict[tuple[Schedule, float, float], float] = {}

    def next_after(schedule: Schedule, t: float, key: str) -> float:
        slot = (schedule, schedule.jitter_offset(key), t)
        if slot not in memo:
            memo[slot] = schedule.next_after(t, key)
        return memo[slot]

    for key, clock in clocks.items():
        schedule = schedules[key]
        if clock.last_start is not None and now < clock.last_start:
            clock.next_due = min(clock.next_due, next_after(schedule, next_after(schedule, now, key), key))
        if clock.next_due > now:
            continue
        due = clock.next_due
        clock.next_due = next_after(schedule, now, key)
        if clock.running:
            clock.skipped += 1
            continue
        clock.running = True
        clock.last_start = now
        starts.append(Start(key=key, due=due, lateness=now - due))
    return starts


def next_wakeup(clocks: Mapping[str, TaskClock]) -> float | None:
    """The earliest due time (the daemon sleeps exactly until then), or None without tasks."""
    return min((clock.next_due for clock in clocks.values()), default=None)


def _offset(instant: float, zone: tzinfo) -> timedelta:
    offset = datetime.fromtimestamp(instant, zone).utcoffset()
    assert offset is not None
    return offset


def _wall(instant: float, offset: timedelta) -> datetime:
    return _EPOCH + timedelta(seconds=instant) + offset


def _instant(wall: datetime, offset: timedelta) -> float:
    return (wall - offset - _EPOCH).total_seconds()


def _transition(start: float, stop: float, offset: timedelta, zone: tzinfo) -> float | None:
    """The first instant in (start, stop] where the zone's offset is no longer `offset`, or None."""
    lo = start
    while lo < stop:
        hi = min(lo + _PROBE_STEP, stop)
        if _offset(hi, zone) != offset:
            # Transitions fall on whole seconds: bisect to the first second with the new offset.
            lo_s, hi_s = math.floor(lo), math.ceil(hi)
            while hi_s - lo_s > 1:
                mid = (lo_s + hi_s) // 2
                if _offset(mid, zone) == offset:
                    lo_s = mid
                else:
                    hi_s = mid
            return float(hi_s)
        lo = hi
    return None


def _repeat_end(t: float, offset: timedelta, zone: tzinfo) -> datetime | None:
    """When t follows a fall-back, the local time at which the repeated local times end."""
    before = t - _LOOKBACK
    old = _offset(before, zone)
    if old <= offset:
        return None
    change = _transition(before, t, old, zone)
    return None if change is None else _wall(change, old)
