"""The `heartbeat` check: a cron job's pings judged against its period or cron schedule, plus grace."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from ce_agent.checks.heartbeat import HeartbeatCheck, Pings, expected_runs, judge
from ce_agent.contracts import Status, TaskContext
from ce_agent.options import convert_options
from ce_agent.store import Store

UTC = timezone.utc
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0


def at(text: str) -> float:
    """A UTC time such as "05-01 02:00" (in May 2024) as seconds since the epoch."""
    return datetime.strptime(f"2024-{text}", "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M").replace(
        tzinfo=UTC).timestamp()


NOW = at("05-01 12:00")


@pytest.mark.parametrize(
    "pings, status, summary",
    [
        pytest.param(Pings(), Status.CRITICAL, "no ping yet for backup; run `ce-agent ping backup` from the job",
                     id="never pinged"),
        pytest.param(Pings(success=NOW - 3 * MIN), Status.OK, "backup pinged 3m ago (every 1h, grace 5m)",
                     id="pinged in time"),
        pytest.param(Pings(success=NOW - 65 * MIN), Status.OK, "backup pinged 1h5m ago (every 1h, grace 5m)",
                     id="at the very end of the grace"),
        pytest.param(Pings(success=NOW - 65 * MIN - 1), Status.CRITICAL,
                     "backup is late: last success 1h5m ago, overdue by 1s (every 1h, grace 5m)",
                     id="one second past the grace"),
        pytest.param(Pings(success=NOW - DAY), Status.CRITICAL,
                     "backup is late: last success 1d ago, overdue by 22h55m (every 1h, grace 5m)", id="a day late"),
        pytest.param(Pings(success=NOW - HOUR, fail=NOW - 2 * MIN), Status.CRITICAL,
                     "backup reported a failure 2m ago (last success 1h ago; every 1h, grace 5m)",
                     id="the newest ping is a failure"),
        pytest.param(Pings(fail=NOW - 2 * MIN), Status.CRITICAL,
                     "backup reported a failure 2m ago (never succeeded; every 1h, grace 5m)", id="only failures"),
        pytest.param(Pings(success=NOW - MIN, fail=NOW - 2 * MIN), Status.OK,
                     "backup pinged 1m ago (every 1h, grace 5m)", id="a failure followed by a success"),
        pytest.param(Pings(success=NOW - 2 * HOUR, start=NOW - 2 * MIN), Status.OK,
                     "backup running, started 2m ago (last success 2h ago; every 1h, grace 5m)",
                     id="running: a start younger than grace, even when the last success is old"),
        pytest.param(Pings(start=NOW - 2 * MIN), Status.OK,
                     "backup running, started 2m ago (never succeeded; every 1h, grace 5m)", id="the first run runs"),
        pytest.param(Pings(success=NOW - 30 * MIN, start=NOW - 10 * MIN), Status.OK,
                     "backup pinged 30m ago (every 1h, grace 5m); started 10m ago, not finished",
                     id="a start older than grace, the last success still in time"),
        pytest.param(Pings(success=NOW - 2 * HOUR, start=NOW - 10 * MIN), Status.CRITICAL,
                     "backup is late: last success 2h ago, overdue by 55m (every 1h, grace 5m)",
                     id="a start older than grace does not excuse a late success"),
        pytest.param(Pings(start=NOW - 10 * MIN), Status.CRITICAL,
                     "backup is late: never succeeded (every 1h, grace 5m)", id="started once, never finished"),
        pytest.param(Pings(success=NOW - 30 * MIN, start=NOW - 40 * MIN, fail=NOW - 50 * MIN), Status.OK,
                     "backup pinged 30m ago (every 1h, grace 5m)", id="a start then a success: finished"),
        pytest.param(Pings(success=NOW + 30), Status.OK, "backup pinged 0s ago (every 1h, grace 5m)",
                     id="a ping from a clock ahead of ours"),
    ],
)
def test_period(pings: Pings, status: Status, summary: str) -> None:
    result = judge("backup", pings, NOW, grace=5 * MIN, period=HOUR)
    assert (result.status, result.summary) == (status, summary)


@pytest.mark.parametrize(
    "now, success, status, summary",
    [
        pytest.param(at("05-01 03:00"), at("04-30 02:30"), Status.OK,
                     'backup pinged 1d30m ago (schedule "0 2 * * *", grace 2h)',
                     id="within tonight's grace, last night's run counts"),
        pytest.param(at("05-01 03:00"), at("04-29 02:30"), Status.CRITICAL,
                     "backup is late: no success ping for the run due at 2024-04-30 02:00"
                     ' (last success 2d30m ago; schedule "0 2 * * *", grace 2h)',
                     id="within tonight's grace, but last night's run is missing"),
        pytest.param(at("05-01 04:30"), at("05-01 02:40"), Status.OK,
                     'backup pinged 1h50m ago (schedule "0 2 * * *", grace 2h)', id="tonight's run pinged"),
        pytest.param(at("05-01 04:30"), at("04-30 02:30"), Status.CRITICAL,
                     "backup is late: no success ping for the run due at 2024-05-01 02:00"
                     ' (last success 1d2h ago; schedule "0 2 * * *", grace 2h)', id="tonight's grace is over"),
        pytest.param(at("05-01 04:00"), at("04-30 02:30"), Status.OK,
                     'backup pinged 1d1h ago (schedule "0 2 * * *", grace 2h)', id="at the very end of tonight's grace"),
        pytest.param(at("05-01 04:00:01"), at("04-30 02:30"), Status.CRITICAL,
                     "backup is late: no success ping for the run due at 2024-05-01 02:00"
                     ' (last success 1d1h ago; schedule "0 2 * * *", grace 2h)', id="one second past tonight's grace"),
        pytest.param(at("05-01 02:00"), at("04-30 02:01"), Status.OK,
                     'backup pinged 23h59m ago (schedule "0 2 * * *", grace 2h)',
                     id="now is a run time: that run has its grace"),
        pytest.param(at("05-01 12:00"), at("05-01 01:59"), Status.CRITICAL,
                     "backup is late: no success ping for the run due at 2024-05-01 02:00"
                     ' (last success 10h1m ago; schedule "0 2 * * *", grace 2h)',
                     id="a ping before the run time is for the run before"),
    ],
)
def test_schedule(now: float, success: float, status: Status, summary: str) -> None:
    result = judge("backup", Pings(success=success), now, grace=2 * HOUR, schedule="0 2 * * *", tz=UTC)
    assert (result.status, result.summary) == (status, summary)


@pytest.mark.parametrize(
    "schedule, now, runs",
    [
        pytest.param("0 2 * * *", at("05-01 12:00"), (at("04-30 02:00"), at("05-01 02:00")), id="daily"),
        pytest.param("0 2 * * *", at("05-01 02:00"), (at("04-30 02:00"), at("05-01 02:00")), id="now is a run time"),
        pytest.param("*/15 * * * *", at("05-01 12:14:59"), (at("05-01 11:45"), at("05-01 12:00")), id="every 15m"),
        pytest.param("0 9 * * 1-5", at("05-06 08:00"), (at("05-02 09:00"), at("05-03 09:00")),
                     id="weekdays: Monday morning looks back to Friday"),
    ],
)
def test_expected_runs(schedule: str, now: float, runs: tuple[float, float]) -> None:
    assert expected_runs(schedule, now, UTC) == runs


def test_the_age_metric() -> None:
    (metric,) = judge("backup", Pings(success=NOW - 90), NOW, grace=300, period=HOUR).metrics
    assert (metric.name, metric.value, metric.unit, dict(metric.labels)) == (
        "heartbeat_age_seconds", 90.0, "s", {"name": "backup"})
    (never,) = judge("backup", Pings(), NOW, grace=300, period=HOUR).metrics
    assert never.value is None


@pytest.mark.parametrize(
    "raw, message",
    [
        pytest.param({"name": "backup"}, "period: give exactly one of 'period'", id="neither period nor schedule"),
        pytest.param({"name": "backup", "period": "1h", "schedule": "0 2 * * *"}, "period: give exactly one of",
                     id="both"),
        pytest.param({"name": "backup", "period": 0}, "period: must be more than 0", id="a zero period"),
        pytest.param({"name": "backup", "schedule": "0 2 * *"}, "schedule: a cron schedule has 5 fields",
                     id="four fields"),
        pytest.param({"name": "backup", "schedule": "0 25 * * *"}, "schedule: not a valid cron expression",
                     id="hour 25"),
        pytest.param({"name": "back up", "period": "1h"}, "name: 'back up' may hold only letters", id="a space"),
        pytest.param({"period": "1h"}, "missing required option 'name'", id="no name"),
        pytest.param({"name": "backup", "period": "1h", "grace": "soon"}, "expected a duration", id="bad grace"),
    ],
)
def test_options_are_checked_when_loaded(raw: dict, message: str) -> None:
    options, errors = convert_options(HeartbeatCheck.Options, raw)
    assert options is None
    assert message in errors[0].message, errors


def test_the_examples_are_valid_tasks() -> None:
    for task in yaml.safe_load(HeartbeatCheck.EXAMPLES):
        _, errors = convert_options(HeartbeatCheck.Options, task["heartbeat"])
        assert errors == [], task


# ---- run(): the pings in the real state database --------------------------------------------------------


def check(state_dir: Path | None, **raw: object) -> HeartbeatCheck:
    options, errors = convert_options(HeartbeatCheck.Options, {"name": "backup", "period": "1h", **raw})
    assert not errors, errors
    return HeartbeatCheck(options, TaskContext(task="Backup ran", host="localhost", state_dir=state_dir))


def ping(state_dir: Path, kind: str, ago: float) -> None:
    import time

    store, _ = Store.open(state_dir / "state.db", time.time())
    with store:
        store.add_ping("backup", kind, time.time() - ago)


def test_no_database_yet_means_no_ping_yet(tmp_path: Path) -> None:
    result = check(tmp_path / "state").run()
    assert result.status is Status.CRITICAL and result.summary.startswith("no ping yet for backup")
    assert not (tmp_path / "state").exists()  # a check only reads: it creates no state directory


@pytest.mark.parametrize(
    "pings, status, start",
    [
        pytest.param([("success", 120)], Status.OK, "backup pinged 2m ago", id="OK after a ping"),
        pytest.param([("success", 2 * HOUR)], Status.CRITICAL, "backup is late: last success 2h ago", id="late"),
        pytest.param([("success", 600), ("fail", 60)], Status.CRITICAL, "backup reported a failure 1m ago",
                     id="CRITICAL after a fail ping"),
        pytest.param([("start", 60)], Status.OK, "backup running, started 1m ago", id="running"),
    ],
)
def test_run_reads_the_pings_of_the_state_database(tmp_path: Path, pings: list[tuple[str, float]], status: Status,
                                                   start: str) -> None:
    for kind, ago in pings:
        ping(tmp_path, kind, ago)
    result = check(tmp_path).run()
    assert result.status is status
    assert result.summary.startswith(start), result.summary


def test_other_names_do_not_count(tmp_path: Path) -> None:
    import time

    store, _ = Store.open(tmp_path / "state.db", time.time())
    with store:
        store.add_ping("restore", "success", time.time())
    assert check(tmp_path).run().summary.startswith("no ping yet for backup")


def test_without_a_state_dir_in_the_context_the_default_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_AGENT_STATE_DIR", str(tmp_path))
    ping(tmp_path, "success", 30)
    assert check(None).run().status is Status.OK


def test_an_unusable_state_database_is_unknown(tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("PRAGMA user_version = 99")  # written by a newer ce-agent
    result = check(tmp_path).run()
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("cannot read the pings of backup: ")
