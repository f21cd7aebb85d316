"""Performance baselines (ce_agent.baseline) and the numbers they share with reports and stats (ce_agent.history)."""

from __future__ import annotations

import json
from datetime import date, timedelta, timezone
from typing import Any

import pytest

from ce_agent import baseline
from ce_agent.history import (
    change_percent,
    days_between,
    percentile,
    status_name,
    summarize,
    weekday_hour,
)
from ce_agent.store import ResultRow

UTC = timezone.utc
T0 = 1714953600.0  # the fake clock starts on Monday 2024-05-06 00:00 UTC
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def result(ts: float, duration: float = 0.1, *, check: str = "Home page", host: str = "web1", play: str = "Web",
           status: int = 0, metrics: list[dict] | None = None) -> ResultRow:
    return ResultRow(ts, play, host, check, "http", status, "HTTP 200", duration, metrics or [])


def metric(name: str, value: float | None, unit: str = "", **labels: str) -> dict:
    return {"name": name, "value": value, "unit": unit, "labels": labels, "warn": None, "crit": None,
            "min": None, "max": None}


def runs(durations: list[float], start: float = T0, **kwargs: Any) -> list[ResultRow]:
    """One result a minute from `start`, with these run times."""
    return [result(start + n * MINUTE, d, **kwargs) for n, d in enumerate(durations)]


# ---- the shared numbers (ce_agent.history) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        pytest.param(range(1, 101), 50, 50, id="p50 of 1..100 is 50"),
        pytest.param(range(1, 101), 95, 95, id="p95 of 1..100 is 95 (nearest rank: ceil(0.95 * 100) = 95th value)"),
        pytest.param(range(1, 101), 99, 99, id="p99 of 1..100 is 99"),
        pytest.param(range(1, 101), 100, 100, id="p100 is the maximum"),
        pytest.param(range(1, 101), 0, 1, id="p0 is the minimum"),
        pytest.param([1, 2, 3, 4], 50, 2, id="p50 of an even count is the lower middle, no interpolation"),
        pytest.param([1, 2, 3, 4], 95, 4, id="p95 of 4 values is the largest"),
        pytest.param(range(1, 21), 95, 19, id="p95 of 1..20 is the 19th value"),
        pytest.param([3.5], 99, 3.5, id="one value is every percentile"),
        pytest.param([9, 1, 5, 3, 7], 50, 5, id="input order does not matter"),
        pytest.param([], 95, None, id="no values: None"),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], pct: float, expected: float | None) -> None:
    assert percentile(values, pct) == expected


@pytest.mark.parametrize("pct", [pytest.param(-1, id="below 0"), pytest.param(100.5, id="above 100"),
                                 pytest.param(float("nan"), id="NaN")])
def test_percentile_outside_0_to_100_is_an_error(pct: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1, 2], pct)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(range(1, 101), {"count": 100, "min": 1, "max": 100, "mean": 50.5, "p50": 50, "p95": 95, "p99": 99},
                     id="1..100"),
        pytest.param([0.1, 0.2], {"count": 2, "min": 0.1, "max": 0.2, "mean": 0.15, "p50": 0.1, "p95": 0.2,
                                  "p99": 0.2}, id="the mean is rounded to 6 decimals (no 0.15000000000000002)"),
        pytest.param([], {"count": 0, "min": None, "max": None, "mean": None, "p50": None, "p95": None, "p99": None},
                     id="nothing: count 0 and None"),
    ],
)
def test_summarize(values: list[float], expected: dict) -> None:
    assert summarize(values) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(100, 120, 20.0, id="a fifth more is +20 %"),
        pytest.param(100, 80, -20.0, id="a fifth less is -20 %"),
        pytest.param(3, 4, 33.33, id="rounded to 2 decimals"),
        pytest.param(-10, -5, 50.0, id="a rise from a negative value is positive"),
        pytest.param(0, 0, 0.0, id="0 to 0 is no change"),
        pytest.param(0, 5, None, id="growth from 0 has no percentage"),
        pytest.param(None, 5, None, id="nothing to compare with"),
    ],
)
def test_change_percent(old: float | None, new: float | None, expected: float | None) -> None:
    assert change_percent(old, new) == expected


def test_time_buckets_are_calendar_days_and_hours_in_the_zone_given() -> None:
    assert days_between(T0 + 23 * HOUR, T0 + 2 * DAY + 1, UTC) == [date(2024, 5, 6), date(2024, 5, 7),
                                                                   date(2024, 5, 8)]
    assert weekday_hour(T0 + 23 * HOUR, UTC) == (0, 23)  # Monday 23:00 UTC ...
    assert weekday_hour(T0 + 23 * HOUR, timezone(timedelta(hours=2))) == (1, 1)  # ... is Tuesday 01:00 at +02:00


