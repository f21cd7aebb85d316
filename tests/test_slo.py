"""The SLO engine of ce_agent.slo: parsing `slos:`, SLIs, error budgets and burn-rate alerts, on a fake clock."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ce_agent.slo import (
    SLO,
    BudgetPolicy,
    CheckRow,
    CheckSLI,
    RatioSLI,
    SampleRow,
    SLOStatus,
    ThresholdSLI,
    as_json,
    as_json_document,
    budget_alert_inputs,
    burn_alert_inputs,
    evaluate,
    parse_slos,
    render_text,
)

NOW = 1_700_000_000.0  # the fake clock: every test evaluates at this instant
M, H, D = 60.0, 3600.0, 86400.0
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3

#: where each slice of a history ends, in seconds before NOW; a slice starts where the previous one ends,
#: so the slices line up with the burn-rate windows and each window's counts are sums of slices
EDGES = {"m5": 5 * M, "m30": 30 * M, "h1": H, "h6": 6 * H, "d3": 3 * D, "d30": 30 * D}


def slo(objective: float = 99.0, sli: Any = None, **fields: Any) -> SLO:
    """An SLO on the check "api" over 30 days, unless told otherwise."""
    return SLO(name=fields.pop("name", "API availability"), objective=objective, window="30d", window_s=30 * D,
               sli=sli or CheckSLI("api"), **fields)


def history(check: str = "api", host: str = "web1", **slices: tuple[int, int]) -> list[CheckRow]:
    """Check results by slice: `m5=(10, 2)` is 10 results in the last 5 minutes, 2 of them CRITICAL;
    `m30=(…)` the results between 5 and 30 minutes ago, and so on (h1, h6, d3, d30). Results sit
    evenly inside their slice, never on an edge."""
    rows = []
    start = 0.0
    for name, end in EDGES.items():
        count, bad = slices.get(name, (0, 0))
        for i in range(count):
            ago = start + (end - start) * (i + 0.5) / count
            rows.append((NOW - ago, check, host, CRITICAL if i < bad else OK))
        start = end
    return rows


def check(status: SLOStatus, sli: float | None, remaining: float | None, rates: Mapping[str, float | None],
          alert: str | None, verdict: str) -> None:
    """Compare with hand-computed numbers (floats within 1e-9: 14.4 by hand is 14.399999999999999 in floats)."""
    assert status.sli == pytest.approx(sli, abs=1e-9) if sli is not None else status.sli is None
    if remaining is None:
        assert status.error_budget_remaining is None
    else:
        assert status.error_budget_remaining == pytest.approx(remaining, abs=1e-9)
    for window, rate in rates.items():
        got = status.burn_rates[window]
        assert (got is None) if rate is None else got == pytest.approx(rate, abs=1e-9), (window, got, rate)
    assert (status.alert, status.status) == (alert, verdict)


# ---- the SLI, the budget and the status over the whole window -----------------------------------------


def test_the_classic_example_1000_results_over_30_days_with_5_failures_at_99_9_is_breached() -> None:
    # One result every 2592 s (30 days / 1000): the newest now, the oldest 999 * 2592 s ago. Five of
    # them, about 15 days ago, fail.
    step = 30 * D / 1000
    rows = [(NOW - i * step, "api", "web1", CRITICAL if 500 <= i < 505 else OK) for i in range(1000)]
    status = evaluate(slo(99.9), rows, [], NOW)
    # SLI = 995 / 1000 = 99.5 %. Budget = 100 - 99.9 = 0.1 % of events; 0.5 % were bad: 5x the budget
    # over the window, so 1 - 5 = -4.0 of it is left: overspent four times over.
    # The short windows hold only good results: 5m and 30m the newest one (2592 s > 30 min), 1h two,
    # 6h nine (8 * 2592 = 20736 s < 6 h), 3d a hundred (the 101st is exactly 3 days old: outside).
    check(status, sli=99.5, remaining=-4.0,
          rates={"5m": 0.0, "30m": 0.0, "1h": 0.0, "6h": 0.0, "3d": 0.0, "30d": 5.0}, alert=None, verdict="breached")
    assert (status.events, status.good, status.total) == (1000, 995, 1000)


# (objective, results, expected sli, remaining budget, burn rates, alert, status); at 99 % the budget is 1 %
BURNS = [
    pytest.param(
        99.0, history(m5=(125, 18), m30=(125, 18), h1=(250, 36), d30=(9500, 0)),
        # 5m: 18/125 = 14.4 % bad = 14.4x; 1h: 72/500 = 14.4x: both windows of the first row burn -> page.
        # 30d: 72 bad of 10,000 = 0.72 % = 0.72x, so 1 - 0.72 = 0.28 of the budget is left.
        # 30m: 36/250 = 14.4x; 6h and 3d hold no more than the hour: 14.4x.
        99.28, 0.28, {"5m": 14.4, "30m": 14.4, "1h": 14.4, "6h": 14.4, "3d": 14.4, "30d": 0.72}, "page", "at_risk",
        id="page: the last hour and the last 5 minutes both burn at exactly 14.4x",
    ),
    pytest.param(
        99.0, history(m5=(10, 10), m30=(90, 0), h1=(900, 0), h6=(5000, 0)),
        # 5m: 10/10 bad = 100x, but 1h: 10/1000 = 1 % = 1x (< 14.4), 30m: 10/100 = 10x but 6h:
        # 10/6000 = 0.1667x (< 6): a blip; no page. 3d = 6h = 0.1667x (< 1): no ticket.
        # 30d = 0.1667x too: 1 - 1/6 = 0.8333 left.
        100 * 5990 / 6000, 1 - 1 / 6, {"5m": 100.0, "30m": 10.0, "1h": 1.0, "6h": 1 / 6, "3d": 1 / 6}, None, "ok",
        id="no alert when only the short windows burn (5m at 100x, 1h at 1x)",
    ),
    pytest.param(
        99.0, history(m5=(10, 0), m30=(40, 0), h1=(50, 15), d3=(10_000, 0)),
        # 1h: 15/100 = 15x, but 5m: 0/10 = 0x: the burn has stopped, no page (the workbook's short
        # window is there so that an alert resolves soon after the problem does). 30m: 0/50 = 0x.
        # 6h = 1h = 15x but 3d: 15/10,100 = 0.1485x (< 1): no ticket. 30d = 3d.
        100 * 10_085 / 10_100, 1 - 1500 / 10_100, {"5m": 0.0, "1h": 15.0, "6h": 15.0, "3d": 1500 / 10_100},
        None, "ok",
        id="no alert when the hour burned but the last 5 minutes are clean",
    ),
    pytest.param(
        99.0, history(m30=(100, 6), h1=(100, 0), h6=(400, 30)),
        # 30m: 6/100 = 6x; 6h: 36/600 = 6 % = 6x: the second page row. 1h: 6/200 = 3x (< 14.4); no 5m data.
        # 3d = 30d = 6h = 6x: overspent, 1 - 6 = -5 of the budget left.
        94.0, -5.0, {"5m": None, "30m": 6.0, "1h": 3.0, "6h": 6.0, "3d": 6.0, "30d": 6.0}, "page", "breached",
        id="page: 6h and 30m both burn at 6x (and the window's budget is gone: breached)",
    ),
    pytest.param(
        99.0, history(h6=(100, 1), d3=(900, 9)),
        # 6h: 1/100 = 1x; 3d: 10/1000 = 1x: ticket. 1h and shorter: no data, no page.
        # 30d = 3d = 1x: exactly the budget spent, 0 left: at risk, not (yet) breached.
        99.0, 0.0, {"5m": None, "30m": None, "1h": None, "6h": 1.0, "3d": 1.0, "30d": 1.0}, "ticket", "at_risk",
        id="ticket: 3d and 6h both burn at 1x",
    ),
    pytest.param(
        99.0, history(h6=(100, 0), d3=(900, 20), d30=(9000, 0)),
        # 3d: 20/1000 = 2x but 6h: 0/100 = 0x: the slow burn has stopped, no ticket.
        # 30d: 20/10,000 = 0.2x, 0.8 left.
        99.8, 0.8, {"6h": 0.0, "3d": 2.0, "30d": 0.2}, None, "ok",
        id="no ticket when only the 3d window burns",
    ),
    pytest.param(
        99.9, history(d30=(1000, 1)),
        # 1/1000 = 0.1 % bad with a 0.1 % budget: 1x over the window, exactly all of it: 0.0 left, and
        # the SLI (99.9) is not below the objective: at the edge, not breached.
        99.9, 0.0, {"30d": 1.0, "3d": None}, None, "ok",
        id="the budget exactly spent is not breached",
    ),
    pytest.param(
        99.9, [], None, None, {"5m": None, "1h": None, "3d": None, "30d": None}, None, "no_data",
        id="no results at all: no data, no alert",
    ),
    pytest.param(
        99.9, history(check="other", d30=(100, 100)), None, None, {"30d": None}, None, "no_data",
        id="results of other checks are not this SLO's",
    ),
]


@pytest.mark.parametrize("objective, rows, sli, remaining, rates, alert, verdict", BURNS)
def test_burn_rates_and_the_multiwindow_alerts(objective: float, rows: list[CheckRow], sli: float | None,
                                               remaining: float | None, rates: dict[str, float | None],
                                               alert: str | None, verdict: str) -> None:
    check(evaluate(slo(objective), rows, [], NOW), sli, remaining, rates, alert, verdict)


def test_every_status_reports_the_standard_windows_and_its_own() -> None:
    status = evaluate(slo(99.9), history(m5=(1, 0)), [], NOW)
    assert list(status.burn_rates) == ["5m", "30m", "1h", "6h", "3d", "30d"]


# (policy's below, status): 80 results with 1 failure at 99 % is 1/80 = 1.25 % bad = 1.25x: no budget left at
# all. 200 results with 1 failure: 0.5x, 0.5 of the budget left.
POLICIES = [
    pytest.param(None, "ok", id="no policy: half the budget left is ok"),
    pytest.param(0.25, "ok", id="below 25 %: half left is ok"),
    pytest.param(0.5, "ok", id="below 50 %: exactly half left is not below"),
    pytest.param(0.6, "at_risk", id="below 60 %: half left is at risk"),
]


@pytest.mark.parametrize("below, verdict", POLICIES)
def test_a_budget_policy_makes_a_low_budget_at_risk(below: float | None, verdict: str) -> None:
    policy = None if below is None else BudgetPolicy(below=below)
    status = evaluate(slo(99.0, budget_policy=policy), history(d30=(200, 1)), [], NOW)
    assert status.error_budget_remaining == pytest.approx(0.5)
    assert status.status == verdict


def test_window_edges_are_left_open_and_rows_from_the_future_are_ignored() -> None:
    rows = [
        (NOW - 5 * M, "api", "web1", CRITICAL),  # exactly 5 minutes old: in 30m, not in 5m
        (NOW - 5 * M + 1, "api", "web1", OK),  # 4m59s old: in 5m
        (NOW + 60, "api", "web1", CRITICAL),  # a clock ahead of ours: not yet
        (NOW - 30 * D, "api", "web1", CRITICAL),  # exactly 30 days old: outside the window
    ]
    status = evaluate(slo(99.0), rows, [], NOW)
    # 5m: the OK one alone, 0x; 30m: 1 bad of 2 = 50 % = 50x, and 6h the same (>= 6 both: page);
    # 30d the same two: SLI 50 %, 1 - 50 = -49 left.
    check(status, sli=50.0, remaining=-49.0, rates={"5m": 0.0, "30m": 50.0, "6h": 50.0}, alert="page",
          verdict="breached")
    assert status.events == 2


@pytest.mark.parametrize("host, expected_sli", [
    pytest.param(None, 50.0, id="every host: web1's 2 OK and web2's 2 CRITICAL, 50 %"),
    pytest.param("web1", 100.0, id="host web1: its 2 OK, 100 %"),
    pytest.param("web2", 0.0, id="host web2: its 2 CRITICAL, 0 %"),
])
def test_a_check_sli_counts_every_host_or_the_one_asked_for(host: str | None, expected_sli: float) -> None:
    rows = history(host="web1", d30=(2, 0)) + history(host="web2", d30=(2, 2))
    assert evaluate(slo(), rows, [], NOW, host=host).sli == expected_sli


@pytest.mark.parametrize("status_code, good", [
    pytest.param(OK, True, id="OK is good"),
    pytest.param(WARNING, False, id="WARNING is bad"),
    pytest.param(CRITICAL, False, id="CRITICAL is bad"),
    pytest.param(UNKNOWN, False, id="UNKNOWN is bad"),
])
def test_only_ok_results_are_good(status_code: int, good: bool) -> None:
    status = evaluate(slo(), [(NOW - 1, "api", "web1", status_code)], [], NOW)
    assert status.sli == (100.0 if good else 0.0)


# ---- metric SLIs --------------------------------------------------------------------------------------


def latencies(values: Sequence[float], name: str = "http_latency_seconds", **labels: str) -> list[SampleRow]:
    """One sample a minute, the newest first, a minute ago."""
    return [(NOW - (i + 1) * M, name, dict(labels), v) for i, v in enumerate(values)]


# 20 samples: 17 fast ones, one at exactly 0.5, two slow ones
LATENCIES = [0.1] * 17 + [0.5, 0.7, 1.2]


@pytest.mark.parametrize("good, sli, remaining", [
    # objective 90 %: the budget is 10 % of samples
    pytest.param("<= 0.5", 90.0, 0.0, id="'<= 0.5': 18 of 20 good (0.5 counts), 10 % bad = 1x, 0 left"),
    pytest.param("< 0.5", 85.0, -0.5, id="'< 0.5': 17 of 20 good, 15 % bad = 1.5x, -0.5 left"),
    pytest.param("> 0.5", 10.0, -8.0, id="'> 0.5': 2 of 20 good, 90 % bad = 9x, -8 left"),
    pytest.param(">= 0.7", 10.0, -8.0, id="'>= 0.7': 0.7 and 1.2 good, the same"),
])
def test_a_latency_threshold_sli(good: str, sli: float, remaining: float) -> None:
    (parsed,), errors = parse_slos([{"name": "fast", "objective": 90, "window": "30d",
                                     "sli": {"metric": "http_latency_seconds", "good": good}}])
    assert errors == []
    status = evaluate(parsed, [], latencies(LATENCIES), NOW)
    assert status.sli == pytest.approx(sli)
    assert status.error_budget_remaining == pytest.approx(remaining)
    assert (status.events, status.total) == (20, 20)


def test_a_threshold_sli_reads_only_its_metric_and_its_labels_and_skips_unknown_values() -> None:
    latency = ThresholdSLI("http_latency_seconds", "<=", 0.5)
    samples = (
        latencies([0.1, 0.1, 0.9], route="/api")  # 2 of 3 good
        + latencies([0.9, 0.9], route="/admin")  # another series, not selected
        + latencies([0.9], name="http_size_bytes", route="/api")  # another metric
        + latencies([float("nan")], route="/api")  # no value (Nagios' U): no event
    )
    status = evaluate(slo(99.0, latency, labels=(("route", "/api"),)), [], samples, NOW)
    assert (status.events, status.good, status.total) == (3, 2, 3)
    assert status.sli == pytest.approx(100 * 2 / 3)


# ---- counter ratios -----------------------------------------------------------------------------------


def counter(name: str, points: Sequence[tuple[float, float]], **labels: str) -> list[SampleRow]:
    return [(NOW - ago, name, dict(labels), value) for ago, value in points]


REQUESTS = RatioSLI(good="http_requests_ok_total", total="http_requests_total")


def test_a_counter_ratio_sums_increases_across_a_reset() -> None:
    # The service restarts between 11 and 6 minutes ago: both counters start again from 0.
    #   minutes ago      21    16    11     6     1
    #   total             0  1000  2000  1000  2000    increases 1000 + 1000 + 1000 (reset) + 1000 = 4000
    #   good              0  1000  1980  1000  1980    increases 1000 +  980 + 1000 (reset) +  980 = 3960
    # (last - first would say 2000 and 1980: the restart would hide half the traffic.)
    samples = (counter("http_requests_total", [(21 * M, 0), (16 * M, 1000), (11 * M, 2000), (6 * M, 1000),
                                               (1 * M, 2000)])
               + counter("http_requests_ok_total", [(21 * M, 0), (16 * M, 1000), (11 * M, 1980), (6 * M, 1000),
                                                    (1 * M, 1980)]))
    status = evaluate(slo(99.5, REQUESTS), [], samples, NOW)
    # 30d: 40 bad of 4000 = 1 %, with a 0.5 % budget: 2x, SLI 99 %, 1 - 2 = -1 left.
    # 5m holds only the sample a minute ago: its increase since the one 6 minutes ago counts there,
    # 20 bad of 1000 = 2 % = 4x (a cron job every 5 minutes still has a 5m burn rate).
    # 6h and 3d hold everything too: 2x and 2x (>= 1 both: ticket); 1h at 2x is no page.
    check(status, sli=99.0, remaining=-1.0, rates={"5m": 4.0, "30m": 2.0, "1h": 2.0, "6h": 2.0, "3d": 2.0, "30d": 2.0},
          alert="ticket", verdict="breached")
    # 10 samples, but each series' first is only its baseline: 8 increases
    assert (status.events, status.good, status.total) == (8, 3960, 4000)


def test_counter_series_are_summed_and_selected_by_labels() -> None:
    # two instances of job api (each 100 requests, 1 and 3 failed), and job batch (not selected)
    samples = (counter("http_requests_total", [(2 * H, 0), (H, 100)], job="api", instance="a")
               + counter("http_requests_ok_total", [(2 * H, 0), (H, 99)], job="api", instance="a")
               + counter("http_requests_total", [(2 * H, 50), (H, 150)], job="api", instance="b")
               + counter("http_requests_ok_total", [(2 * H, 50), (H, 147)], job="api", instance="b")
               + counter("http_requests_total", [(2 * H, 0), (H, 100)], job="batch")
               + counter("http_requests_ok_total", [(2 * H, 0), (H, 0)], job="batch"))
    status = evaluate(slo(99.0, REQUESTS, labels=(("job", "api"),)), [], samples, NOW)
    # api: 200 requests, 196 good: 98 %, 2 % bad = 2x, -1 left; batch (0 good) would have made it 65.3 %.
    # The increases were seen an hour ago: nothing in the last hour; 6h and 3d at 2x: ticket.
    assert (status.good, status.total) == (196, 200)
    check(status, sli=98.0, remaining=-1.0, rates={"1h": None, "6h": 2.0, "3d": 2.0}, alert="ticket",
          verdict="breached")


def test_more_good_than_total_is_no_negative_error() -> None:
    # counters read a moment apart: good grew by 101 while total grew by 100
    samples = (counter("http_requests_total", [(2 * H, 0), (H, 100)])
               + counter("http_requests_ok_total", [(2 * H, 0), (H, 101)]))
    status = evaluate(slo(99.0, REQUESTS), [], samples, NOW)
    check(status, sli=100.0, remaining=1.0, rates={"6h": 0.0}, alert=None, verdict="ok")


def test_a_counter_without_increase_is_no_data() -> None:
    samples = counter("http_requests_total", [(2 * H, 5), (H, 5)]) + counter("http_requests_ok_total", [(H, 5)])
    assert evaluate(slo(99.0, REQUESTS), [], samples, NOW).status == "no_data"


# ---- JSON and text --------------------------------------------------------------------------------------


def test_json_has_exactly_the_documented_shape() -> None:
    step = 30 * D / 1000
    rows = [(NOW - i * step, "api", "web1", CRITICAL if 500 <= i < 505 else OK) for i in range(1000)]
    document = as_json_document([evaluate(slo(99.9), rows, [], NOW)])
    assert document == {"slos": [{
        "name": "API availability",
        "objective": 99.9,
        "window": "30d",
        "sli": 99.5,
        "error_budget_remaining": -4.0,
        "burn_rates": {"5m": 0.0, "30m": 0.0, "1h": 0.0, "6h": 0.0, "3d": 0.0, "30d": 5.0},
        "status": "breached",
    }]}
    assert json.loads(json.dumps(document)) == document


def test_json_rounds_percentages_to_4_decimals_and_rates_to_3() -> None:
    # 2 of 3 good at 99 %: SLI 66.666…%, 33.3…% bad = 33.333…x, 1 - 33.333… = -32.333… left
    entry = as_json(evaluate(slo(99.0), history(h6=(3, 1)), [], NOW))
    assert (entry["sli"], entry["error_budget_remaining"], entry["burn_rates"]["6h"]) == (66.6667, -32.3333, 33.333)
    assert entry["burn_rates"]["1h"] is None


def test_json_of_no_data() -> None:
    entry = as_json(evaluate(slo(99.9), [], [], NOW))
    assert entry["sli"] is None and entry["error_budget_remaining"] is None and entry["status"] == "no_data"
    assert set(entry["burn_rates"].values()) == {None}


def test_the_text_table() -> None:
    statuses = [
        evaluate(slo(99.0), history(m5=(125, 18), m30=(125, 18), h1=(250, 36), d30=(9500, 0)), [], NOW),
        evaluate(slo(99.9, name="Latency", sli=ThresholdSLI("latency", "<=", 0.5)), [], [], NOW),
    ]
    assert render_text(statuses) == (
        "NAME              OBJECTIVE  WINDOW      SLI  BUDGET LEFT  BURN 1h  BURN 6h  BURN 3d  STATUS\n"
        "API availability        99%     30d  99.280%        28.0%   14.40x   14.40x   14.40x  at_risk (page: 1h/5m)\n"
        "Latency               99.9%     30d        -            -        -        -        -  no_data\n"
    )
    assert render_text([]) == "no SLOs defined in the selected plays\n"


# ---- alerts for the pipeline ----------------------------------------------------------------------------


def test_a_page_becomes_a_critical_burn_rate_alert() -> None:
    status = evaluate(slo(99.0, notify=("pager",)),
                      history(m5=(125, 18), m30=(125, 18), h1=(250, 36), d30=(9500, 0)), [], NOW)
    (alert,) = burn_alert_inputs([status], play="Web", host="web1")
    assert alert.key == 'slo{name="API availability",play="Web",host="web1"}'
    assert dict(alert.labels) == {"alertname": "SLOBurnRate", "slo": "API availability", "play": "Web", "host": "web1",
                                  "severity": "critical", "long_window": "1h", "short_window": "5m"}
    assert (alert.active, alert.status, alert.notify) == (True, 2, ("pager",))
    assert alert.summary == "error budget burning at 14.4x over 1h (and 14.4x over 5m); 28% left"
    assert alert.title == "SLO API availability on web1"


def test_a_ticket_becomes_a_warning_burn_rate_alert() -> None:
    (alert,) = burn_alert_inputs([evaluate(slo(99.0), history(h6=(100, 1), d3=(900, 9)), [], NOW)], "Web", "web1")
    assert (alert.active, alert.status, alert.labels["severity"]) == (True, 1, "warning")
    assert (alert.labels["long_window"], alert.labels["short_window"]) == ("3d", "6h")
    assert alert.summary == "error budget burning at 1.0x over 3d (and 1.0x over 6h); 0% left"


def test_a_calm_slo_is_an_inactive_alert_that_keeps_the_labels_it_fired_with() -> None:
    status = evaluate(slo(99.0), history(d30=(200, 1)), [], NOW)
    key = 'slo{name="API availability",play="Web",host="web1"}'
    fired = {"severity": "critical", "long_window": "1h", "short_window": "5m"}
    (alert,) = burn_alert_inputs([status], "Web", "web1", known={key: fired})
    assert (alert.active, alert.status) == (False, 0)
    assert {k: alert.labels[k] for k in fired} == fired  # its "resolved" goes where its "firing" went
    # the 200 results are older than 3 days: the short windows have no data; 1 bad of 200 is 0.5x, 50 % left
    assert alert.summary == ("error budget burn within limits (no data over 1h, no data over 6h, no data over 3d); "
                             "50% left")
    (fresh,) = burn_alert_inputs([status], "Web", "web1")
    assert fresh.labels["severity"] == "warning" and "long_window" not in fresh.labels


def test_alerts_false_turns_burn_alerts_off() -> None:
    status = evaluate(slo(99.0, alerts=False), history(h6=(100, 1), d3=(900, 9)), [], NOW)
    assert status.alert == "ticket"  # still shown in `slo status`
    assert burn_alert_inputs([status], "Web", "web1") == []


def test_an_slo_name_cannot_forge_another_key() -> None:
    (alert,) = burn_alert_inputs([evaluate(slo(name='say "hi"'), [], [], NOW)], "Web", "web1")
    assert alert.key == 'slo{name="say \\"hi\\"",play="Web",host="web1"}'
    assert alert.summary == "no data over 30d"


@pytest.mark.parametrize("slices, active, summary", [
    pytest.param({"d30": (400, 3)}, True, "25% of the error budget left, below the policy's 30%",
                 id="3 bad of 400 at 99 %: 0.75x, 25 % left < 30 %: active"),
    pytest.param({"d30": (200, 1)}, False, "50% of the error budget left (policy: below 30%)",
                 id="1 bad of 200: 50 % left: inactive"),
    pytest.param({}, False, "no data over 30d", id="no data spends no budget: inactive"),
])
def test_the_budget_policy_alert(slices: dict[str, tuple[int, int]], active: bool, summary: str) -> None:
    policy = BudgetPolicy(below=0.3, notify=("ops-mail",))
    status = evaluate(slo(99.0, budget_policy=policy, notify=("pager",)), history(**slices), [], NOW)
    (alert,) = budget_alert_inputs([status], "Web", "web1")
    assert alert.key == 'slo_budget{name="API availability",play="Web",host="web1"}'
    assert alert.labels["alertname"] == "SLOErrorBudget" and alert.labels["severity"] == "warning"
    assert (alert.active, alert.status, alert.summary, alert.notify) == (active, int(active), summary, ("ops-mail",))
    assert budget_alert_inputs([evaluate(slo(99.0), [], [], NOW)], "Web", "web1") == []


# ---- parsing --------------------------------------------------------------------------------------------


def test_parsing_every_form_and_field() -> None:
    raw = [
        {"name": "API availability", "objective": 99.9, "window": "30d", "sli": {"check": "Home page"},
         "notify": ["pager"], "budget_policy": {"below": "25%", "notify": ["ops-mail"]}},
        {"name": "API latency", "objective": "99%", "window": "4w", "labels": {"route": "/api", "tls": True},
         "sli": {"metric": "http_latency_seconds", "good": "<= 0.5"}, "alerts": False},
        {"name": "Requests", "objective": 99.5, "window": 604800, "notify": "chat, pager",
         "sli": {"good": "http_requests_ok_total", "total": "http_requests_total"}},
    ]
    slos, errors = parse_slos(raw, "slos", check_names={"Home page"})
    assert errors == []
    assert slos == [
        SLO("API availability", 99.9, "30d", 30 * D, CheckSLI("Home page"), notify=("pager",),
            budget_policy=BudgetPolicy(0.25, ("ops-mail",))),
        SLO("API latency", 99.0, "4w", 28 * D, ThresholdSLI("http_latency_seconds", "<=", 0.5),
            labels=(("route", "/api"), ("tls", "true")), alerts=False),
        SLO("Requests", 99.5, "7d", 7 * D, RatioSLI("http_requests_ok_total", "http_requests_total"),
            notify=("chat", "pager")),
    ]
    assert [s.budget for s in slos] == [0.001, 0.01, 0.005]  # as written, not 0.0010000000000000009


def ok(**overrides: Any) -> dict[str, Any]:
    """A valid SLO, with some fields replaced (None removes one)."""
    fields = {"name": "avail", "objective": 99.9, "window": "30d", "sli": {"check": "api"}, **overrides}
    return {k: v for k, v in fields.items() if v is not None}


SLI_FORMS = "{check: NAME}, {metric: NAME, good: '<= 0.5'} or {good: METRIC, total: METRIC}"
# (the `slos:` value, the expected (key path, message) errors)
PARSE_ERRORS = [
    pytest.param(ok(objective=100),
                 [("slos[0].objective", "must be a percentage between 0 and 100 (exclusive), got 100")],
                 id="objective 100 leaves no budget"),
    pytest.param(ok(objective=0), [("slos[0].objective", "must be a percentage between 0 and 100 (exclusive), got 0")],
                 id="objective 0"),
    pytest.param(ok(objective="high"),
                 [("slos[0].objective", "must be a percentage between 0 and 100 (exclusive), got 'high'")],
                 id="objective not a number"),
    pytest.param(ok(objective=True),
                 [("slos[0].objective", "must be a percentage between 0 and 100 (exclusive), got True")],
                 id="objective a boolean"),
    pytest.param(ok(objective=None),
                 [("slos[0].objective", "is required: the target percentage of good events, such as 99.9")],
                 id="objective missing"),
    pytest.param(ok(name=None), [("slos[0].name", "is required: a name such as 'API availability'")],
                 id="name missing"),
    pytest.param(ok(name=" "),
                 [("slos[0].name", "must be a non-empty string (a name such as 'API availability'), got ' '")],
                 id="name blank"),
    pytest.param(ok(window="a month"), [("slos[0].window", "must be a duration such as 7d, 28d or 30d, got 'a month'")],
                 id="window not a duration"),
    pytest.param(ok(window="6h"),
                 [("slos[0].window",
                   "must be at least 1d (SLOs are measured over days or weeks, such as 30d), got '6h'")],
                 id="window shorter than a day"),
    pytest.param(ok(window=None),
                 [("slos[0].window", "is required: the period the objective is measured over, such as 30d")],
                 id="window missing"),
    pytest.param(ok(sli=None), [("slos[0].sli", f"is required: {SLI_FORMS}")], id="sli missing"),
    pytest.param(ok(sli="api"), [("slos[0].sli", f"must be one of {SLI_FORMS}, got 'api'")], id="sli a string"),
    pytest.param(ok(sli={"check": "api", "metric": "x"}),
                 [("slos[0].sli", f"'check' cannot be combined with 'metric'; an SLI is exactly one of {SLI_FORMS}")],
                 id="two SLI forms at once"),
    pytest.param(ok(sli={"good": "http_ok_total"}),
                 [("slos[0].sli", "'good' alone is ambiguous: add 'metric: NAME' for a threshold on samples, "
                                  "or 'total: METRIC' for a ratio of counters")],
                 id="good alone"),
    pytest.param(ok(sli={"metric": "latency", "good": 0.5}),
                 [("slos[0].sli.good", "must be a comparison and a number such as '<= 0.5' (one of <=, >=, <, >), "
                                       "got 0.5")],
                 id="threshold without an operator"),
    pytest.param(ok(sli={"metric": "latency", "good": "<= fast"}),
                 [("slos[0].sli.good", "must be a comparison and a number such as '<= 0.5' (one of <=, >=, <, >), "
                                       "got '<= fast'")],
                 id="threshold without a number"),
    pytest.param(ok(sli={"metric": "latency"}),
                 [("slos[0].sli.good", "is required with 'metric': a threshold such as '<= 0.5'")],
                 id="metric without a threshold"),
    pytest.param(ok(sli={"metric": "latency", "good": "< 1", "total": "t"}),
                 [("slos[0].sli", f"'metric' and 'total' cannot be combined; an SLI is exactly one of {SLI_FORMS}")],
                 id="metric with total"),
    pytest.param(ok(sli={"good": "requests_total", "total": "requests_total"}),
                 [("slos[0].sli.good", "must be another counter than 'total' (both are 'requests_total')")],
                 id="the same counter twice"),
    pytest.param(ok(sli={"chek": "api"}),
                 [("slos[0].sli.chek", "unknown SLI key 'chek' (did you mean 'check'?); "
                                       "valid keys: check, metric, good, total")],
                 id="misspelt SLI key"),
    pytest.param(ok(objectve=99.9),
                 [("slos[0].objectve", "unknown SLO key 'objectve' (did you mean 'objective'?); valid keys: "
                                       "name, objective, window, sli, labels, alerts, notify, budget_policy")],
                 id="misspelt SLO key"),
    pytest.param(ok(labels={"route": "/api"}),
                 [("slos[0].labels", "selects metric series; a {check: NAME} SLI has none (remove it)")],
                 id="labels on a check SLI"),
    pytest.param(ok(sli={"metric": "latency", "good": "< 1"}, labels=["route"]),
                 [("slos[0].labels", "must be a mapping of label names to values, got ['route']")],
                 id="labels not a mapping"),
    pytest.param(ok(sli={"metric": "latency", "good": "< 1"}, labels={"route": ["/a", "/b"]}),
                 [("slos[0].labels.route", "a label value must be a string or a number, got ['/a', '/b']")],
                 id="a label value that is a list"),
    pytest.param(ok(alerts="no"), [("slos[0].alerts", "must be true or false, got 'no'")], id="alerts not a boolean"),
    pytest.param(ok(notify=[1]), [("slos[0].notify", "must be a list of channel names, got [1]")],
                 id="notify not names"),
    pytest.param(ok(budget_policy={"below": "150%"}),
                 [("slos[0].budget_policy.below", "must be a percentage of the error budget above 0 and at most 100, "
                                                  "such as 25%, got '150%'")],
                 id="budget policy above 100 %"),
    pytest.param(ok(budget_policy={"notify": ["x"]}),
                 [("slos[0].budget_policy.below", "is required: the share of the error budget left that triggers it, "
                                                  "such as 25%")],
                 id="budget policy without below"),
    pytest.param(ok(budget_policy={"below": 25, "channels": ["x"]}),
                 [("slos[0].budget_policy.channels",
                   "unknown budget_policy key 'channels'; valid keys: below, notify")],
                 id="budget policy with an unknown key"),
    pytest.param(ok(budget_policy="25%"),
                 [("slos[0].budget_policy", "must be a mapping such as {below: 25%, notify: [ops-mail]}, got '25%'")],
                 id="budget policy not a mapping"),
]


@pytest.mark.parametrize("item, errors", PARSE_ERRORS)
def test_parsing_errors_name_the_key(item: dict[str, Any], errors: list[tuple[str, str]]) -> None:
    assert parse_slos([item]) == ([], errors)


def test_parsing_reports_every_problem_and_keeps_the_good_slos() -> None:
    raw = [ok(name="a"), ok(name="b", objective=100, window="1h"), ok(name="a"), "avail"]
    slos, errors = parse_slos(raw, "plays[0].slos")
    assert [s.name for s in slos] == ["a"]
    assert errors == [
        ("plays[0].slos[1].objective", "must be a percentage between 0 and 100 (exclusive), got 100"),
        ("plays[0].slos[1].window",
         "must be at least 1d (SLOs are measured over days or weeks, such as 30d), got '1h'"),
        ("plays[0].slos[2].name", "duplicate SLO name 'a' (also plays[0].slos[0]); names must be unique in a play"),
        ("plays[0].slos[3]", "an SLO must be a mapping with name, objective, window and sli"),
    ]


@pytest.mark.parametrize("raw, expected", [
    pytest.param(None, ([], []), id="no slos: nothing"),
    pytest.param([], ([], []), id="an empty list: nothing"),
    pytest.param({"name": "avail"}, ([], [("slos", "must be a list of SLOs, each a mapping with name, objective, "
                                                   "window and sli")]), id="a mapping instead of a list"),
])
def test_parsing_the_list_itself(raw: Any, expected: tuple[list[SLO], list[tuple[str, str]]]) -> None:
    assert parse_slos(raw) == expected


def test_a_check_sli_must_name_a_check_of_the_play_when_they_are_known() -> None:
    _, errors = parse_slos([ok(sli={"check": "Home pag"})], check_names=["Home page", "Login"])
    assert errors == [("slos[0].sli.check", "no check named 'Home pag' in this play (did you mean 'Home page'?)")]
