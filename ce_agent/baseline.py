"""Performance baselines: per check, the run time and metric statistics of a period, and today compared with them."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from ce_agent.durations import format_duration, parse_duration
from ce_agent.history import (
    change_percent,
    finite_number,
    format_number,
    format_seconds,
    format_table,
    iso_time,
    series_name,
    summarize,
    within,
)
from ce_agent.store import ResultRow

BASELINE_VERSION = 1
JSON_VERSION = 1
DEFAULT_THRESHOLD_PCT = 20.0
DEFAULT_WINDOW = "1h"
#: what compare() says of a series, in the order the text output counts them
VERDICTS: tuple[str, ...] = ("regressed", "improved", "same", "new", "no_data")
DURATION = "duration"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_RULE_KEYS: tuple[str, ...] = ("duration", "metric", "labels", "threshold", "window")

CheckKey = tuple[str, str, str]  # (play, host, check)
MetricKey = tuple[str, tuple[tuple[str, str], ...]]  # (name, sorted labels)


# ---- collecting ----------------------------------------------------------------------------------------


@dataclass
class _Check:
    """The raw numbers of one check (play, host, check) over a period."""

    plugin: str = ""
    durations: list[float] = field(default_factory=list)
    units: dict[MetricKey, str] = field(default_factory=dict)
    metrics: dict[MetricKey, list[float]] = field(default_factory=dict)


def _collect(results: Iterable[ResultRow]) -> dict[CheckKey, _Check]:
    checks: dict[CheckKey, _Check] = {}
    for row in results:
        data = checks.setdefault((row.play, row.host, row.check), _Check())
        data.plugin = row.plugin
        duration = finite_number(row.duration_s)
        if duration is not None:
            data.durations.append(duration)
        for metric in row.metrics or ():
            value = finite_number(metric.get("value"))
            if value is None or metric.get("unit") == "c":
                # Nagios' `U` (unknown) says nothing about performance, and a counter (unit `c`) only
                # grows: its level is no baseline (its rate would be, which one result cannot give)
                continue
            labels = metric.get("labels") or {}
            key = (str(metric.get("name", "")), tuple(sorted((str(k), str(v)) for k, v in labels.items())))
            data.metrics.setdefault(key, []).append(value)
            data.units[key] = str(metric.get("unit") or "")
    return checks


def check_name(name: str) -> str:
    """A baseline's name: it becomes a file name, so letters, digits, `.`, `_` and `-` only (at most 64)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a baseline name is 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
                         f"got {name!r}")
    return name


def compute_baseline(results: Iterable[ResultRow], since: float, now: float, name: str = "default") -> dict[str, Any]:
    """The baseline `name` of the results with since <= ts <= now: per check its run time statistics and,
    per metric series (name and labels), the statistics of its values. JSON-able, as saved:

    {"version": 1, "name", "created": now, "since", "results": how many,
     "checks": [{"play", "host", "check", "plugin", "duration": {count, min, max, mean, p50, p95, p99},
                 "metrics": [{"name", "labels", "unit", "stats": {...}}]}]}

    Checks are sorted by play, host and check, metrics by name and labels. Unknown metric values (None)
    and non-finite ones are left out."""
    rows = within(results, since, now, lambda r: r.ts)
    checks = []
    for (play, host, check), data in sorted(_collect(rows).items()):
        checks.append({
            "play": play,
            "host": host,
            "check": check,
            "plugin": data.plugin,
            "duration": summarize(data.durations),
            "metrics": [
                {"name": key[0], "labels": dict(key[1]), "unit": data.units[key], "stats": summarize(values)}
                for key, values in sorted(data.metrics.items())
            ],
        })
    return {"version": BASELINE_VERSION, "name": check_name(name), "created": now, "since": since,
            "results": len(rows), "checks": checks}


