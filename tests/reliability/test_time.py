"""Issue 7, point 6: clock jumps, a suspend and a year of DST, through the daemon's own scheduling loop."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ce_agent.daemon import MAX_SLEEP, Daemon, build_config
from ce_agent.scheduler import Schedule, due_tasks, first_clock, next_wakeup, parse_schedule
from tests.reliability.conftest import record
from tests.test_scheduler import ALL_DAYS_2024, AUTUMN, BERLIN, NEW_YORK, SPRING

HOUR = 3600.0

# The cases. `step` is how far the wall clock moves while the monotonic clock does not: a
# clock set by hand or NTP, or a suspend (Linux's CLOCK_MONOTONIC, which the daemon's sleeps and
# run deadlines use, stops while suspended; the wall clock comes back 10 minutes on).
CASES = [
    pytest.param(HOUR, id="+1h"),
    pytest.param(-HOUR, id="-1h"),
    pytest.param(6 * HOUR, id="+6h"),
    pytest.param(600.0, id="10-minute suspend"),
]

# The mix of the issue, cron in the machine's zone (Berlin, a day without DST); how long a run takes.
MIX: dict[str, tuple[Schedule, float]] = {
    "every 1 s": (parse_schedule(None, 1), 0.3),
    "every minute": (parse_schedule("* * * * *", None, local_tz=ZoneInfo(BERLIN)), 2.0),
    # runs 20 s from xx:20:00, so the jump at 02:20:07 comes while it runs
    "*/5 cron": (parse_schedule("*/5 * * * *", None, local_tz=ZoneInfo(BERLIN)), 20.0),
    "hourly": (parse_schedule("0 * * * *", None, local_tz=ZoneInfo(BERLIN)), 1.0),
    "daily 02:30": (parse_schedule("30 2 * * *", None, local_tz=ZoneInfo(BERLIN)), 1.0),
}
PERIOD = {"every 1 s": 1.0, "every minute": 60.0, "*/5 cron": 300.0, "hourly": HOUR, "daily 02:30": 24 * HOUR}


@dataclass(frozen=True)
class Run:
    key: str
    due: float
    wall: float  # the clock when it started
    mono: float  # the monotonic clock when it started


@dataclass
class Loop:
    """Daemon._loop on fake clocks: start what due_tasks gives, sleep (monotonic) until next_wakeup,
    at most MAX_SLEEP, or until a run finishes (its "done" event wakes the loop); wake 1-20 ms late.
    `steps` maps a monotonic instant to a wall-clock step applied then, while the loop sleeps."""

    schedules: dict[str, Schedule]
    durations: dict[str, float]
    wall0: float
    steps: dict[float, float] = field(default_factory=dict)
    mono: float = 0.0
    skew: float = 0.0
    runs: list[Run] = field(default_factory=list)
    wakes: list[tuple[float, float]] = field(default_factory=list)  # (mono, wall) of every wake-up

    def __post_init__(self) -> None:
        self.clocks = {key: first_clock(s, key, self.wall0) for key, s in self.schedules.items()}
        self.finishing: dict[str, float] = {}
        self.rng = random.Random(7)
        self.pending = sorted(self.steps.items())

    def wall(self) -> float:
        return self.wall0 + self.mono + self.skew

    def until(self, mono_end: float) -> Loop:
        pending = self.pending
        while self.mono < mono_end:
            now = self.wall()
            self.wakes.append((self.mono, now))
            for start in due_tasks(self.clocks, self.schedules, now):
                assert start.lateness >= 0
                self.runs.append(Run(start.key, start.due, now, self.mono))
                self.finishing[start.key] = self.mono + self.durations[start.key]
            assert all(clock.next_due > now for clock in self.clocks.values())  # the loop never spins
            wake = next_wakeup(self.clocks)
            assert wake is not None
            wake_mono = self.mono + min(MAX_SLEEP, max(0.0, wake - now))
            wake_mono = min([wake_mono, *self.finishing.values()])
            while pending and pending[0][0] <= wake_mono:
                self.skew += pending.pop(0)[1]
            self.mono = wake_mono + self.rng.uniform(0.001, 0.02)
            for key, at in list(self.finishing.items()):
                if at <= self.mono:
                    del self.finishing[key]
                    self.clocks[key].finished()
        return self


def schedule_times(schedule: Schedule, key: str, after: float, until: float) -> list[float]:
    """Every due time of `schedule` in (after, until]."""
    times, t = [], after
    while (t := schedule.next_after(t, key)) <= until:
        times.append(t)
    return times


# between two whole seconds, so no due time coincides with the jump
JUMP_AT = datetime(2024, 6, 1, 2, 20, 7, 500_000, tzinfo=ZoneInfo(BERLIN)).timestamp()


@pytest.mark.parametrize("step", CASES)
def test_a_clock_jump_or_a_suspend_never_bursts_nor_repeats_and_catches_up_at_most_once(step: float) -> None:
    schedules = {key: schedule for key, (schedule, _) in MIX.items()}
    durations = {key: duration for key, (_, duration) in MIX.items()}
    wall0 = JUMP_AT - 3 * HOUR  # three hours of normal running first
    jump_mono = JUMP_AT - wall0
    loop = Loop(schedules, durations, wall0, steps={jump_mono: step}).until(jump_mono)
    skipped_before = {key: clock.skipped for key, clock in loop.clocks.items()}
    loop.until(jump_mono + 3 * HOUR)
    landing = next(wall for mono, wall in loop.wakes if mono > jump_mono)  # the first wake-up after the jump
    end = loop.wakes[-1][1]  # every due time up to the last wake-up has started
    before = [run for run in loop.runs if run.mono <= jump_mono]
    after = [run for run in loop.runs if run.mono > jump_mono]
    catch_ups: Counter[str] = Counter()
    for key, schedule in schedules.items():
        mine = [run for run in after if run.key == key]
        dues = [run.due for run in mine]
        # no duplicate run: after the jump each due time starts at most once...
        assert len(dues) == len(set(dues)), key
        # ...and a due time that ran before a step back does not run again, unless the task is more
        # frequent than the step: a per-minute check is not silent for the hour the clock lost
        ran = {run.due for run in before if run.key == key}
        if PERIOD[key] >= abs(step):
            assert not ran & set(dues), key
        else:
            last = [run for run in before if run.key == key][-1:]
            gaps = [b.mono - a.mono for a, b in zip(last + mine, mine)]
            # due_tasks pulls the next due time in to the second after the landing (the first could
            # come within a period of real time of the run before the step): a gap of at most the
            # period the step came in, and two more
            assert max(gaps) <= 3 * PERIOD[key] + 0.1, key
        # at most one catch-up: a start for a due time the jump skipped over
        skipped_over = [d for d in dues if d <= JUMP_AT + step and d > JUMP_AT] if step > 0 else []
        assert len(skipped_over) <= 1, (key, skipped_over)
        catch_ups[key] = len(skipped_over)
        # no burst: after the first wake-up, exactly the schedule's own due times, one start each
        # (a due time that came while the previous run still went is skipped and counted, not run)
        expected = schedule_times(schedule, key, landing, end)
        regular = [d for d in dues if d > landing]
        skipped = loop.clocks[key].skipped - skipped_before[key]
        assert set(regular) <= set(expected), key
        # after a step back, a task's next due time is pulled in to the second after the landing
        assert len(regular) + skipped >= len(expected) - (step < 0), key
        assert len(regular) + skipped <= len(expected) + 1, key
        # and in real time: never two starts within one period, but for the catch-up and the next
        for a, b in zip(mine, mine[1:]):
            if not (a.due <= JUMP_AT + step and a.due > JUMP_AT):
                assert b.mono - a.mono >= PERIOD[key] - 0.1, (key, a, b)
    if step > 0:
        # every task with a due time in the jump catches up once, unless it is still running then
        # (the */5 check runs 20 s from 02:20:00: it is skipped and counted, not overlapped)
        missed = {key for key, s in schedules.items() if schedule_times(s, key, JUMP_AT, JUMP_AT + step)}
        assert {key for key, n in catch_ups.items() if n} == missed - {"*/5 cron"}
        assert loop.clocks["*/5 cron"].skipped > skipped_before["*/5 cron"]
    record("time", f"{'+' if step > 0 else ''}{step / 60:g} min: {len(after)} starts in the 3 h after it; catch-ups "
           f"{dict(catch_ups)}; skipped while running {sum(c.skipped for c in loop.clocks.values())}")


# ---- a year of DST -------------------------------------------------------------------------------------

DAILY = {  # the job's local time: (cron, when it runs on the spring day)
    "00:00": ("0 0 * * *", "00:00"),
    "01:30": ("30 1 * * *", "01:30"),
    "02:30": ("30 2 * * *", "03:00"),  # in both zones' spring gap (02:00-03:00): runs at its end
    "03:00": ("0 3 * * *", "03:00"),
    "12:00": ("0 12 * * *", "12:00"),
}
REPEATED = {BERLIN: "02:30", NEW_YORK: "01:30"}  # a local time the autumn day has twice: run the first


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_a_year_of_dst_every_daily_job_runs_exactly_once_a_day(zone: str) -> None:
    # tests/test_scheduler.py::test_a_simulated_year_of_the_daemon_loop runs one daily job through a
    # bare loop; this is the daemon's (MAX_SLEEP, runs that take time) with five daily jobs, two of
    # them at local times that DST skips or repeats in this zone
    tz = ZoneInfo(zone)
    schedules = {key: parse_schedule(expr, None, local_tz=tz) for key, (expr, _) in DAILY.items()}
    start = datetime(2024, 1, 1, tzinfo=tz).timestamp()
    end = datetime(2025, 1, 1, tzinfo=tz).timestamp()
    loop = Loop(schedules, dict.fromkeys(schedules, 5.0), start - 1).until(end - (start - 1))
    for key, (_, on_spring_day) in DAILY.items():
        runs = [datetime.fromtimestamp(run.wall, tz) for run in loop.runs if run.key == key]
        assert [run.date() for run in runs] == ALL_DAYS_2024, key
        at = {run.date(): run for run in runs}
        assert at.pop(SPRING[zone]).strftime("%H:%M") == on_spring_day
        assert {run.strftime("%H:%M") for run in at.values()} == {key}
        if key == REPEATED[zone]:
            assert at[AUTUMN[zone]].utcoffset() == datetime(2024, 7, 1, tzinfo=tz).utcoffset()  # summer time
        assert all(0 <= run.wall - run.due < 0.1 for run in loop.runs if run.key == key)
    record("time", f"2024 in {zone}: {len(DAILY)} daily jobs x 366 days, each exactly once a day ({len(loop.wakes)} wake-ups)")


# ---- the Daemon itself, on an injected clock ----------------------------------------------------------

PLAYBOOK = """\
- name: Time
  hosts: localhost
  checks:
    - {name: tick, file: {path: /etc/hostname}, interval: 1s}
    - {name: hourly, file: {path: /etc/hostname}, schedule: "0 * * * *"}
    - {name: daily, file: {path: /etc/hostname}, schedule: "30 2 * * *"}