@pytest.mark.parametrize(
    ("code", "name"),
    [pytest.param(0, "OK", id="0"), pytest.param(2, "CRITICAL", id="2"), pytest.param("warning", "WARNING", id="a name"),
     pytest.param("3", "UNKNOWN", id="a code as text"), pytest.param(7, "7", id="outside 0-3 stays as it is")],
)
def test_status_name(code: object, name: str) -> None:
    assert status_name(code) == name


# ---- saving a baseline -----------------------------------------------------------------------------


def test_a_baseline_holds_run_time_and_metric_statistics_per_check() -> None:
    # 100 runs of 0.01 s .. 1.00 s, each with a latency metric of 10x the run time, and an unknown value
    history = [
        result(T0 + n * MINUTE, n / 100, metrics=[metric("latency", n / 10, "s", url="/"), metric("size", None)])
        for n in range(1, 101)
    ]
    saved = baseline.compute_baseline(history, since=T0, now=T0 + DAY, name="weekly")

    assert saved == {
        "version": 1, "name": "weekly", "created": T0 + DAY, "since": T0, "results": 100,
        "checks": [{
            "play": "Web", "host": "web1", "check": "Home page", "plugin": "http",
            "duration": {"count": 100, "min": 0.01, "max": 1.0, "mean": 0.505, "p50": 0.5, "p95": 0.95, "p99": 0.99},
            "metrics": [{"name": "latency", "labels": {"url": "/"}, "unit": "s",
                         "stats": {"count": 100, "min": 0.1, "max": 10.0, "mean": 5.05, "p50": 5.0, "p95": 9.5,
                                   "p99": 9.9}}],  # `size` was never known: no series at all
        }],
    }
    assert baseline.load_baseline(json.loads(json.dumps(saved))) == saved  # what is saved loads back as is


def test_a_baseline_only_takes_results_from_since_to_now_and_keeps_checks_apart() -> None:
    history = [
        result(T0 - 1, 50.0),  # before `since`
        result(T0, 1.0),
        result(T0 + HOUR, 2.0, host="web2"),
        result(T0 + HOUR, 3.0, check="API"),
        result(T0 + DAY + 1, 50.0),  # after `now`
    ]
    saved = baseline.compute_baseline(history, since=T0, now=T0 + DAY)
    assert saved["results"] == 3
    assert [(c["host"], c["check"], c["duration"]["max"]) for c in saved["checks"]] == [
        ("web1", "API", 3.0), ("web1", "Home page", 1.0), ("web2", "Home page", 2.0)]


