"""Service level objectives: a play's `slos:` parsed; SLIs, error budgets and burn-rate alerts from history."""

from __future__ import annotations

import bisect
import difflib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from typing import Any

from ce_agent.durations import format_duration, parse_duration

#: a check result as the SLO engine reads it: (ts, check, host, status 0-3)
CheckRow = tuple[float, str, str, int]
#: a metric sample as the SLO engine reads it: (ts, name, labels, value)
SampleRow = tuple[float, str, Mapping[str, str], float]
#: one parsing problem: (key path such as "slos[0].objective", message)
ParseError = tuple[str, str]

SLO_KEYS = ("name", "objective", "window", "sli", "labels", "alerts", "notify", "budget_policy")
SLI_KEYS = ("check", "metric", "good", "total")
POLICY_KEYS = ("below", "notify")
OPERATORS = ("<=", ">=", "<", ">")
STATUSES = ("ok", "at_risk", "breached", "no_data")
# an SLO over less than a day has too few events for its budget to mean anything, and would sit
# inside its own 3d ticket window
MIN_WINDOW_S = 86400.0
#: the burn-rate windows every SLO reports, shortest first (the SLO's own window is added last)
BURN_WINDOWS: tuple[tuple[str, float], ...] = (
    ("5m", 300.0), ("30m", 1800.0), ("1h", 3600.0), ("6h", 21600.0), ("3d", 259200.0),
)

