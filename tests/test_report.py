"""`ce-agent report` (ce_agent.report): the verdict and its exit code, the tables, Markdown and a safe HTML page."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timezone
from html.parser import HTMLParser
from typing import Any

import pytest

from ce_agent import report
from ce_agent.store import ResultRow

UTC = timezone.utc
T0 = 1714953600.0  # the fake clock starts on Monday 2024-05-06 00:00 UTC
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
NOW = T0 + 7 * DAY
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
HOSTILE = "<script>alert('x')</script> | **bold** [link](javascript:x)"


def result(ts: float, status: int = OK, duration: float = 0.1, *, check: str = "Home page", host: str = "web1",
           play: str = "Web", summary: str = "fine") -> ResultRow:
    return ResultRow(ts, play, host, check, "http", status, summary, duration, [])


def series(statuses: Sequence[int], start: float = T0, step: float = MINUTE, **kwargs: Any) -> list[ResultRow]:
    """One result per `step` from `start`, with these statuses."""
    return [result(start + n * step, status, **kwargs) for n, status in enumerate(statuses)]


def alert(state: str, status: str, check: str = "Home page", host: str = "web1", **extra: Any) -> dict[str, Any]:
    """An alertcmds.active_alerts() row of a check alert."""
    key = f'check{{check="{check}",host="{host}",play="Web"}}'
    return {"key": key, "labels": {"check": check, "host": host, "play": "Web", "severity": "critical"},
            "state": state, "status": status, "since": "2024-05-12T23:00:00+00:00", "since_ts": NOW - HOUR,
            "for_s": 3600.0, "silenced": False, "silence": None, "flapping": False, **extra}


def event(kind: str, at: float, key: str = "k1", status: int = CRITICAL, summary: str = "down") -> dict[str, Any]:
    return {"key": key, "labels": {"check": key, "host": "web1", "play": "Web"}, "kind": kind, "status": status,
            "summary": summary, "at": at}


def slo(name: str, status: str) -> dict[str, Any]:
    return {"name": name, "objective": 99.9, "window": "30d", "sli": 99.95, "error_budget_remaining": 0.5,
            "burn_rates": {"1h": 0.4, "6h": 0.8}, "status": status}


def build(results: Sequence[ResultRow] = (), history: Sequence[dict] = (), active: Sequence[dict] = (),
          slos: Sequence[dict] = (), tags: dict | None = None, since: float = T0, now: float = NOW) -> dict[str, Any]:
    return report.build_report(results, history, active, slos, tags or {}, since, now, tz=UTC)


# ---- the verdict -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("results", "active", "slos", "overall", "exit_code", "reasons"),
    [
        pytest.param(series([OK] * 5), [], [], "HEALTHY", 0, [], id="all OK: healthy"),
        pytest.param(series([CRITICAL, CRITICAL, OK]), [], [slo("availability", "ok"), slo("new", "no_data")],
                     "HEALTHY", 0, [], id="a failure that recovered within the period, SLOs met or without data"),
        pytest.param(series([OK, WARNING]), [alert("firing", "WARNING")], [], "DEGRADED", 1,
                     ["WARNING alert firing: Home page on web1"], id="a warning firing: degraded"),
        pytest.param(series([OK, CRITICAL]), [alert("pending", "CRITICAL")], [], "DEGRADED", 1,
                     ["CRITICAL alert pending: Home page on web1"], id="a critical not firing yet: degraded"),
        pytest.param(series([OK, UNKNOWN]), [], [], "DEGRADED", 1, ["Home page on web1 is UNKNOWN: fine"],
                     id="a check unknown now, without an alert: degraded"),
        pytest.param(series([OK] * 3), [], [slo("availability", "at_risk")], "DEGRADED", 1,
                     ["SLO at risk: availability"], id="an SLO at risk: degraded"),
        pytest.param(series([OK, CRITICAL]), [alert("firing", "CRITICAL")], [], "UNHEALTHY", 2,
                     ["CRITICAL alert firing: Home page on web1"], id="a critical firing: unhealthy"),
        pytest.param(series([OK, CRITICAL]), [alert("firing", "CRITICAL", silenced=True)], [], "UNHEALTHY", 2,
                     ["CRITICAL alert firing: Home page on web1 (silenced)"],
                     id="a silence mutes the notifications, not the problem"),
        pytest.param(series([OK] * 3), [alert("firing", "WARNING", check="API")], [slo("availability", "breached")],
                     "UNHEALTHY", 2, ["SLO breached: availability", "WARNING alert firing: API on web1"],
                     id="an SLO breached: unhealthy, and the lesser reasons follow"),
    ],
)
def test_overall_verdict_and_exit_code(results: list[ResultRow], active: list[dict], slos: list[dict], overall: str,
                                       exit_code: int, reasons: list[str]) -> None:
    built = build(results, active=active, slos=slos)
    assert (built["overall"], built["exit_code"], built["reasons"]) == (overall, exit_code, reasons)


# ---- checks, groups, performance -------------------------------------------------------------------


def test_ten_results_with_two_failures_pass_80_percent() -> None:
    built = build(series([OK, OK, CRITICAL, OK, OK, WARNING, OK, OK, OK, OK]))
    assert built["checks"] == [{
        "play": "Web", "host": "web1", "check": "Home page", "tags": [], "runs": 10, "pass": 8, "warn": 1, "fail": 1,
        "unknown": 0, "pass_rate": 80.0, "last_status": "OK", "last_summary": "fine",
        "last_at": "2024-05-06T00:09:00+00:00"}]
    assert built["totals"] == {"checks": 1, "runs": 10, "pass": 8, "warn": 1, "fail": 1, "unknown": 0,
                               "pass_rate": 80.0}
    assert "1 check, 10 runs, 80.0 % passed (8 pass, 1 warn, 1 fail, 0 unknown)." in report.render_markdown(built)


def test_only_results_from_since_to_now_count() -> None:
    built = build([result(T0 - 1, CRITICAL), result(T0), result(NOW), result(NOW + 1, CRITICAL)])
    assert built["totals"]["runs"] == 2 and built["totals"]["pass_rate"] == 100.0


def test_checks_are_grouped_by_tag_and_play() -> None:
    results = (series([OK, CRITICAL], check="Root disk", play="Local", host="h1")  # tagged twice
               + series([OK, OK, OK], check="Root disk", play="Local", host="h2")  # same task, another host
               + series([WARNING, OK, OK, OK], check="Home page")  # untagged
               + series([OK, UNKNOWN], check="Load", play="Local", host="h1"))  # readiness only
    tags = {("Local", "Root disk"): ["storage", "readiness"], ("Local", "Load"): ["readiness"]}
    groups = build(results, tags=tags)["groups"]
    assert [(g["tag"], g["play"], g["checks"], g["runs"], g["pass"], g["warn"], g["fail"], g["unknown"],
             g["pass_rate"]) for g in groups] == [
        ("readiness", "Local", 3, 7, 5, 0, 1, 1, 71.43),
        ("storage", "Local", 2, 5, 4, 0, 1, 0, 80.0),
        (None, "Web", 1, 4, 3, 1, 0, 0, 75.0),  # the untagged come last
    ]


def test_performance_is_run_time_statistics_per_check_slowest_first() -> None:
    slow = [result(T0 + n * MINUTE, duration=float(n), check="Backup") for n in range(1, 101)]
    fast = [result(T0 + n * MINUTE, duration=0.25) for n in range(3)]
    performance = build(fast + slow)["performance"]
    assert performance == [
        {"play": "Web", "host": "web1", "check": "Backup", "count": 100, "min": 1.0, "max": 100.0, "mean": 50.5,
         "p50": 50.0, "p95": 95.0, "p99": 99.0},
        {"play": "Web", "host": "web1", "check": "Home page", "count": 3, "min": 0.25, "max": 0.25, "mean": 0.25,
         "p50": 0.25, "p95": 0.25, "p99": 0.25},
    ]


def test_top_failing_checks_count_every_result_that_was_not_ok() -> None:
    results = (series([CRITICAL, CRITICAL, WARNING, OK], check="A") + series([UNKNOWN, OK], check="B")
               + series([OK, OK], check="C"))
    top = build(results)["top_failing"]
    assert [(t["check"], t["failures"], t["runs"], t["failure_rate"]) for t in top] == [("A", 3, 4, 75.0),
                                                                                       ("B", 1, 2, 50.0)]


# ---- alerts, recovery, flapping --------------------------------------------------------------------


def test_time_to_recover_is_from_the_first_problem_to_the_next_ok() -> None:
    results = [
        result(T0, OK),
        result(T0 + 60, CRITICAL), result(T0 + 120, CRITICAL), result(T0 + 300, OK),  # 240 s
        result(T0 + 600, WARNING), result(T0 + 660, OK),  # 60 s
        result(T0 + 900, CRITICAL),  # still failing at the end: open, no time yet
        result(T0, UNKNOWN, check="API"), result(T0 + 30, OK, check="API"),  # already failing at the start: 30 s
    ]
    recovery = build(results)["recovery"]
    assert recovery["checks"] == [
        {"play": "Web", "host": "web1", "check": "Home page", "incidents": 3, "recovered": 2, "open": True,
         "mean_s": 150.0, "median_s": 60.0, "max_s": 240.0},  # nearest-rank median of [60, 240]
        {"play": "Web", "host": "web1", "check": "API", "incidents": 1, "recovered": 1, "open": False,
         "mean_s": 30.0, "median_s": 30.0, "max_s": 30.0},
    ]
    assert recovery["overall"] == {"incidents": 4, "recovered": 3, "mean_s": 110.0, "median_s": 60.0, "max_s": 240.0}


def test_recent_alert_events_are_newest_first_within_the_period() -> None:
    history = [event("firing", T0 - 1), event("firing", T0 + HOUR), event("resolved", T0 + 2 * HOUR, status=OK)]
    recent = build(history=history)["alerts"]["recent"]
    assert [(e["at"], e["kind"], e["status"]) for e in recent] == [
        ("2024-05-06T02:00:00+00:00", "resolved", "OK"), ("2024-05-06T01:00:00+00:00", "firing", "CRITICAL")]


def test_flapping_comes_from_flapping_start_events_and_active_alerts() -> None:
    history = [event("flapping_start", T0 + HOUR, key="a"), event("flapping_stop", T0 + 2 * HOUR, key="a"),
               event("flapping_start", T0 + 3 * HOUR, key="a"), event("flapping_start", T0 + 4 * HOUR, key="b")]
    active = [alert("firing", "WARNING", flapping=True, key="b"), alert("firing", "WARNING", check="c", flapping=True)]
    flapping = build(history=history, active=active)["flapping"]
    assert [(f["key"], f["starts"], f["last_start"], f["flapping_now"]) for f in flapping] == [
        ("a", 2, "2024-05-06T03:00:00+00:00", False),
        ("b", 1, "2024-05-06T04:00:00+00:00", True),
        ('check{check="c",host="web1",play="Web"}', 0, None, True),  # flapping since before the period
    ]


def test_trends_have_a_value_per_day_and_none_for_a_day_without_results() -> None:
    results = (series([OK, OK, OK, CRITICAL], start=T0) + series([OK], start=T0 + 2 * DAY)
               + [result(T0 + 2 * DAY + n, duration=float(n)) for n in range(1, 21)])
    trends = build(results, since=T0, now=T0 + 2 * DAY + HOUR)["trends"]
    assert trends == {"days": ["2024-05-06", "2024-05-07", "2024-05-08"], "runs": [4, 0, 21],
                      "pass_rate": [75.0, None, 100.0], "p95_duration_s": [0.1, None, 19.0]}


def test_the_json_form_is_json() -> None:
    built = build(series([OK, CRITICAL]), [event("firing", T0 + MINUTE)], [alert("firing", "CRITICAL")],
                  [slo("availability", "breached")], {("Web", "Home page"): ["frontend"]})
    assert json.loads(report.as_json(built)) == built


# ---- Markdown --------------------------------------------------------------------------------------


def test_markdown_report() -> None:
    built = build(series([OK] * 9 + [CRITICAL]), [event("firing", T0 + 9 * MINUTE, summary=HOSTILE)],
                  [alert("firing", "CRITICAL")], [slo("availability", "breached")])
    text = report.render_markdown(built)
    assert text.startswith("# ce-agent report: UNHEALTHY\n\nOverall **UNHEALTHY** (exit code 2) from "
                           "2024-05-06T00:00:00+00:00 to 2024-05-13T00:00:00+00:00.\n\n"
                           "- CRITICAL alert firing: Home page on web1\n- SLO breached: availability\n\n"
                           "1 check, 10 runs, 90.0 % passed (9 pass, 0 warn, 1 fail, 0 unknown).\n")
    for title in ("Checks by tag and play", "SLOs", "Performance", "Active alerts", "Recent alert events",
                  "Top failing checks", "Time to recover", "Flapping"):
        assert f"\n## {title}\n" in text
    assert "| (untagged) | Web | 1 | 10 | 9 | 0 | 1 | 0 | 90.0 % |" in text
    assert "| availability | 99.9 % | 30d | 99.950 % | 50.0 % | 1h: 0.40x, 6h: 0.80x | breached |" in text
    assert "| Home page | web1 | Web | 10 | 100 ms | 100 ms | 100 ms | 100 ms |" in text


def test_markdown_keeps_hostile_text_literal_and_in_its_cell() -> None:
    built = build(series([CRITICAL], check="Home | page"), [event("firing", T0, summary=HOSTILE + "\nline two")])
    text = report.render_markdown(built)
    row = next(line for line in text.splitlines() if line.startswith("| 2024-05-06T00:00:00+00:00 | firing"))
    assert row == ("| 2024-05-06T00:00:00+00:00 | firing | CRITICAL | k1 on web1 | \\<script\\>alert('x')\\</script\\> "
                   "\\| \\*\\*bold\\*\\* \\[link\\](javascript:x) line two |")
    assert "<script>" not in text
    assert "| Home \\| page | web1 | Web |" in text


# ---- HTML ------------------------------------------------------------------------------------------


class WellFormed(HTMLParser):
    """Fails on an end tag that does not close the innermost open element; records the open ones."""

    VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "source", "wbr", "area", "base", "col", "embed",
                      "track"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def hostile_report() -> dict[str, Any]:
    results = (series([OK, CRITICAL, OK] * 4, step=HOUR * 11, check=HOSTILE, summary=HOSTILE)
               + [result(T0 + 3 * DAY + n, duration=n / 10) for n in range(1, 11)])
    return build(results, [event("firing", T0 + HOUR, key=HOSTILE, summary=HOSTILE),
                           event("flapping_start", T0 + 2 * HOUR, key=HOSTILE)],
                 [alert("firing", "CRITICAL", check=HOSTILE)], [slo(HOSTILE, "at_risk")], {("Web", HOSTILE): [HOSTILE]})


def test_html_report_is_one_well_formed_self_contained_page() -> None:
    page = report.render_html(hostile_report())
    parser = WellFormed()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>\n<html lang=\"en\">")
    assert parser.open == []
    assert parser.tags.count("svg") == 2 and "<svg" in page  # pass rate and p95 per day
    assert {"polyline", "circle", "rect"} <= set(parser.tags)
    assert "script" not in parser.tags  # the hostile text stayed text
    assert not {"link", "img", "iframe", "object"} & set(parser.tags)  # nothing loaded from elsewhere
    assert "http://" not in page and "https://" not in page and "//" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert HOSTILE in "".join(parser.text)  # shown, as text


def test_html_charts_plot_each_day() -> None:
    built = build(series([OK, CRITICAL], start=T0) + series([OK], start=T0 + 2 * DAY), now=T0 + 2 * DAY + HOUR)
    page = report.render_html(built)
    assert "<title>2024-05-06: 50.0 %</title>" in page and "<title>2024-05-08: 100.0 %</title>" in page
    assert "2024-05-07:" not in page  # a day without results has no point and no bar
    assert page.count('<polyline class="line"') == 2  # the line is broken over the missing day


def test_html_report_without_any_data() -> None:
    page = report.render_html(build())
    parser = WellFormed()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    assert "HEALTHY" in page and "<p>None.</p>" in page


@pytest.mark.parametrize("labels, expected", [
    pytest.param({"check": "Root disk", "host": "web1"}, "Root disk on web1", id="check"),
    pytest.param({"alertname": "HighMemory", "host": "web1"}, "HighMemory on web1", id="rule"),
    pytest.param({"alertname": "SLOBurnRate", "slo": "api", "host": "web1"}, "SLOBurnRate api on web1", id="slo"),
    pytest.param({"alertname": "Regression", "check": "Slow", "host": "web1"}, "Slow regression on web1",
                 id="regression"),
])
def test_alerts_are_named_as_people_name_them(labels: dict, expected: str) -> None:
    from ce_agent.history import alert_title

    assert alert_title(labels, "key") == expected