@pytest.mark.parametrize(
    "name",
    [pytest.param("../etc/passwd", id="a path"), pytest.param("", id="empty"), pytest.param("a b", id="a space"),
     pytest.param("x" * 65, id="longer than 64")],
)
def test_a_baseline_name_must_be_safe_as_a_file_name(name: str) -> None:
    with pytest.raises(ValueError, match="a baseline name is 1-64 letters"):
        baseline.compute_baseline([], T0, T0 + DAY, name)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param([], "not a ce-agent baseline", id="not an object"),
        pytest.param({"version": 1}, "not a ce-agent baseline", id="no checks"),
        pytest.param({"version": 2, "checks": []}, "newer than this ce-agent", id="a newer version"),
        pytest.param({"version": 1, "checks": [{"play": "Web"}]}, "baseline check #1: expected play, host",
                     id="a check without its fields"),
    ],
)
def test_loading_a_damaged_baseline_says_what_is_wrong(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        baseline.load_baseline(data)


# ---- comparing with it -----------------------------------------------------------------------------


@pytest.fixture
def weekly() -> dict:
    """A week of runs of `Home page` on web1 and `API` on web2, every one taking exactly 1 s."""
    history = runs([1.0] * 10) + runs([1.0] * 10, host="web2", check="API")
    return baseline.compute_baseline(history, since=T0, now=T0 + 7 * DAY, name="weekly")


@pytest.mark.parametrize(
    ("recent_duration", "p95_change", "verdict"),
    [
        pytest.param(1.0, 0.0, "same", id="unchanged"),
        pytest.param(1.2, 20.0, "same", id="exactly the threshold (20 %) is not more than it"),
        pytest.param(1.21, 21.0, "regressed", id="21 % slower regressed"),
        pytest.param(0.8, -20.0, "same", id="exactly 20 % faster is the same"),
        pytest.param(0.5, -50.0, "improved", id="twice as fast improved"),
    ],
)
def test_compare_gives_the_change_of_p95_and_mean_and_a_verdict(weekly: dict, recent_duration: float,
                                                                p95_change: float, verdict: str) -> None:
    recent = runs([recent_duration] * 5, start=T0 + 8 * DAY)
    rows = baseline.compare(weekly, recent, T0 + 9 * DAY, since=T0 + 8 * DAY)
    row = next(r for r in rows if r["host"] == "web1")
    assert (row["series"], row["p95_change_pct"], row["mean_change_pct"], row["verdict"]) == (
        "duration", p95_change, p95_change, verdict)
    assert row["baseline"]["p95"] == 1.0 and row["recent"]["p95"] == recent_duration


def test_compare_names_new_series_and_those_without_recent_data(weekly: dict) -> None:
    recent = runs([1.0] * 3, start=T0 + 8 * DAY, metrics=[metric("bytes", 512, "B")])
    rows = baseline.compare(weekly, recent, T0 + 9 * DAY)
    assert [(r["host"], r["check"], r["series"], r["verdict"]) for r in rows] == [
        ("web1", "Home page", "duration", "same"),
        ("web1", "Home page", "bytes", "new"),  # the baseline never saw this metric
        ("web2", "API", "duration", "no_data"),  # the baseline has it, nothing ran since
    ]
    assert baseline.counts(rows) == {"regressed": 0, "improved": 0, "same": 1, "new": 1, "no_data": 1}


def test_compare_threshold_can_be_changed(weekly: dict) -> None:
    recent = runs([1.1] * 5, start=T0 + 8 * DAY)
    rows = baseline.compare(weekly, recent, T0 + 9 * DAY, threshold_pct=5)
    assert rows[0]["verdict"] == "regressed"


def test_compare_text_and_json(weekly: dict) -> None:
    recent = runs([1.5] * 5, start=T0 + 8 * DAY)
    rows = baseline.compare(weekly, recent, T0 + 9 * DAY)

    text = baseline.render_compare_text(weekly, rows, tz=UTC).splitlines()
    assert text[0] == ("baseline 'weekly': 20 results from 2024-05-06T00:00:00+00:00 to 2024-05-13T00:00:00+00:00; "
                       "regressed/improved = p95 more than 20 % above/below")
    assert text[1].split() == ["PLAY", "HOST", "CHECK", "SERIES", "BASE", "P95", "NOW", "P95", "P95", "CHANGE",
                               "BASE", "MEAN", "NOW", "MEAN", "MEAN", "CHANGE", "VERDICT"]
    assert text[2].split() == ["Web", "web1", "Home", "page", "duration", "1", "s", "1.5", "s", "+50.0", "%", "1", "s",
                               "1.5", "s", "+50.0", "%", "regressed"]
    assert text[-1] == "1 regressed, 0 improved, 0 same, 0 new, 1 no data"

    data = json.loads(baseline.as_json(weekly, rows))
    assert data["baseline"] == {"name": "weekly", "created": T0 + 7 * DAY, "since": T0, "results": 20}
    assert data["counts"]["regressed"] == 1 and data["rows"] == rows and data["threshold_pct"] == 20.0


# ---- the regression rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        pytest.param({"duration": True}, baseline.RegressionRule(True, None, {}, 20.0, 3600.0),
                     id="defaults: 20 % over the last hour"),
        pytest.param({"metric": "latency", "threshold": "15%", "window": "30m"},
                     baseline.RegressionRule(False, "latency", {}, 15.0, 1800.0), id="a metric, 15% in 30 min"),
        pytest.param({"duration": True, "threshold": 30}, baseline.RegressionRule(True, None, {}, 30.0, 3600.0),
                     id="a bare number is a percentage too"),
        pytest.param({"metric": "latency", "labels": {"url": "/"}, "threshold": " 5 % "},
                     baseline.RegressionRule(False, "latency", {"url": "/"}, 5.0, 3600.0), id="labels narrow a metric"),
    ],
)
def test_parse_regression_rule(rule: dict, expected: baseline.RegressionRule) -> None:
    assert baseline.parse_regression_rule(rule) == expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        pytest.param("20%", "regression: expected a mapping", id="not a mapping"),
        pytest.param({}, "say what to watch: duration: true or metric: NAME", id="nothing to watch"),
        pytest.param({"duration": True, "metric": "x"}, "either duration: true or metric: NAME, not both", id="both"),
        pytest.param({"duration": "yes"}, "regression.duration: expected true or false", id="duration not a bool"),
        pytest.param({"metric": ""}, "regression.metric: expected a metric name", id="an empty metric"),
        pytest.param({"duration": True, "threshold": "a lot"}, "regression.threshold: expected a percentage",
                     id="threshold in words"),
        pytest.param({"duration": True, "threshold": "-5%"}, "regression.threshold: expected a percentage of at least 0",
                     id="a negative threshold"),
        pytest.param({"duration": True, "window": "soon"}, "regression.window: expected a duration", id="window in words"),
        pytest.param({"duration": True, "window": 0}, "regression.window: must be more than 0", id="a zero window"),
        pytest.param({"duration": True, "treshold": "20%"}, "unknown key 'treshold'", id="a typo"),
        pytest.param({"duration": True, "labels": {"a": "b"}}, "only a metric has labels", id="labels on duration"),
    ],
)
def test_an_invalid_regression_rule_says_what_is_wrong(rule: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        baseline.parse_regression_rule(rule)


def test_regression_rule_on_run_time(weekly: dict) -> None:
    now = T0 + 8 * DAY
    slow = runs([1.0] * 30, start=now - 2 * HOUR) + runs([1.5] * 30, start=now - 30 * MINUTE)  # slow in the last hour
    active, summary, value = baseline.regression_check({"duration": True, "threshold": "20%"}, weekly, slow, now)
    assert (active, value) == (True, 50.0)
    assert summary == ("Home page on web1: p95 run time 1.5 s over the last 1h is +50.0 % against baseline 'weekly' "
                       "(1 s), more than the 20 % threshold")

    active, summary, value = baseline.regression_check({"duration": True, "threshold": "60%"}, weekly, slow, now)
    assert (active, value) == (False, 50.0)
    assert summary.endswith("within the 60 % threshold")


def test_regression_rule_on_a_metric_with_labels() -> None:
    history = [result(T0 + n * MINUTE, metrics=[metric("latency", 100, "ms", url="/"),
                                                 metric("latency", 10, "ms", url="/api")]) for n in range(10)]
    saved = baseline.compute_baseline(history, T0, T0 + DAY, "weekly")
    now = T0 + 2 * DAY
    recent = [result(now - n * MINUTE, metrics=[metric("latency", 100, "ms", url="/"),
                                                 metric("latency", 13, "ms", url="/api")]) for n in range(10)]

    # over every series of the metric, the worst speaks: /api is 30 % slower
    assert baseline.regression_check({"metric": "latency"}, saved, recent, now) == (
        True, 'Home page on web1: p95 latency{url="/api"} 13 ms over the last 1h is +30.0 % against baseline '
              "'weekly' (10 ms), more than the 20 % threshold", 30.0)
    # narrowed to "/", nothing changed
    active, _, value = baseline.regression_check({"metric": "latency", "labels": {"url": "/"}}, saved, recent, now)
    assert (active, value) == (False, 0.0)


@pytest.mark.parametrize(
    ("rule", "recent_start", "summary"),
    [
        pytest.param({"duration": True}, T0 + 8 * DAY - 3 * HOUR,
                     "no run time in the last 1h to compare with baseline 'weekly'", id="nothing ran in the window"),
        pytest.param({"metric": "nope"}, T0 + 8 * DAY - 10 * MINUTE,
                     "baseline 'weekly' has no nope to compare with", id="a metric the baseline never saw"),
    ],
)
def test_regression_rule_without_anything_to_compare_is_inactive(weekly: dict, rule: dict, recent_start: float,
                                                                 summary: str) -> None:
    recent = runs([9.0] * 5, start=recent_start)
    assert baseline.regression_check(rule, weekly, recent, T0 + 8 * DAY) == (False, summary, None)


def test_regression_rule_can_be_narrowed_to_one_check(weekly: dict) -> None:
    now = T0 + 8 * DAY
    recent = runs([3.0] * 5, start=now - 10 * MINUTE, host="web2", check="API") + runs([1.0] * 5, start=now - 10 * MINUTE)
    assert baseline.regression_check({"duration": True}, weekly, recent, now)[0] is True
    assert baseline.regression_check({"duration": True}, weekly, recent, now, host="web1", check="Home page")[0] is False


def test_counters_are_left_out_of_a_baseline() -> None:
    from ce_agent.baseline import compute_baseline
    from ce_agent.store import ResultRow

    rows = [ResultRow(100.0 + i, "p", "h", "c", "x", 0, "", 0.1,
                      [{"name": "requests_total", "value": 100.0 * i, "unit": "c", "labels": {}},
                       {"name": "latency", "value": 0.2, "unit": "s", "labels": {}}]) for i in range(5)]
    (check,) = compute_baseline(rows, 0.0, 200.0)["checks"]
    assert [m["name"] for m in check["metrics"]] == ["latency"]