_THRESHOLD = re.compile(r"^\s*(<=|>=|<|>)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_PERCENT = re.compile(r"^\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*%?\s*$")
_SLI_FORMS = "{check: NAME}, {metric: NAME, good: '<= 0.5'} or {good: METRIC, total: METRIC}"


@dataclass(frozen=True, slots=True)
class BurnRule:
    """One row of the SRE workbook's multiwindow, multi-burn-rate table: both windows must burn at `factor`."""

    alert: str  # "page" | "ticket"
    long: str
    short: str
    factor: float


#: The SRE workbook's table (chapter 5, "Alerting on SLOs", option 6), most urgent first. The factors
#: are the workbook's for a 30-day window (14.4x for 1h spends 2 % of it); they are used unchanged for
#: other windows, so one table reads the same for every SLO.
BURN_RULES: tuple[BurnRule, ...] = (
    BurnRule("page", "1h", "5m", 14.4),
    BurnRule("page", "6h", "30m", 6.0),
    BurnRule("ticket", "3d", "6h", 1.0),
)


@dataclass(frozen=True, slots=True)
class CheckSLI:
    """`sli: {check: NAME}`: every result of the check is an event, good when it is OK (status 0)."""

    check: str

    def describe(self) -> str:
        return f"check {self.check} OK"


@dataclass(frozen=True, slots=True)
class ThresholdSLI:
    """`sli: {metric: NAME, good: "<= 0.5"}`: each sample is an event, good when it meets the threshold."""

    metric: str
    op: str  # one of OPERATORS
    threshold: float

    def is_good(self, value: float) -> bool:
        match self.op:
            case "<=":
                return value <= self.threshold
            case "<":
                return value < self.threshold
            case ">=":
                return value >= self.threshold
            case _:
                return value > self.threshold

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class RatioSLI:
    """`sli: {good: METRIC, total: METRIC}`: the increase of a counter of good events over that of all events."""

    good: str
    total: str

    def describe(self) -> str:
        return f"{self.good} / {self.total}"


SLI = CheckSLI | ThresholdSLI | RatioSLI


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """`budget_policy: {below: 25%, notify: [...]}`: tell `notify` when less than `below` of the budget is left."""

    below: float  # a share of the budget, 0 < below <= 1 (25% -> 0.25)
    notify: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SLO:
    """One entry of a play's `slos:` list.

    Fields, as written in the playbook:

    - `name` (required): unique within the play; names the SLO in `slo status` and in its alerts.
    - `objective` (required): the target share of good events, in percent, above 0 and below 100
      (`99.9`; `"99.9%"` is accepted too).
    - `window` (required): the rolling period the objective is measured over, at least a day:
      `30d`, `28d`, `4w`, `7d`. `window` keeps the text as written (it is the key of the window's
      burn rate in `slo status`), `window_s` its length in seconds.
    - `sli` (required): what an event is and when it is good, exactly one of
      `{check: NAME}` (each result of the play's check NAME; good when OK),
      `{metric: NAME, good: "<= 0.5"}` (each sample of metric NAME; good when it meets the threshold:
      `<`, `<=`, `>` or `>=` and a number; quote it in YAML), or
      `{good: METRIC, total: METRIC}` (two counters: good events and all events; their increases
      over a window give its good and total counts).
    - `labels` (optional): a mapping that selects metric series by label equality (a series is used
      when each of these labels has this value); only for the `metric` and `good`/`total` forms.
    - `alerts` (optional, default true): false turns the SLO's burn-rate alerts off.
    - `notify` (optional): channels for the burn-rate alerts (as a check's `notify:`).
    - `budget_policy` (optional): `{below: 25%, notify: [channels]}`: an alert when less than
      `below` (a percentage of the error budget) is left; `notify` defaults to the SLO's.
    """

    name: str
    objective: float
    window: str
    window_s: float
    sli: SLI
    labels: tuple[tuple[str, str], ...] = ()
    alerts: bool = True
    notify: tuple[str, ...] = ()
    budget_policy: BudgetPolicy | None = None

    @property
    def budget(self) -> float:
        """The error budget as a fraction of events: 0.001 for 99.9."""
        # through Decimal so that 99.9 gives 0.001 as written, not 0.0010000000000000009: the burn rates
        # and remaining budget people check by hand (0.5 % bad / 0.1 % = 5x) then come out exact
        return float((Decimal(100) - Decimal(repr(self.objective))) / 100)


@dataclass(frozen=True, slots=True)
class SLOStatus:
    """An SLO evaluated at `at`.

    `sli` is the percentage of good events over the SLO's window; `error_budget_remaining` the share
    of the error budget left (1.0 untouched, 0 spent, below 0 overspent); `burn_rates` maps each
    window ("5m", "30m", "1h", "6h", "3d" and the SLO's own) to its error ratio divided by the
    budget (1.0 spends exactly the budget over the SLO's window). All three are None without events.
    `alert` is "page", "ticket" or None, `alert_windows` the (long, short) pair that raised it.
    `events` counts the results or samples used over the SLO's window (for counters, the samples
    with an increase: all but each series' first); `good` and `total` are the SLI's numerator and
    denominator there (counts of results or samples for `check` and `metric` SLIs, counter
    increases for `good`/`total` ones).
    """

    slo: SLO
    at: float
    sli: float | None
    error_budget_remaining: float | None
    burn_rates: Mapping[str, float | None]
    alert: str | None
    alert_windows: tuple[str, str] | None
    status: str  # one of STATUSES
    events: int
    good: float
    total: float


@dataclass(frozen=True, slots=True)
class SLOAlert:
    """What the alert pipeline needs about one SLO alert (adapted to ce_agent.alerting.pipeline.AlertInput).

    `status` is the Nagios-style status the observation carries (2 page, 1 ticket or budget policy,
    0 not burning), `value` the burn rate (or remaining share) it is about."""

    key: str
    labels: Mapping[str, str]
    active: bool
    status: int
    summary: str
    title: str
    notify: tuple[str, ...]
    play: str
    host: str
    value: float | None


# ---- parsing --------------------------------------------------------------------------------------


def parse_slos(raw: Any, where: str = "slos", check_names: Collection[str] | None = None,
               ) -> tuple[list[SLO], list[ParseError]]:
    """A play's `slos:` value as SLOs, and every problem found as (key path, message).

    `where` is the key path of the list itself ("slos"), so problems read "slos[0].objective".
    An SLO with any problem is left out; the others are returned. Values must already be rendered
    (templates are the playbook loader's business). `check_names`, when given, are the play's checks:
    a `{check: NAME}` SLI must name one of them."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [(where, "must be a list of SLOs, each a mapping with name, objective, window and sli")]
    errors: list[ParseError] = []
    slos: list[SLO] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw):
        path = f"{where}[{index}]"
        slo = _parse_slo(item, path, errors, check_names)
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str) and name.strip():
            name = name.strip()
            if name in first_index:
                errors.append((f"{path}.name", f"duplicate SLO name {name!r} (also {where}[{first_index[name]}]);"
                                               " names must be unique in a play"))
                continue
            first_index[name] = index
        if slo is not None:
            slos.append(slo)
    return slos, errors


def _parse_slo(item: Any, path: str, errors: list[ParseError], check_names: Collection[str] | None) -> SLO | None:
    if not isinstance(item, Mapping):
        errors.append((path, "an SLO must be a mapping with name, objective, window and sli"))
        return None
    before = len(errors)
    _unknown_keys(item, SLO_KEYS, path, "SLO", errors)
    name = _required_name(item, "name", path, errors, "a name such as 'API availability'")
    objective = None
    if "objective" not in item:
        errors.append((f"{path}.objective", "is required: the target percentage of good events, such as 99.9"))
    else:
        objective = _percentage(item["objective"])
        if objective is None or not 0 < objective < 100:
            errors.append((f"{path}.objective",
                           f"must be a percentage between 0 and 100 (exclusive), got {item['objective']!r}"))
    window, window_s = _window(item, path, errors)
    sli = None
    if "sli" not in item:
        errors.append((f"{path}.sli", f"is required: {_SLI_FORMS}"))
    else:
        sli = _parse_sli(item["sli"], f"{path}.sli", errors, check_names)
    labels = _labels(item.get("labels"), f"{path}.labels", errors)
    if labels and isinstance(sli, CheckSLI):
        errors.append((f"{path}.labels", "selects metric series; a {check: NAME} SLI has none (remove it)"))
    alerts = item.get("alerts", True)
    if not isinstance(alerts, bool):
        errors.append((f"{path}.alerts", f"must be true or false, got {alerts!r}"))
    notify = _names(item.get("notify"), f"{path}.notify", errors)
    policy = _policy(item.get("budget_policy"), f"{path}.budget_policy", errors)
    if len(errors) > before or name is None or objective is None or sli is None or window is None:
        return None
    return SLO(name=name, objective=objective, window=window, window_s=window_s, sli=sli, labels=labels,
               alerts=alerts, notify=notify, budget_policy=policy)


def _unknown_keys(item: Mapping[Any, Any], known: Sequence[str], path: str, what: str,
                  errors: list[ParseError]) -> None:
    for key in item:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append((f"{path}.{key}", f"unknown {what} key {key!r}{hint}; valid keys: {', '.join(known)}"))


def _required_name(item: Mapping[Any, Any], key: str, path: str, errors: list[ParseError], example: str) -> str | None:
    value = item.get(key)
    if value is None:
        errors.append((f"{path}.{key}", f"is required: {example}"))
        return None
    if not isinstance(value, str) or not value.strip():
        errors.append((f"{path}.{key}", f"must be a non-empty string ({example}), got {value!r}"))
        return None
    return value.strip()


def _percentage(value: Any) -> float | None:
    """A percentage written as 99.9, "99.9" or "99.9%"; None when it is not one."""
    if isinstance(value, bool):
        return None  # YAML's `yes` is not 1 %
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match:
            return float(match.group(1))
    return None


def _window(item: Mapping[Any, Any], path: str, errors: list[ParseError]) -> tuple[str | None, float]:
    if "window" not in item:
        errors.append((f"{path}.window", "is required: the period the objective is measured over, such as 30d"))
        return None, 0.0
    value = item["window"]
    try:
        seconds = parse_duration(value)
    except ValueError:
        errors.append((f"{path}.window", f"must be a duration such as 7d, 28d or 30d, got {value!r}"))
        return None, 0.0
    if seconds < MIN_WINDOW_S:
        errors.append((f"{path}.window", f"must be at least 1d (SLOs are measured over days or weeks, such as 30d), "
                                         f"got {value!r}"))
        return None, 0.0
    # the text as written names the window's burn rate in `slo status` ("30d"); a bare number of
    # seconds is shown in the short form instead
    return (value.strip() if isinstance(value, str) else format_duration(seconds)), seconds


def _parse_sli(raw: Any, path: str, errors: list[ParseError], check_names: Collection[str] | None) -> SLI | None:
    if not isinstance(raw, Mapping) or not raw:
        errors.append((path, f"must be one of {_SLI_FORMS}, got {raw!r}"))
        return None
    before = len(errors)
    _unknown_keys(raw, SLI_KEYS, path, "SLI", errors)
    keys = set(raw)
    sli: SLI | None = None
    if "check" in keys:
        others = sorted(keys & {"metric", "good", "total"})
        if others:
            errors.append((path, f"'check' cannot be combined with {', '.join(map(repr, others))}; "
                                 f"an SLI is exactly one of {_SLI_FORMS}"))
        check = _required_name(raw, "check", path, errors, "the name of one of the play's checks")
        if check is not None and check_names is not None and check not in check_names:
            close = difflib.get_close_matches(check, list(check_names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append((f"{path}.check", f"no check named {check!r} in this play{hint}"))
        elif check is not None:
            sli = CheckSLI(check)
    elif "metric" in keys:
        if "total" in keys:
            errors.append((path, f"'metric' and 'total' cannot be combined; an SLI is exactly one of {_SLI_FORMS}"))
        metric = _required_name(raw, "metric", path, errors, "a metric name such as http_latency_seconds")
        threshold = None
        if "good" not in raw:
            errors.append((f"{path}.good", "is required with 'metric': a threshold such as '<= 0.5'"))
        else:
            threshold = _threshold(raw["good"], f"{path}.good", errors)
        if metric is not None and threshold is not None:
            sli = ThresholdSLI(metric, *threshold)
    elif "total" in keys:
        total = _required_name(raw, "total", path, errors, "the counter of all events")
        good = _required_name(raw, "good", path, errors, "the counter of good events")
        if good is not None and good == total:
            errors.append((f"{path}.good", f"must be another counter than 'total' (both are {good!r})"))
        elif good is not None and total is not None:
            sli = RatioSLI(good, total)
    elif "good" in keys:
        errors.append((path, "'good' alone is ambiguous: add 'metric: NAME' for a threshold on samples, "
                             "or 'total: METRIC' for a ratio of counters"))
    return sli if len(errors) == before else None


def _threshold(value: Any, path: str, errors: list[ParseError]) -> tuple[str, float] | None:
    match = _THRESHOLD.match(value) if isinstance(value, str) else None
    if match is None or not math.isfinite(float(match.group(2))):
        errors.append((path, f"must be a comparison and a number such as '<= 0.5' (one of {', '.join(OPERATORS)}), "
                             f"got {value!r}"))
        return None
    return match.group(1), float(match.group(2))


def _labels(value: Any, path: str, errors: list[ParseError]) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        errors.append((path, f"must be a mapping of label names to values, got {value!r}"))
        return ()
    out = []
    for key, item in value.items():
        if isinstance(item, bool):
            text = "true" if item else "false"  # as the label would be written in Prometheus text
        elif isinstance(item, (str, int, float)):
            text = str(item)
        else:
            errors.append((f"{path}.{key}", f"a label value must be a string or a number, got {item!r}"))
            continue
        out.append((str(key), text))
    return tuple(sorted(out))


def _names(value: Any, path: str, errors: list[ParseError]) -> tuple[str, ...]:
    """Channel names: a list, or a comma-separated string (as a check's `notify:`)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(v.strip() for v in value)
    errors.append((path, f"must be a list of channel names, got {value!r}"))
    return ()


def _policy(value: Any, path: str, errors: list[ParseError]) -> BudgetPolicy | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors.append((path, f"must be a mapping such as {{below: 25%, notify: [ops-mail]}}, got {value!r}"))
        return None
    before = len(errors)
    _unknown_keys(value, POLICY_KEYS, path, "budget_policy", errors)
    below = None
    if "below" not in value:
        errors.append((f"{path}.below",
                       "is required: the share of the error budget left that triggers it, such as 25%"))
    else:
        below = _percentage(value["below"])
        if below is None or not 0 < below <= 100:
            errors.append((f"{path}.below", f"must be a percentage of the error budget above 0 and at most 100, "
                                            f"such as 25%, got {value['below']!r}"))
    notify = _names(value.get("notify"), f"{path}.notify", errors)
    if len(errors) > before or below is None:
        return None
    return BudgetPolicy(below=float(Decimal(repr(below)) / 100), notify=notify)


# ---- evaluation -----------------------------------------------------------------------------------


def evaluate(slo: SLO, results: Iterable[CheckRow], samples: Iterable[SampleRow], now: float,
             host: str | None = None) -> SLOStatus:
    """The SLO at `now`, from check results and metric samples (any order; rows the SLO does not use are skipped).

    A window of length W holds the rows with `now - W < ts <= now` (Prometheus 3's left-open range:
    a row exactly W ago belongs to the next window, never to two). `host` keeps only that host's
    results for a `{check}` SLI (None: every host's); metric samples are selected by name and the
    SLO's `labels`, so pass the samples of the host(s) the SLO is about.

    The same rows give the same answer whoever wrote them: nothing depends on how often the daemon
    or a cron job ran, only on the rows' timestamps (see `_counter_events` for counters)."""
    events = _events(slo, results, samples, now, host)
    times = [e[0] for e in events]
    goods = list(accumulate((e[1] for e in events), initial=0.0))
    totals = list(accumulate((e[2] for e in events), initial=0.0))
    # Every window ends at now: prefix sums and two bisections give each window's sums in O(log n).
    end = bisect.bisect_right(times, now)

    def window(seconds: float) -> tuple[int, float, float]:
        start = bisect.bisect_right(times, now - seconds)
        return end - start, goods[end] - goods[start], totals[end] - totals[start]

    budget = slo.budget
    burn_rates: dict[str, float | None] = {}
    for label, seconds in (*BURN_WINDOWS, (slo.window, slo.window_s)):
        _, good, total = window(seconds)
        ratio = _error_ratio(good, total)
        burn_rates[label] = None if ratio is None else ratio / budget
    rows, good, total = window(slo.window_s)
    ratio = _error_ratio(good, total)
    sli = None if ratio is None else _clamp(100.0 * good / total, 0.0, 100.0)  # 100*995/1000 is 99.5; 100*0.995 is not
    remaining = None if ratio is None else 1.0 - ratio / budget
    alert, alert_windows = None, None
    for rule in BURN_RULES:
        if _burns(burn_rates[rule.long], rule.factor) and _burns(burn_rates[rule.short], rule.factor):
            alert, alert_windows = rule.alert, (rule.long, rule.short)
            break
    if remaining is None:
        status = "no_data"
    elif remaining < 0 and not math.isclose(remaining, 0.0, abs_tol=1e-9):
        status = "breached"
    elif alert is not None or (slo.budget_policy is not None and remaining < slo.budget_policy.below):
        status = "at_risk"  # a page burns faster than a ticket: it is at risk all the more
    else:
        status = "ok"
    return SLOStatus(slo=slo, at=now, sli=sli, error_budget_remaining=remaining, burn_rates=burn_rates, alert=alert,
                     alert_windows=alert_windows, status=status, events=rows, good=good, total=total)


def _events(slo: SLO, results: Iterable[CheckRow], samples: Iterable[SampleRow], now: float,
            host: str | None) -> list[tuple[float, float, float]]:
    """(ts, good, total) per row the SLO reads, oldest first; rows after `now` are left out (clock skew)."""
    sli = slo.sli
    if isinstance(sli, CheckSLI):
        out = [(ts, 1.0 if status == 0 else 0.0, 1.0) for ts, check, row_host, status in results
               if check == sli.check and (host is None or row_host == host) and ts <= now]
    elif isinstance(sli, ThresholdSLI):
        # a sample without a usable value (Nagios' `U`, NaN) says nothing about the event: skipped
        out = [(ts, 1.0 if sli.is_good(value) else 0.0, 1.0) for ts, name, labels, value in samples
               if name == sli.metric and ts <= now and _selected(labels, slo.labels)
               and isinstance(value, (int, float)) and math.isfinite(value)]
    else:
        out = _counter_events(sli, samples, slo.labels, now)
    out.sort(key=lambda e: e[0])
    return out


def _counter_events(sli: RatioSLI, samples: Iterable[SampleRow], selector: tuple[tuple[str, str], ...],
                    now: float) -> list[tuple[float, float, float]]:
    """Each counter sample as an event weighing the increase since the previous sample of its series.

    Like Prometheus' increase(), a drop means the counter restarted from 0, so the new value is the
    increase. Unlike it, there is no extrapolation to the window's edges, and the increase between
    the last sample before a window and the first one in it counts in that window (at the sample
    that observed it): adjacent windows then add up exactly, and a 5m window holding one sample of a
    cron job run every 5 minutes still sees its 5 minutes of traffic. A series' first sample is its
    baseline (its increase is unknown), so pass samples from a little before the longest window."""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    for ts, name, labels, value in samples:
        if name not in (sli.good, sli.total) or ts > now or not _selected(labels, selector):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        key = (name, tuple(sorted((str(k), str(v)) for k, v in labels.items())))
        series.setdefault(key, []).append((ts, float(value)))
    out = []
    for (name, _), points in series.items():
        points.sort(key=lambda p: p[0])
        is_good = name == sli.good
        for (_, before), (ts, value) in zip(points, points[1:]):
            increase = value - before if value >= before else value
            out.append((ts, increase if is_good else 0.0, 0.0 if is_good else increase))
    return out


def _selected(labels: Mapping[str, str], selector: tuple[tuple[str, str], ...]) -> bool:
    return all(str(labels.get(key, "")) == value for key, value in selector) if selector else True


def _error_ratio(good: float, total: float) -> float | None:
    """The share of bad events; None without events. Clamped to [0, 1]: counters scraped a moment
    apart can show more good than total events, which is no negative error."""
    if total <= 0:
        return None
    return _clamp((total - good) / total, 0.0, 1.0)


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _burns(rate: float | None, factor: float) -> bool:
    # 72 bad of 500 at 99 % is 14.4x by hand and 14.399999999999999 in floats: that must page
    return rate is not None and (rate >= factor or math.isclose(rate, factor, rel_tol=1e-9))


# ---- output ---------------------------------------------------------------------------------------


def as_json(status: SLOStatus) -> dict[str, Any]:
    """One SLO as `ce-agent slo status --format json` shows it: objective and sli in percent (4
    decimals), error_budget_remaining as a share of the budget (4 decimals), burn rates (3 decimals)."""
    return {
        "name": status.slo.name,
        "objective": _round(status.slo.objective, 4),
        "window": status.slo.window,
        "sli": _round(status.sli, 4),
        "error_budget_remaining": _round(status.error_budget_remaining, 4),
        "burn_rates": {label: _round(rate, 3) for label, rate in status.burn_rates.items()},
        "status": status.status,
    }


def as_json_document(statuses: Sequence[SLOStatus]) -> dict[str, Any]:
    """The whole `slo status --format json` document: `{"slos": [...]}`."""
    return {"slos": [as_json(s) for s in statuses]}


def _round(value: float | None, digits: int) -> float | None:
    # + 0.0 turns the -0.0 of a rounded tiny negative into 0.0, which JSON readers show as 0
    return None if value is None else round(value, digits) + 0.0


def render_text(statuses: Sequence[SLOStatus]) -> str:
    """A table for `ce-agent slo status`: one SLO a line, burn rates over 1h, 6h and 3d."""
    if not statuses:
        return "no SLOs defined in the selected plays\n"
    header = ("NAME", "OBJECTIVE", "WINDOW", "SLI", "BUDGET LEFT", "BURN 1h", "BURN 6h", "BURN 3d", "STATUS")
    rows = [header]
    for s in statuses:
        rows.append((
            s.slo.name,
            f"{s.slo.objective:g}%",
            s.slo.window,
            "-" if s.sli is None else f"{s.sli:.3f}%",
            "-" if s.error_budget_remaining is None else f"{100 * s.error_budget_remaining:.1f}%",
            *(_rate(s.burn_rates.get(w)) for w in ("1h", "6h", "3d")),
            s.status if s.alert is None else f"{s.status} ({s.alert}: {'/'.join(s.alert_windows or ())})",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        # the name and status read left to right; numbers line up on the right
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row) - 1)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2f}x"


# ---- alerts ---------------------------------------------------------------------------------------


def slo_key(kind: str, name: str, play: str, host: str) -> str:
    """An SLO alert's identity, in the style of ce_agent.alerting.pipeline.check_key."""
    return f'{kind}{{name="{_escape(name)}",play="{_escape(play)}",host="{_escape(host)}"}}'


def _escape(text: str) -> str:
    # Prometheus' label value escaping, so an SLO named 'say "hi"' cannot forge another key
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def burn_alert_inputs(statuses: Iterable[SLOStatus], play: str, host: str,
                      known: Mapping[str, Mapping[str, str]] | None = None) -> list[SLOAlert]:
    """One burn-rate alert per SLO with alerts on: active while a row of BURN_RULES burns.

    Labels: alertname=SLOBurnRate, slo, play, host, severity (critical for a page, warning for a
    ticket), long_window and short_window (the pair that burns). When not burning, the labels the
    alert had in `known` (the stored alerts' labels) are kept, so its "resolved" takes the routes
    its "firing" took, as a check's does."""
    alerts = []
    for s in statuses:
        if not s.slo.alerts:
            continue
        key = slo_key("slo", s.slo.name, play, host)
        labels = {"alertname": "SLOBurnRate", "slo": s.slo.name, "play": play, "host": host}
        if s.alert is not None and s.alert_windows is not None:
            long, short = s.alert_windows
            severity = "critical" if s.alert == "page" else "warning"
            labels |= {"severity": severity, "long_window": long, "short_window": short}
            rate = s.burn_rates[long]
            summary = (f"error budget burning at {_times(rate)} over {long} "
                       f"(and {_times(s.burn_rates[short])} over {short}); {_left(s.error_budget_remaining)}")
            status = 2 if s.alert == "page" else 1
        else:
            previous = (known or {}).get(key, {})
            labels |= {k: str(previous[k]) for k in ("severity", "long_window", "short_window") if k in previous}
            labels.setdefault("severity", "warning")
            rate = s.burn_rates.get("1h")
            if s.sli is None:
                summary = f"no data over {s.slo.window}"
            else:
                rates = ", ".join(f"{_times(s.burn_rates.get(w))} over {w}" for w in ("1h", "6h", "3d"))
                summary = f"error budget burn within limits ({rates}); {_left(s.error_budget_remaining)}"
            status = 0
        alerts.append(SLOAlert(key=key, labels=labels, active=status > 0, status=status, summary=summary,
                               title=f"SLO {s.slo.name} on {host}", notify=s.slo.notify, play=play, host=host,
                               value=rate))
    return alerts


def budget_alert_inputs(statuses: Iterable[SLOStatus], play: str, host: str) -> list[SLOAlert]:
    """One budget-policy alert per SLO with a `budget_policy`: active while less than `below` of the budget is left.

    Labels: alertname=SLOErrorBudget, slo, play, host, severity=warning. Its channels are the
    policy's `notify`, else the SLO's. Without data it is inactive (no events spend no budget)."""
    alerts = []
    for s in statuses:
        policy = s.slo.budget_policy
        if policy is None:
            continue
        remaining = s.error_budget_remaining
        active = remaining is not None and remaining < policy.below
        below = f"{100 * policy.below:g}%"
        if remaining is None:
            summary = f"no data over {s.slo.window}"
        elif active:
            summary = f"{100 * remaining:.0f}% of the error budget left, below the policy's {below}"
        else:
            summary = f"{100 * remaining:.0f}% of the error budget left (policy: below {below})"
        alerts.append(SLOAlert(
            key=slo_key("slo_budget", s.slo.name, play, host),
            labels={"alertname": "SLOErrorBudget", "slo": s.slo.name, "play": play, "host": host,
                    "severity": "warning"},
            active=active, status=1 if active else 0, summary=summary, title=f"SLO {s.slo.name} budget on {host}",
            notify=policy.notify or s.slo.notify, play=play, host=host, value=remaining,
        ))
    return alerts


def _times(rate: float | None) -> str:
    return "no data" if rate is None else f"{rate:.1f}x"


def _left(remaining: float | None) -> str:
    if remaining is None:
        return "no data"
    if remaining < 0:
        return f"budget overspent ({100 * remaining:.0f}% left)"
    return f"{100 * remaining:.0f}% left"


# Counters need a sample from before the window: each series' first sample is only a baseline.
COUNTER_LOOKBACK_S = 3600.0


def evaluate_stored(slos_by_play_host: Mapping[tuple[str, str], Sequence[SLO]], store: Any,
                    now: float) -> list[tuple[str, str, SLOStatus]]:
    """Every SLO of the plan on each of its hosts, from the state database's history: check results,
    the checks' perfdata and the kept collector samples (store.samples)."""
    out: list[tuple[str, str, SLOStatus]] = []
    for (play, host), slos in slos_by_play_host.items():
        for slo in slos:
            since = now - slo.window_s - (COUNTER_LOOKBACK_S if isinstance(slo.sli, RatioSLI) else 0.0)
            results: list[CheckRow] = []
            samples: list[SampleRow] = []
            if isinstance(slo.sli, CheckSLI):
                results = [(r.ts, r.check, r.host, r.status) for r in store.results(since, check=slo.sli.check, host=host)
                           if r.play == play]
            else:
                names = {slo.sli.metric} if isinstance(slo.sli, ThresholdSLI) else {slo.sli.good, slo.sli.total}
                samples = [(r.ts, str(m["name"]), dict(m.get("labels") or {}), m["value"])
                           for r in store.results(since, host=host) if r.play == play
                           for m in r.metrics if m.get("name") in names and isinstance(m.get("value"), (int, float))]
                for name in sorted(names):
                    samples += [(s.ts, s.name, s.labels, s.value) for s in store.samples(since, name=name)
                                if s.host == host and s.play == play and s.value is not None]
                samples.sort(key=lambda row: row[0])
            out.append((play, host, evaluate(slo, results, samples, now, host=host)))
    return out
