"""The daemon's schedule arithmetic, driven by a fake clock (epoch seconds passed in)."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ce_agent.scheduler import Schedule, TaskClock, due_tasks, first_clock, next_wakeup, parse_schedule

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
# 2024 DST days: Berlin 31 Mar (02:00->03:00) / 27 Oct (03:00->02:00); New York 10 Mar / 3 Nov (at 02:00).
SPRING = {BERLIN: date(2024, 3, 31), NEW_YORK: date(2024, 3, 10)}
AUTUMN = {BERLIN: date(2024, 10, 27), NEW_YORK: date(2024, 11, 3)}


def runs_in_2024(expr: str, zone: str) -> list[datetime]:
    """Every run of a cron schedule during local calendar year 2024, as local datetimes."""
    tz = ZoneInfo(zone)
    schedule = parse_schedule(expr, None, timezone=zone)
    t = datetime(2024, 1, 1, tzinfo=tz).timestamp() - 1
    end = datetime(2025, 1, 1, tzinfo=tz).timestamp()
    runs = []
    while (t := schedule.next_after(t)) < end:
        runs.append(datetime.fromtimestamp(t, tz))
    return runs


def local_ts(zone: str, *fields: int) -> float:
    return datetime(*fields, tzinfo=ZoneInfo(zone)).timestamp()


ALL_DAYS_2024 = [date(2024, 1, 1) + timedelta(days=n) for n in range(366)]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
@pytest.mark.parametrize(
    "expr, at, on_spring_day",
    [
        pytest.param("0 0 * * *", "00:00", "00:00", id="midnight"),
        pytest.param("30 2 * * *", "02:30", "03:00", id="02:30-skipped-in-spring-runs-at-gap-end"),
        pytest.param("0 3 * * *", "03:00", "03:00", id="03:00"),
        pytest.param("0 12 * * *", "12:00", "12:00", id="noon"),
    ],
)
def test_a_daily_job_runs_exactly_once_every_local_day_of_a_year(expr: str, at: str, on_spring_day: str, zone: str) -> None:
    runs = runs_in_2024(expr, zone)
    assert [run.date() for run in runs] == ALL_DAYS_2024
    times = {run.date(): run.strftime("%H:%M") for run in runs}
    # New York's spring gap is 02:00-03:00 too, so the same expectation holds in both zones.
    assert times.pop(SPRING[zone]) == on_spring_day
    assert set(times.values()) == {at}


def test_a_time_repeated_by_fall_back_runs_at_its_first_occurrence() -> None:
    runs = runs_in_2024("30 2 * * *", BERLIN)
    (autumn,) = [run for run in runs if run.date() == AUTUMN[BERLIN]]
    assert autumn.utcoffset() == timedelta(hours=2)  # 02:30 CEST, not 02:30 CET an hour later


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
@pytest.mark.parametrize(
    "expr",
    [pytest.param("0 * * * *", id="on-the-hour"), pytest.param("30 * * * *", id="half-past")],
)
def test_an_hourly_job_follows_the_clock_23_runs_in_spring_25_in_autumn(expr: str, zone: str) -> None:
    # A job with a wildcard hour runs at every real instant whose local time matches (as cron does):
    # the hour lost in spring has no run, the hour repeated in autumn runs twice; it stays one hour apart.
    runs = runs_in_2024(expr, zone)
    per_day = Counter(run.date() for run in runs)
    assert per_day.pop(SPRING[zone]) == 23
    assert per_day.pop(AUTUMN[zone]) == 25
    assert set(per_day.values()) == {24}
    assert len(per_day) == 364
    assert {b.timestamp() - a.timestamp() for a, b in zip(runs, runs[1:])} == {3600.0}


@pytest.mark.parametrize(
    "start, expected",
    [
        pytest.param("2024-03-31T01:59:00", ["03:00+0200", "03:02+0200"], id="spring-gap-skipped"),
        pytest.param(
            "2024-10-27T02:55:00+02:00", ["02:56+0200", "02:58+0200", "02:00+0100", "02:02+0100"], id="autumn-hour-twice"
        ),
    ],
)
def test_a_two_minute_job_across_berlin_transitions(start: str, expected: list[str]) -> None:
    tz = ZoneInfo(BERLIN)
    schedule = parse_schedule("*/2 * * * *", None, timezone=BERLIN)
    parsed = datetime.fromisoformat(start)
    t = (parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)).timestamp()
    got = []
    for _ in expected:
        t = schedule.next_after(t)
        got.append(datetime.fromtimestamp(t, tz).strftime("%H:%M%z"))
    assert got == expected


def test_a_fixed_time_job_restarted_during_the_repeated_hour_does_not_run_again() -> None:
    schedule = parse_schedule("30 2 * * *", None, timezone=BERLIN)
    second_pass_0210 = local_ts(BERLIN, 2024, 10, 27, 1, 10) + 2 * 3600  # 02:10 CET
    assert datetime.fromtimestamp(second_pass_0210, ZoneInfo(BERLIN)).strftime("%H:%M%z") == "02:10+0100"
    assert schedule.next_after(second_pass_0210) == local_ts(BERLIN, 2024, 10, 28, 2, 30)


def test_a_six_field_schedule_counts_seconds() -> None:
    schedule = parse_schedule("* * * * * */2", None)
    t = datetime(2024, 5, 1, 12, 0, 0).timestamp()  # any instant; the schedule is UTC
    t = t - t % 60
    dues = [t := schedule.next_after(t) for _ in range(31)]
    assert [due % 60 for due in dues[:3]] == [2.0, 4.0, 6.0]
    assert {b - a for a, b in zip(dues, dues[1:])} == {2.0}


def test_without_a_timezone_cron_is_utc_and_the_caller_passes_the_local_zone() -> None:
    noon_utc = parse_schedule("0 12 * * *", None)
    assert noon_utc.next_after(datetime.fromisoformat("2024-06-01T00:00:00+00:00").timestamp()) == (
        datetime.fromisoformat("2024-06-01T12:00:00+00:00").timestamp()
    )
    noon_local = parse_schedule("0 12 * * *", None, local_tz=ZoneInfo(NEW_YORK))
    assert noon_local.next_after(local_ts(NEW_YORK, 2024, 6, 1)) == local_ts(NEW_YORK, 2024, 6, 1, 12)


def test_interval_due_times_are_on_a_grid_offset_by_a_stable_per_key_jitter() -> None:
    schedule = parse_schedule(None, 60, jitter=15)
    keys = [f"web{n}: http" for n in range(50)]
    offsets = [schedule.jitter_offset(key) for key in keys]
    assert all(0 <= offset < 15 for offset in offsets)
    assert len(set(offsets)) == len(keys)  # spread out, not all on the same second
    assert max(offsets) - min(offsets) > 10
    # Stable: a freshly parsed schedule (a restart) gives the same phase.
    assert [parse_schedule(None, 60, jitter=15).jitter_offset(key) for key in keys] == offsets
    t = 1_700_000_000.25
    for key, offset in zip(keys, offsets):
        due = schedule.next_after(t, key)
        assert t < due <= t + 60
        assert (due - offset) % 60 == pytest.approx(0, abs=1e-6)
        assert schedule.next_after(due, key) == pytest.approx(due + 60)  # strictly after, even exactly at a due


def test_an_interval_without_jitter_is_on_multiples_of_the_interval() -> None:
    schedule = parse_schedule(None, 30, jitter=0)
    assert schedule.next_after(1_000_000.0) == 1_000_020.0  # 1_000_020 = 33334 * 30
    assert schedule.next_after(1_000_020.0) == 1_000_050.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"cron": "0 * * * *", "interval": 60}, "exactly one", id="both"),
        pytest.param({"cron": None, "interval": None}, "exactly one", id="neither"),
        pytest.param({"cron": "0 * * *", "interval": None}, "5 fields", id="four-fields"),
        pytest.param({"cron": "61 * * * *", "interval": None}, "not a valid cron", id="bad-minute"),
        pytest.param({"cron": "0 * * * *", "interval": None, "timezone": "Mars/Olympus"}, "unknown timezone", id="tz"),
        pytest.param({"cron": None, "interval": 60, "timezone": BERLIN}, "cron schedules only", id="tz-on-interval"),
        pytest.param({"cron": None, "interval": 0}, "positive", id="zero-interval"),
        pytest.param({"cron": None, "interval": 60, "jitter": 61}, "jitter", id="jitter-above-interval"),
        pytest.param({"cron": "0 * * * *", "interval": None, "jitter": 5}, "interval", id="jitter-on-cron"),
    ],
)
def test_invalid_schedules_are_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(**kwargs)


# --- the daemon loop, simulated -------------------------------------------------------------------

SCHEDULES = {
    "every-minute": parse_schedule("* * * * *", None),
    "interval-60": parse_schedule(None, 60, jitter=20),
    "hourly": parse_schedule("0 * * * *", None),
    "daily": parse_schedule("0 12 * * *", None),
}
T0 = datetime.fromisoformat("2024-06-01T11:00:00+00:00").timestamp()


def simulate(jump_at: float, jump: float, until: float) -> list[tuple[float, list[str]]]:
    """Run the daemon loop on a fake clock: wake at next_wakeup (+50 ms), run tasks instantly; at
    `jump_at` (real time) the clock moves by `jump`. Returns (clock at wake-up, tasks started)."""
    clocks = {key: first_clock(schedule, key, T0) for key, schedule in SCHEDULES.items()}
    wakeups = []
    real, skew = T0, 0.0
    while real < until:
        wake = next_wakeup(clocks)
        assert wake is not None
        real = max(real, wake - skew) + 0.05
        if skew == 0.0 and real >= jump_at:
            real, skew = jump_at, jump
        now = real + skew
        starts = due_tasks(clocks, SCHEDULES, now)
        assert all(start.lateness >= 0 for start in starts)
        wakeups.append((now, [start.key for start in starts]))
        for clock in clocks.values():
            assert clock.next_due > now  # nothing is left due: the loop never spins
            clock.finished()
    return wakeups


@pytest.mark.parametrize(
    "jump",
    [
        pytest.param(3600, id="+1h"),
        pytest.param(-3600, id="-1h"),
        pytest.param(6 * 3600, id="+6h"),
        pytest.param(600, id="10-minute-suspend"),
    ],
)
def test_a_clock_jump_never_causes_a_burst(jump: float) -> None:
    jump_at = T0 + 1800 + 7  # 11:30:07
    wakeups = simulate(jump_at, jump, until=jump_at + 4 * 3600)
    started = Counter()
    for now, keys in wakeups:
        assert len(keys) == len(set(keys))  # at most one start per task per wake-up
        started.update(keys)
    first = next(i for i, (now, _) in enumerate(wakeups) if now == jump_at + jump)
    after_jump = wakeups[first:]
    first_now, first_keys = after_jump[0]
    if jump > 0:
        # Everything that fell due during the jump catches up once, at once, then keeps its schedule.
        assert set(first_keys) >= {"every-minute", "interval-60"}
        assert ("hourly" in first_keys) == (jump >= 3600)  # 12:00 fell inside the jump
        assert ("daily" in first_keys) == (jump >= 3600)
    else:
        assert first_keys == []
    per_minute = [first_now] + [now for now, keys in after_jump if "every-minute" in keys]
    per_minute_gaps = [b - a for a, b in zip(per_minute, per_minute[1:])]
    assert per_minute_gaps and max(per_minute_gaps) <= 120  # never silent for the hour the clock lost


def test_after_the_clock_goes_back_an_hourly_or_daily_job_does_not_run_its_time_again() -> None:
    noon = datetime.fromisoformat("2024-06-01T12:00:00+00:00").timestamp()
    wakeups = simulate(jump_at=noon + 600, jump=-3600, until=noon + 3 * 3600)
    hourly = [now for now, keys in wakeups if "hourly" in keys]
    daily = [now for now, keys in wakeups if "daily" in keys]
    assert [round(now - noon) for now in daily] == [0]
    # 12:00 ran before the jump (clock 12:10 -> 11:10): the next hourly run is 13:00, not 12:00 again.
    assert [round(now - noon) for now in hourly][:3] == [0, 3600, 7200]


def test_a_due_task_still_running_is_skipped_and_counted_not_overlapped() -> None:
    schedules = {"slow": parse_schedule(None, 60)}
    clocks = {"slow": TaskClock(next_due=120.0)}
    assert [s.key for s in due_tasks(clocks, schedules, 120.0)] == ["slow"]
    assert clocks["slow"].running and clocks["slow"].next_due == 180.0
    assert due_tasks(clocks, schedules, 180.0) == []  # still running at its next due time
    assert clocks["slow"].skipped == 1 and clocks["slow"].next_due == 240.0
    clocks["slow"].finished()
    assert due_tasks(clocks, schedules, 200.0) == []  # finishing does not start it early
    assert [s.due for s in due_tasks(clocks, schedules, 240.0)] == [240.0]
    assert clocks["slow"].skipped == 1


def test_lateness_is_the_time_from_due_to_start_and_a_long_gap_starts_once() -> None:
    schedules = {"a": parse_schedule(None, 10), "b": parse_schedule(None, 10)}
    clocks = {"a": TaskClock(next_due=100.0), "b": TaskClock(next_due=105.0)}
    (start,) = due_tasks(clocks, schedules, 100.25)
    assert (start.key, start.due, start.lateness) == ("a", 100.0, 0.25)
    clocks["a"].finished()
    starts = due_tasks(clocks, schedules, 1000.5)  # woke up after a suspend: 90 due times missed
    assert [(s.key, s.due, s.lateness) for s in starts] == [("a", 110.0, 890.5), ("b", 105.0, 895.5)]
    assert clocks["a"].next_due == clocks["b"].next_due == 1010.0


def test_next_wakeup_is_the_earliest_due_time() -> None:
    assert next_wakeup({}) is None
    clocks = {"a": TaskClock(next_due=300.0), "b": TaskClock(next_due=120.5, running=True), "c": TaskClock(next_due=200.0)}
    assert next_wakeup(clocks) == 120.5


def test_schedules_compare_by_value_so_a_reload_can_keep_unchanged_clocks() -> None:
    assert parse_schedule("0 * * * *", None, timezone=BERLIN) == Schedule(cron="0 * * * *", tz=ZoneInfo(BERLIN))
    assert parse_schedule(None, 60, jitter=5) != parse_schedule(None, 60, jitter=6)


def drive_year(zone: str, suspends: dict[float, float]) -> tuple[dict[str, list[float]], list[list[str]]]:
    """The daemon's loop on a fake clock through local 2024: sleep until next_wakeup, wake a little
    late, start what due_tasks gives (each run finishes at once). `suspends` maps an instant to how
    long the machine sleeps from then: the loop wakes only after it."""
    import random

    tz = ZoneInfo(zone)
    schedules = {
        "daily": parse_schedule("30 2 * * *", None, timezone=zone),
        "hourly": parse_schedule("0 * * * *", None, timezone=zone),
        "quarter": parse_schedule(None, 900.0),
    }
    start = datetime(2024, 1, 1, tzinfo=tz).timestamp()
    end = datetime(2025, 1, 1, tzinfo=tz).timestamp()
    clocks = {key: first_clock(s, key, start) for key, s in schedules.items()}
    runs: dict[str, list[float]] = {key: [] for key in schedules}
    batches: list[list[str]] = []
    pending = sorted(suspends.items())
    rng = random.Random(7)
    now = start
    while True:
        wake = next_wakeup(clocks)
        assert wake is not None
        now = max(now, wake + rng.uniform(0.0, 0.05))
        while pending and pending[0][0] <= now:
            at, length = pending.pop(0)
            now = max(now, at + length)
        if now >= end:
            return runs, batches
        batch = due_tasks(clocks, schedules, now)
        batches.append([s.key for s in batch])
        for started in batch:
            runs[started.key].append(now)
            clocks[started.key].finished()


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_a_simulated_year_of_the_daemon_loop(zone: str) -> None:
    runs, batches = drive_year(zone, {})
    tz = ZoneInfo(zone)
    days = [datetime.fromtimestamp(t, tz).date() for t in runs["daily"]]
    assert days == ALL_DAYS_2024  # once a day, DST days included
    # every real hour (23 on the spring day, 25 in autumn) but the start itself: due times come after it
    assert len(runs["hourly"]) == 366 * 24 - 1
    assert len(runs["quarter"]) == 366 * 24 * 4 - 1
    assert all(len(batch) == len(set(batch)) for batch in batches)


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_suspends_during_a_year_never_cause_a_burst(zone: str) -> None:
    tz = ZoneInfo(zone)
    # a night's sleep (8 h from 22:00) on the first of every month, and a weekend away in June
    suspends = {datetime(2024, month, 1, 22, tzinfo=tz).timestamp(): 8 * 3600.0 for month in range(1, 13)}
    suspends[datetime(2024, 6, 14, 18, tzinfo=tz).timestamp()] = 62 * 3600.0
    runs, batches = drive_year(zone, suspends)
    # on waking, each task that missed due times runs once, then keeps its schedule
    for resume in (at + length for at, length in suspends.items()):
        for key, times in runs.items():
            assert sum(1 for t in times if resume <= t < resume + 1) <= 1, (key, resume)
            assert not [t for t in times if t < resume and t > resume - 1], key
    days = Counter(datetime.fromtimestamp(t, tz).date() for t in runs["daily"])
    assert max(days.values()) == 1  # never twice on one day
    # 02:30 slept through on the 15th and 16th; on the 17th it runs once, late, on waking at 08:00
    asleep = {date(2024, 6, 15), date(2024, 6, 16)}
    assert set(ALL_DAYS_2024) - set(days) <= asleep
    assert all(len(batch) == len(set(batch)) for batch in batches)


def _zoneinfo_file(name: str) -> "Path":
    from pathlib import Path

    for root in ("/usr/share/zoneinfo", "/usr/lib/zoneinfo"):
        if (Path(root) / name).is_file():
            return Path(root) / name
    pytest.skip("no system zoneinfo files")


@pytest.mark.parametrize("setup, environ, expected", [
    pytest.param("none", {"TZ": "Europe/Berlin"}, "Europe/Berlin", id="TZ wins"),
    pytest.param("none", {"TZ": ":America/New_York"}, "America/New_York", id="TZ with a leading colon"),
    pytest.param("link", {}, "Asia/Kolkata", id="a link into the zoneinfo tree names the zone"),
    pytest.param("copy", {}, "localtime", id="a copied zone file has no name"),
    pytest.param("missing", {}, "UTC", id="nothing: UTC"),
    pytest.param("missing", {"TZ": "Nowhere/Atlantis"}, "UTC", id="an unknown TZ is ignored"),
])
def test_the_machines_zone_is_cron_s_default(tmp_path, setup: str, environ: dict, expected: str) -> None:
    import shutil

    from ce_agent.scheduler import local_zone

    localtime = tmp_path / "localtime"
    if setup == "link":
        localtime.symlink_to(_zoneinfo_file("Asia/Kolkata"))
    elif setup == "copy":
        shutil.copy(_zoneinfo_file("Asia/Kolkata"), localtime)
    zone = local_zone(environ, str(localtime))
    assert (getattr(zone, "key", None) or str(zone)) == expected