def load_baseline(data: object) -> dict[str, Any]:
    """A saved baseline (parsed JSON) checked for the shape compute_baseline() writes; ValueError says what is wrong."""
    if not isinstance(data, Mapping) or not isinstance(data.get("checks"), list):
        raise ValueError("not a ce-agent baseline (expected an object with a \"checks\" list)")
    version = data.get("version")
    if version != BASELINE_VERSION:
        if isinstance(version, int) and version > BASELINE_VERSION:
            raise ValueError(f"this baseline has version {version}, newer than this ce-agent understands "
                             f"({BASELINE_VERSION}): upgrade ce-agent or save the baseline again")
        raise ValueError(f"unsupported baseline version {version!r} (expected {BASELINE_VERSION})")
    for n, entry in enumerate(data["checks"]):
        if (not isinstance(entry, Mapping) or not all(isinstance(entry.get(k), str) for k in ("play", "host", "check"))
                or not isinstance(entry.get("duration"), Mapping) or not isinstance(entry.get("metrics"), list)):
            raise ValueError(f"baseline check #{n + 1}: expected play, host, check, duration and metrics")
        for metric in entry["metrics"]:
            if not isinstance(metric, Mapping) or not isinstance(metric.get("name"), str) \
                    or not isinstance(metric.get("stats"), Mapping):
                raise ValueError(f"baseline check #{n + 1} ({entry['check']} on {entry['host']}): "
                                 "a metric needs a name and stats")
    return dict(data)


# ---- comparing -----------------------------------------------------------------------------------------


def _verdict(base: Mapping[str, Any] | None, recent: Mapping[str, Any], change: float | None,
             threshold_pct: float) -> str:
    if base is None or not base.get("count"):
        return "new"
    if not recent.get("count"):
        return "no_data"
    if change is None:
        # growth from exactly 0 has no percentage, but its direction is still plain
        return "regressed" if recent["p95"] > base["p95"] else "improved"
    if change > threshold_pct:
        return "regressed"
    if change < -threshold_pct:
        return "improved"
    return "same"


def _row(key: CheckKey, series: str, metric: str | None, labels: Mapping[str, str], unit: str,
         base: Mapping[str, Any] | None, recent: Mapping[str, Any], threshold_pct: float) -> dict[str, Any]:
    p95_change = change_percent(base.get("p95") if base else None, recent.get("p95"))
    return {
        "play": key[0],
        "host": key[1],
        "check": key[2],
        "series": series,
        "metric": metric,
        "labels": dict(labels),
        "unit": unit,
        "baseline": dict(base) if base is not None else None,
        "recent": dict(recent),
        "p95_change_pct": p95_change,
        "mean_change_pct": change_percent(base.get("mean") if base else None, recent.get("mean")),
        "verdict": _verdict(base, recent, p95_change, threshold_pct),
    }