"""


class JumpingClock:
    """The wall clock the daemon reads: 02:20:00 Berlin when made, advancing with time.monotonic(),
    moved by `jump()` as a clock set by hand or a resume would move it."""

    def __init__(self) -> None:
        self.base = datetime(2024, 6, 1, 2, 20, tzinfo=ZoneInfo(BERLIN)).timestamp() - time.monotonic()

    def __call__(self) -> float:
        return self.base + time.monotonic()

    def jump(self, step: float) -> None:
        self.base += step


def runs_by_check(text: str) -> tuple[dict[str, float], float]:
    """ce_check_runs_total per check, and how many starts were more than 10 s late (the catch-ups)."""
    from prometheus_client.parser import text_string_to_metric_families

    runs: Counter[str] = Counter()
    late = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ce_check_runs_total":
                runs[s.labels["check"]] += s.value
            elif s.name == "ce_scheduler_lateness_seconds_bucket" and s.labels["le"] == "+Inf":
                late += s.value
            elif s.name == "ce_scheduler_lateness_seconds_bucket" and s.labels["le"] == "10.0":
                late -= s.value
    return dict(runs), late


@pytest.mark.parametrize(
    "step, hourly, daily",
    [
        pytest.param(HOUR, 1, 1, id="+1h"),  # 02:20 -> 03:20: 02:30 and 03:00 were jumped over
        pytest.param(-HOUR, 0, 0, id="-1h"),  # 02:20 -> 01:20: nothing due in what remains of the test
        pytest.param(6 * HOUR, 1, 1, id="+6h"),  # 03:00-08:00 jumped over: one catch-up, not six
        pytest.param(600.0, 0, 1, id="10-minute suspend"),  # 02:20 -> 02:30: the daily time passed
    ],
)
def test_a_running_daemon_on_an_injected_clock_catches_up_once(tmp_path: Path, step: float, hourly: int,
                                                               daily: int) -> None:
    # A real Daemon (its loop, worker pool, results thread, SQLite store, telemetry) in this process,
    # reading the wall clock through Daemon(clock=...). A `ce-agent agent` *process* has no such seam.
    from ce_agent.oneshot import load_or_explain
    from ce_agent.plan import Selection
    from ce_agent.sdnotify import SystemdNotifier
    from ce_agent.store import Store
    from ce_agent.telemetry import Telemetry

    (tmp_path / "time.yml").write_text(PLAYBOOK)
    (tmp_path / "inventory.yml").write_text("all:\n  hosts:\n    localhost: {}\n")
    clock = JumpingClock()

    def load():  # type: ignore[no-untyped-def]
        plan, redactor, _ = load_or_explain([tmp_path / "time.yml"], [tmp_path / "inventory.yml"],
                                            Selection(check_schedules=True, state_dir=tmp_path), {})
        return build_config(plan, redactor, clock(), ZoneInfo(BERLIN))

    store, _ = Store.open(tmp_path / "state.db", clock())
    daemon = Daemon(load, store, Telemetry(), SystemdNotifier.from_environ({}), forks=4, clock=clock)
    daemon.start()
    thread = threading.Thread(target=daemon.run, name="daemon-under-test")
    thread.start()
    try:
        time.sleep(2.5)
        before, _ = runs_by_check(daemon.metrics_text())
        clock.jump(step)
        time.sleep(4.5)
    finally:
        daemon.request_stop()
        thread.join(15)
        store.close()
    assert not thread.is_alive()
    after, late = runs_by_check(daemon.metrics_text())
    ticks = after.get("tick", 0) - before.get("tick", 0)
    # about one a second: neither a burst of 3,600 nor silence after -1h (its next run is then pulled
    # in to the second due time after the landing: 2-3 s)
    assert 2 <= ticks <= 6, ticks
    assert after.get("hourly", 0) == hourly
    assert after.get("daily", 0) == daily
    assert late <= 3  # at most one catch-up per task (the only starts more than 10 s late)
    record("time", f"Daemon(clock=...) {'+' if step > 0 else ''}{step / 60:g} min: tick ran {ticks:g} times in the 4.5 s after it, "
        f"hourly {hourly}, daily {daily}, {late:g} starts over 10 s late")
