"""`ce-agent stats` (ce_agent.stats): runs and failure rates per check, frequent alerts, notifications, a heatmap."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import timedelta, timezone
from typing import Any

import pytest

from ce_agent import stats
from ce_agent.store import ResultRow

UTC = timezone.utc
T0 = 1714953600.0  # the fake clock starts on Monday 2024-05-06 00:00 UTC
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
NOW = T0 + 7 * DAY
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3


def result(ts: float, status: int = OK, *, check: str = "Home page", host: str = "web1",
           play: str = "Web") -> ResultRow:
    return ResultRow(ts, play, host, check, "http", status, "", 0.1, [])


def series(statuses: Sequence[int], start: float = T0, step: float = MINUTE, **kwargs: Any) -> list[ResultRow]:
    return [result(start + n * step, status, **kwargs) for n, status in enumerate(statuses)]


def event(kind: str, at: float, key: str, summary: str = "") -> dict[str, Any]:
    return {"key": key, "labels": {"check": key, "host": "web1", "play": "Web"}, "kind": kind, "status": 2,
            "summary": summary, "at": at}


def delivery(channel: str, kind: str, at: float, sent: bool = True) -> dict[str, Any]:
    return {"channel": channel, "kind": kind, "at": at, "sent": sent}


def build(results: Sequence[ResultRow] = (), history: Sequence[dict] = (), deliveries: Sequence[dict] = (),
          tz: timezone = UTC, **kwargs: Any) -> dict[str, Any]:
    return stats.build_stats(results, history, deliveries, T0, NOW, tz, **kwargs)


# ---- runs and failures -----------------------------------------------------------------------------


def test_ten_runs_with_two_failures_fail_20_percent() -> None:
    built = build(series([OK, OK, CRITICAL, OK, OK, OK, UNKNOWN, OK, OK, OK]))
    assert built["checks"] == [{
        "play": "Web", "host": "web1", "check": "Home page", "runs": 10, "failures": 2, "failure_rate": 20.0,
        "ok": 8, "warning": 0, "critical": 1, "unknown": 1, "last_at": "2024-05-06T00:09:00+00:00"}]
    assert built["totals"] == {"checks": 1, "runs": 10, "failures": 2, "failure_rate": 20.0, "alerts_fired": 0,
                               "notifications": 0, "notifications_failed": 0}


def test_checks_come_highest_failure_rate_first_and_only_from_the_period() -> None:
    results = (series([OK] * 4, check="steady") + series([WARNING, OK], check="shaky")
               + series([CRITICAL, CRITICAL, OK], check="broken") + [result(T0 - 1, CRITICAL, check="steady")]
               + [result(NOW + 1, CRITICAL, check="steady")])
    checks = build(results)["checks"]
    assert [(c["check"], c["runs"], c["failure_rate"]) for c in checks] == [
        ("broken", 3, 66.67), ("shaky", 2, 50.0), ("steady", 4, 0.0)]


# ---- alerts and notifications ----------------------------------------------------------------------


def test_most_frequent_alerts_count_firing_events() -> None:
    history = [event("firing", T0 + n * HOUR, "disk") for n in range(3)] + [
        event("resolved", T0 + 4 * HOUR, "disk"),
        event("firing", T0 + HOUR, "load", "load 12"), event("firing", T0 + 5 * HOUR, "load", "load 15"),
        event("firing", T0 + 6 * HOUR, "http"),
        event("pending", T0 + HOUR, "quiet"),  # never fired: not listed
        event("firing", T0 - HOUR, "old"),  # before the period
    ]
    built = build(history=history, top=2)
    assert [(a["key"], a["fired"], a["resolved"], a["last_fired"], a["last_summary"]) for a in built["alerts"]] == [
        ("disk", 3, 1, "2024-05-06T02:00:00+00:00", ""),
        ("load", 2, 0, "2024-05-06T05:00:00+00:00", "load 15"),
    ]
    assert built["totals"]["alerts_fired"] == 6


def test_notifications_per_channel() -> None:
    deliveries = [delivery("chat", "firing", T0 + 1), delivery("chat", "resolved", T0 + 2),
                  delivery("chat", "firing", T0 + 3, sent=False), delivery("mail", "firing", T0 + 4),
                  delivery("mail", "firing", T0 - 1)]  # before the period
    built = build(deliveries=deliveries)
    assert built["notifications"] == [
        {"channel": "chat", "total": 3, "sent": 2, "failed": 1, "by_kind": {"firing": 2, "resolved": 1}},
        {"channel": "mail", "total": 1, "sent": 1, "failed": 0, "by_kind": {"firing": 1}},
    ]
    assert (built["totals"]["notifications"], built["totals"]["notifications_failed"]) == (4, 1)


# ---- the heatmap -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "cells"),
    [
        pytest.param(UTC, {(0, 9): 2, (6, 23): 1}, id="UTC: Monday 09:00 twice, Sunday 23:00"),
        pytest.param(timezone(timedelta(hours=2)), {(0, 11): 2, (0, 1): 1},
                     id="+02:00: the same problems at Monday 11:00 and Monday 01:00 (a week later)"),
    ],
)
def test_heatmap_counts_problems_by_weekday_and_hour(tz: timezone, cells: dict[tuple[int, int], int]) -> None:
    results = [result(T0 + 9 * HOUR, CRITICAL), result(T0 + 9 * HOUR + 30 * MINUTE, WARNING),
               result(T0 + 10 * HOUR, OK),  # not a problem
               result(T0 + 6 * DAY + 23 * HOUR, UNKNOWN)]
    heatmap = build(results, tz=tz)["heatmap"]
    found = {(d, h): n for d, day in enumerate(heatmap["counts"]) for h, n in enumerate(day) if n}
    assert found == cells
    assert (heatmap["max"], heatmap["total"]) == (2, 3)


@pytest.mark.parametrize(
    ("top", "text"),
    [
        pytest.param(0, ". 0", id="no problems at all"),
        pytest.param(1, ". 0  @ 1", id="one problem: the top level"),
        pytest.param(5, ". 0  - 1  + 2  * 3  # 4  @ 5", id="five levels of one count each"),
        pytest.param(12, ". 0  - 1-2  + 3-4  * 5-7  # 8-9  @ 10-12", id="ranges"),
    ],
)
def test_heatmap_legend(top: int, text: str) -> None:
    assert stats.legend(top) == text


def test_heatmap_as_text_is_a_7_by_24_grid() -> None:
    # Monday 09:00: 10 problems (the busiest hour), Monday 10:00: 1, Sunday 23:00: 5
    results = ([result(T0 + 9 * HOUR + n, CRITICAL) for n in range(10)] + [result(T0 + 10 * HOUR, WARNING)]
               + [result(T0 + 6 * DAY + 23 * HOUR + n, UNKNOWN) for n in range(5)])
    lines = stats.heatmap_lines(build(results)["heatmap"])
    assert lines == [
        "    000000000011111111112222",
        "    012345678901234567890123",
        "Mon .........@-.............",
        "Tue ........................",
        "Wed ........................",
        "Thu ........................",
        "Fri ........................",
        "Sat ........................",
        "Sun .......................*",
        "legend (count per hour): . 0  - 1-2  + 3-4  * 5-6  # 7-8  @ 9-10",
    ]


# ---- the three forms -------------------------------------------------------------------------------


def full() -> dict[str, Any]:
    return build(series([OK, CRITICAL, OK], check="=HYPERLINK(\"x\")"), [event("firing", T0 + HOUR, "disk")],
                 [delivery("chat", "firing", T0 + HOUR)])


def test_text_form() -> None:
    text = stats.render_text(full())
    assert text.startswith("ce-agent stats from 2024-05-06T00:00:00+00:00 to 2024-05-13T00:00:00+00:00\n\n"
                           "Runs per check: 3 runs of 1 check, 1 failure (33.3 %); a failure is a result that was not OK\n")
    for heading in ("Most frequent alerts: 1 firing in all", "Notifications per channel: 1 sent or tried, 0 failed",
                    "Problems by weekday and hour (1 problem: results that were not OK; hours in UTC)"):
        assert f"\n{heading}\n" in text
    assert "\nchat     1     0       1      firing 1\n" in text


def test_json_form() -> None:
    built = full()
    assert json.loads(stats.as_json(built)) == built


def test_csv_is_one_long_table() -> None:
    rows = list(csv.DictReader(io.StringIO(stats.render_csv(full()))))
    assert tuple(rows[0]) == stats.CSV_COLUMNS
    assert {r["section"] for r in rows} == {"totals", "check", "alert", "channel", "heatmap"}
    assert sum(1 for r in rows if r["section"] == "heatmap") == 7 * 24
    assert {"section": "heatmap", "play": "", "host": "", "check": "", "alert": "", "channel": "", "kind": "",
            "weekday": "Mon", "hour": "0", "measure": "problems", "value": "1"} in rows
    assert {"section": "check", "play": "Web", "host": "web1", "check": "'=HYPERLINK(\"x\")", "alert": "",
            "channel": "", "kind": "", "weekday": "", "hour": "", "measure": "failure_rate", "value": "33.33"} in rows
    assert {"section": "channel", "play": "", "host": "", "check": "", "alert": "", "channel": "chat",
            "kind": "firing", "weekday": "", "hour": "", "measure": "notifications", "value": "1"} in rows
    assert ("totals", "runs", "3") in {(r["section"], r["measure"], r["value"]) for r in rows}