def compare(baseline: Mapping[str, Any], recent_results: Iterable[ResultRow], now: float, *,
            since: float | None = None, threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> list[dict[str, Any]]:
    """One row per check run time and per metric series, of the baseline and of the recent results
    (ts <= now, and >= since when given):

    {"play", "host", "check", "series": "duration" or name{labels}, "metric": None or its name, "labels",
     "unit": "s" for run times, "baseline": stats or None, "recent": stats, "p95_change_pct",
     "mean_change_pct", "verdict"}

    The verdict: "regressed" when the recent p95 is more than threshold_pct % above the baseline's,
    "improved" when more than threshold_pct % below, else "same"; "new" for a series the baseline does
    not have, "no_data" for one without recent values. Higher is worse, as for run times and latencies.
    Rows are sorted by play, host, check, the run time first, then the metrics by series name."""
    recent = _collect(within(recent_results, -math.inf if since is None else since, now, lambda r: r.ts))
    saved = {(e["play"], e["host"], e["check"]): e for e in baseline.get("checks", ())}
    rows = []
    for key in sorted(set(saved) | set(recent)):
        entry, data = saved.get(key), recent.get(key, _Check())
        rows.append(_row(key, DURATION, None, {}, "s", entry["duration"] if entry else None,
                         summarize(data.durations), threshold_pct))
        saved_metrics = {
            (m["name"], tuple(sorted((str(k), str(v)) for k, v in (m.get("labels") or {}).items()))): m
            for m in (entry["metrics"] if entry else ())
        }
        metric_rows = []
        for mkey in set(saved_metrics) | set(data.metrics):
            base_metric = saved_metrics.get(mkey)
            unit = data.units.get(mkey) or (str(base_metric.get("unit") or "") if base_metric else "")
            labels = dict(mkey[1])
            metric_rows.append(_row(key, series_name(mkey[0], labels), mkey[0], labels, unit,
                                    base_metric["stats"] if base_metric else None,
                                    summarize(data.metrics.get(mkey, ())), threshold_pct))
        rows += sorted(metric_rows, key=lambda r: r["series"])
    return rows


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many rows have each verdict (every verdict present, 0 when none)."""
    return {verdict: sum(1 for r in rows if r["verdict"] == verdict) for verdict in VERDICTS}


def _value(row: Mapping[str, Any], stats: Mapping[str, Any] | None, key: str) -> str:
    value = stats.get(key) if stats else None
    if row["series"] == DURATION:
        return format_seconds(value)
    text = format_number(value)
    return f"{text} {row['unit']}" if value is not None and row["unit"] else text


def _change(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def render_compare_text(baseline: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *,
                        threshold_pct: float = DEFAULT_THRESHOLD_PCT, tz: tzinfo | None = None) -> str:
    """`baseline compare` for people: a line about the baseline, a table, the count of each verdict."""
    head = (f"baseline {baseline.get('name', '?')!r}: {baseline.get('results', 0)} results from "
            f"{iso_time(baseline['since'], tz)} to {iso_time(baseline['created'], tz)}; "
            f"regressed/improved = p95 more than {threshold_pct:g} % above/below")
    if not rows:
        return head + "\nnothing to compare: no results in the baseline or since"
    table = format_table(
        ("PLAY", "HOST", "CHECK", "SERIES", "BASE P95", "NOW P95", "P95 CHANGE", "BASE MEAN", "NOW MEAN",
         "MEAN CHANGE", "VERDICT"),
        [
            (r["play"], r["host"], r["check"], r["series"], _value(r, r["baseline"], "p95"),
             _value(r, r["recent"], "p95"), _change(r["p95_change_pct"]), _value(r, r["baseline"], "mean"),
             _value(r, r["recent"], "mean"), _change(r["mean_change_pct"]), r["verdict"].replace("_", " "))
            for r in rows
        ],
    )
    tally = ", ".join(f"{n} {verdict.replace('_', ' ')}" for verdict, n in counts(rows).items())
    return "\n".join([head, *table, tally])


def as_json(baseline: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *,
            threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> str:
    """`baseline compare --format json`: {"version", "baseline": {name, created, since, results},
    "threshold_pct", "counts": {verdict: n}, "rows": compare() rows}."""
    about = {k: baseline.get(k) for k in ("name", "created", "since", "results")}
    return json.dumps({"version": JSON_VERSION, "baseline": about, "threshold_pct": threshold_pct,
                       "counts": counts(rows), "rows": list(rows)}, indent=2)


# ---- the regression rule -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegressionRule:
    """`regression: {duration: true | metric: NAME [labels: {...}], threshold: 20%, window: 1h}`."""

    duration: bool
    metric: str | None
    labels: Mapping[str, str]
    threshold_pct: float
    window_s: float


def _threshold(value: object) -> float:
    text = value.strip().removesuffix("%").strip() if isinstance(value, str) else value
    number = None
    if isinstance(text, str):
        try:
            number = float(text)
        except ValueError:
            pass
    else:
        number = finite_number(text)
    if number is None or not math.isfinite(number) or number < 0:
        raise ValueError(f"regression.threshold: expected a percentage of at least 0 such as 20%, got {value!r}")
    return number


def parse_regression_rule(rule: object) -> RegressionRule:
    """The rule from its playbook form; ValueError says what is wrong.

    `threshold` is a percentage: "20%", "20" and 20 all mean 20 % (default 20 %); `window` is how far back
    the recent p95 looks (default 1h); `labels` narrows a metric to the series with those labels."""
    if not isinstance(rule, Mapping):
        raise ValueError(f"regression: expected a mapping such as {{duration: true, threshold: 20%}}, got {rule!r}")
    unknown = sorted(str(k) for k in rule if k not in _RULE_KEYS)
    if unknown:
        raise ValueError(f"regression: unknown key {unknown[0]!r} (expected {', '.join(_RULE_KEYS)})")
    duration = rule.get("duration", False)
    if not isinstance(duration, bool):
        raise ValueError(f"regression.duration: expected true or false, got {duration!r}")
    metric = rule.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric.strip()):
        raise ValueError(f"regression.metric: expected a metric name, got {metric!r}")
    if duration and metric:
        raise ValueError("regression: give either duration: true or metric: NAME, not both")
    if not duration and not metric:
        raise ValueError("regression: say what to watch: duration: true or metric: NAME")
    labels = rule.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ValueError(f"regression.labels: expected a mapping of label names to values, got {labels!r}")
    if labels and not metric:
        raise ValueError("regression.labels: only a metric has labels")
    try:
        window = parse_duration(rule.get("window", DEFAULT_WINDOW))
    except ValueError as exc:
        raise ValueError(f"regression.window: {exc}") from None
    if window <= 0:
        raise ValueError(f"regression.window: must be more than 0, got {rule.get('window')!r}")
    return RegressionRule(
        duration=duration,
        metric=metric.strip() if metric else None,
        labels={str(k): str(v) for k, v in labels.items()},
        threshold_pct=_threshold(rule.get("threshold", DEFAULT_THRESHOLD_PCT)),
        window_s=window,
    )


def _selected(row: Mapping[str, Any], rule: RegressionRule, play: str | None, host: str | None,
              check: str | None) -> bool:
    if any(want is not None and row[field_] != want for field_, want in (("play", play), ("host", host),
                                                                          ("check", check))):
        return False
    if rule.duration:
        return row["series"] == DURATION
    return row["metric"] == rule.metric and all(row["labels"].get(k) == v for k, v in rule.labels.items())


def regression_check(rule: Mapping[str, Any] | RegressionRule, baseline: Mapping[str, Any],
                     recent: Iterable[ResultRow], now: float, *, play: str | None = None, host: str | None = None,
                     check: str | None = None) -> tuple[bool, str, float | None]:
    """(active, summary, value) of a regression rule: active when the p95 of the results of the last
    `window` exceeds the baseline's p95 by more than `threshold` %. `value` is that change in % (None
    without a comparison, or from a baseline p95 of 0). Over several series (hosts, checks, metric
    labels; narrow with play/host/check) the worst one speaks. Raises ValueError for an invalid rule."""
    parsed = rule if isinstance(rule, RegressionRule) else parse_regression_rule(rule)
    rows = [r for r in compare(baseline, recent, now, since=now - parsed.window_s, threshold_pct=parsed.threshold_pct)
            if _selected(r, parsed, play, host, check)]
    what = "run time" if parsed.duration else series_name(parsed.metric or "", parsed.labels)
    window = format_duration(parsed.window_s)
    compared = [r for r in rows if r["verdict"] not in ("new", "no_data")]
    if not compared:
        if any(r["verdict"] == "no_data" for r in rows):
            return False, f"no {what} in the last {window} to compare with baseline {baseline.get('name')!r}", None
        return False, f"baseline {baseline.get('name')!r} has no {what} to compare with", None
    worst = max(compared, key=lambda r: (r["verdict"] == "regressed",
                                         math.inf if r["p95_change_pct"] is None else r["p95_change_pct"]))
    active = worst["verdict"] == "regressed"
    name = what if parsed.duration else worst["series"]
    base, now_p95 = _value(worst, worst["baseline"], "p95"), _value(worst, worst["recent"], "p95")
    change = worst["p95_change_pct"]
    how = f"{change:+.1f} %" if change is not None else "up from 0"
    verdict = "more than" if active else "within"
    summary = (f"{worst['check']} on {worst['host']}: p95 {name} {now_p95} over the last {window} is {how} against "
               f"baseline {baseline.get('name')!r} ({base}), {verdict} the {parsed.threshold_pct:g} % threshold")
    return active, summary, change
