"""The Nagios range grammar of ce_agent.thresholds, as the Monitoring Plugins guidelines define it."""

from __future__ import annotations

import math

import pytest

from ce_agent.contracts import Status
from ce_agent.thresholds import Range, evaluate, optional_range

# (range, value, alerts?) -- the table of the Monitoring Plugins development guidelines and more
ALERTS = [
    pytest.param("10", -1, True, id="N: below zero alerts"),
    pytest.param("10", 0, False, id="N: zero is inside"),
    pytest.param("10", 10, False, id="N: the end is inside"),
    pytest.param("10", 10.01, True, id="N: above the end alerts"),
    pytest.param("10:", 9.99, True, id="N: - below alerts"),
    pytest.param("10:", 10, False, id="N: - the start is inside"),
    pytest.param("10:", 1e12, False, id="N: - no upper end"),
    pytest.param("~:10", -1e12, False, id="~:N - no lower end"),
    pytest.param("~:10", 10, False, id="~:N - the end is inside"),
    pytest.param("~:10", 11, True, id="~:N - above alerts"),
    pytest.param("10:20", 9, True, id="N:M - below alerts"),
    pytest.param("10:20", 15, False, id="N:M - inside is fine"),
    pytest.param("10:20", 20, False, id="N:M - ends are inclusive"),
    pytest.param("10:20", 21, True, id="N:M - above alerts"),
    pytest.param("@10:20", 9, False, id="@N:M - below is fine"),
    pytest.param("@10:20", 10, True, id="@N:M - inclusive start alerts"),
    pytest.param("@10:20", 15, True, id="@N:M - inside alerts"),
    pytest.param("@10:20", 21, False, id="@N:M - above is fine"),
    pytest.param("80%", 80, False, id="percent: 80% at 80"),
    pytest.param("80%", 80.5, True, id="percent: 80% above"),
    pytest.param("10:20%", 5, True, id="percent: a range with %"),
    pytest.param(" 5 ", 6, True, id="surrounding spaces are ignored"),
    pytest.param("-10:-5", -7, False, id="negative range: inside"),
    pytest.param("-10:-5", -4, True, id="negative range: above"),
    pytest.param("0.5:1.5", 0.4, True, id="decimals"),
    pytest.param("1e3", 1001, True, id="exponent notation"),
    pytest.param(":10", -1, True, id=":N starts at zero"),
    pytest.param(10, 11, True, id="a bare int is N"),
    pytest.param(2.5, 2.6, True, id="a bare float is N"),
]


@pytest.mark.parametrize(("spec", "value", "alerts"), ALERTS)
def test_range_alerts(spec: str | float, value: float, alerts: bool) -> None:
    assert Range.parse(spec).alerts(value) is alerts


@pytest.mark.parametrize(
    ("spec", "start", "end", "inside"),
    [
        pytest.param("10", 0.0, 10.0, False, id="N"),
        pytest.param("10:", 10.0, math.inf, False, id="N:"),
        pytest.param("~:10", -math.inf, 10.0, False, id="~:N"),
        pytest.param("10:20", 10.0, 20.0, False, id="N:M"),
        pytest.param("@10:20", 10.0, 20.0, True, id="@N:M"),
        pytest.param("@10", 0.0, 10.0, True, id="@N"),
        pytest.param("90%", 0.0, 90.0, False, id="N%"),
        pytest.param("~:", -math.inf, math.inf, False, id="~: never alerts"),
    ],
)
def test_range_bounds(spec: str, start: float, end: float, inside: bool) -> None:
    parsed = Range.parse(spec)
    assert (parsed.start, parsed.end, parsed.inside) == (start, end, inside)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("%", id="only a percent sign"),
        pytest.param("abc", id="words"),
        pytest.param("10:abc", id="words after the colon"),
        pytest.param("20:10", id="start above end"),
        pytest.param("@", id="only @"),
        pytest.param("~", id="~ without colon"),
        pytest.param("1:2:3", id="two colons"),
        pytest.param("nan", id="nan"),
        pytest.param("10::", id="double colon"),
        pytest.param(True, id="a bool is not a number"),
    ],
)
def test_invalid_ranges_raise_value_error(spec: object) -> None:
    with pytest.raises(ValueError):
        Range.parse(spec)  # type: ignore[arg-type]


def test_text_is_kept_without_percent_sign() -> None:
    assert str(Range.parse("@10:20")) == "@10:20"
    assert str(Range.parse("90%")) == "90"
    assert str(Range.parse(5)) == "5"


@pytest.mark.parametrize(
    ("value", "warning", "critical", "status"),
    [
        pytest.param(50, "80", "90", Status.OK, id="below both"),
        pytest.param(85, "80", "90", Status.WARNING, id="above warning only"),
        pytest.param(95, "80", "90", Status.CRITICAL, id="above both: CRITICAL wins"),
        pytest.param(5, "10:", "5:", Status.WARNING, id="low-side ranges: warning"),
        pytest.param(1, "10:", "5:", Status.CRITICAL, id="low-side ranges: critical"),
        pytest.param(95, None, "90", Status.CRITICAL, id="no warning range"),
        pytest.param(85, "80", None, Status.WARNING, id="no critical range"),
        pytest.param(85, None, None, Status.OK, id="no ranges at all"),
        pytest.param(15, "@10:20", "@14:16", Status.CRITICAL, id="inside ranges"),
        pytest.param(None, "80", "90", Status.UNKNOWN, id="unknown value (perfdata U)"),
        pytest.param(math.nan, "80", "90", Status.UNKNOWN, id="NaN is unknown"),
        pytest.param(95, "90", "80", Status.CRITICAL, id="critical checked first even when narrower"),
    ],
)
def test_evaluate(value: float | None, warning: str | None, critical: str | None, status: Status) -> None:
    assert evaluate(value, optional_range(warning), optional_range(critical)) is status


# Range.parse given a number goes through the same checks as its text.
def test_negative_number_is_rejected_like_its_text() -> None:
    with pytest.raises(ValueError):
        Range.parse(-5)


def test_infinite_number_is_a_range_like_its_text() -> None:
    assert Range.parse(math.inf).alerts(1e300) is Range.parse("inf").alerts(1e300)
