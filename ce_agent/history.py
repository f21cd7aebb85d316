"""Numbers over the results history shared by baselines, reports and stats: percentiles, summaries, time buckets."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: the percentiles every summary carries, as (key, percent)
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))
#: the keys of summarize(), in order
SUMMARY_KEYS: tuple[str, ...] = ("count", "min", "max", "mean", "p50", "p95", "p99")
STATUS_NAMES: tuple[str, ...] = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


# ---- percentiles and summaries -----------------------------------------------------------------------


def percentile(values: Iterable[float], percent: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least `percent` % of the values at or below it.

    With the n values sorted, it is the value of rank ceil(percent / 100 * n) (rank 1 for percent 0), so
    p95 of 1..100 is 95, p50 of 1..100 is 50 and p50 of [1, 2, 3, 4] is 2. None for no values.
    Nearest rank rather than linear interpolation: the answer is always a value that was really observed
    (a duration some run really took), it never needs rounding, and it does not move between two samples
    when there are few of them."""
    if not 0.0 <= percent <= 100.0 or math.isnan(percent):
        raise ValueError(f"a percentile must be between 0 and 100, got {percent!r}")
    ordered = sorted(values)
    if not ordered:
        return None
    return _ranked(ordered, percent)


def _ranked(ordered: Sequence[float], percent: float) -> float:
    # the epsilon keeps 95 / 100 * 100 = 95.00000000000001 from becoming rank 96
    rank = max(1, math.ceil(percent / 100.0 * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """count, min, max, mean, p50, p95 and p99 (nearest rank) of `values`; all but count are None for none.

    The mean is rounded to 6 decimals (a microsecond for durations): float sums would otherwise show
    0.30000000000000004 in every JSON output."""
    ordered = sorted(values)
    if not ordered:
        return {key: (0 if key == "count" else None) for key in SUMMARY_KEYS}
    summary: dict[str, Any] = {
        "count": len(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "mean": round(math.fsum(ordered) / len(ordered), 6),
    }
    for key, percent in PERCENTILES:
        summary[key] = _ranked(ordered, percent)
    return summary


def finite_number(value: object) -> float | None:
    """`value` as a float when it is a real, finite number (not a bool, None, NaN or text), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def percent(part: float, whole: float) -> float | None:
    """part / whole as a percentage rounded to 2 decimals (2 of 3 -> 66.67); None when whole is 0."""
    if not whole:
        return None
    return round(100.0 * part / whole, 2)


def change_percent(old: float | None, new: float | None) -> float | None:
    """How much `new` differs from `old`, in % of `old` (2 decimals); None when either is missing or old is 0
    and new is not (no percentage expresses growth from nothing); 0.0 from 0 to 0.

    Divided by |old| so that a rise is positive even for negative values (temperatures, offsets)."""
    if old is None or new is None:
        return None
    if old == 0:
        return 0.0 if new == 0 else None
    return round(100.0 * (new - old) / abs(old), 2)


# ---- statuses ------------------------------------------------------------------------------------------


def status_name(code: object) -> str:
    """OK, WARNING, CRITICAL or UNKNOWN for a status code (or its name); other values as text."""
    if isinstance(code, str):
        upper = code.strip().upper()
        if upper in STATUS_NAMES:
            return upper
        try:
            code = int(upper)
        except ValueError:
            return code
    if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < len(STATUS_NAMES):
        return STATUS_NAMES[code]
    return str(code)


# ---- time ----------------------------------------------------------------------------------------------


def local_time(ts: float, tz: tzinfo | None) -> datetime:
    """`ts` as an aware datetime in `tz`; None means the system's zone, with the offset of that moment (DST)."""
    return datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts).astimezone()


def iso_time(ts: float, tz: tzinfo | None) -> str:
    """A time for people and scripts alike: ISO 8601 with its UTC offset, to the second."""
    return local_time(ts, tz).isoformat(timespec="seconds")


def day_of(ts: float, tz: tzinfo | None) -> date:
    return local_time(ts, tz).date()


def days_between(since: float, now: float, tz: tzinfo | None) -> list[date]:
    """Every calendar day from the one holding `since` to the one holding `now`, both included.

    Charts need the days without any result too: a gap is news."""
    first, last = day_of(since, tz), day_of(now, tz)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def weekday_hour(ts: float, tz: tzinfo | None) -> tuple[int, int]:
    """(weekday 0 = Monday .. 6 = Sunday, hour 0..23) of `ts` in `tz`."""
    moment = local_time(ts, tz)
    return moment.weekday(), moment.hour


def within(items: Iterable[T], since: float, now: float, ts_of: Callable[[T], float]) -> list[T]:
    """The items with since <= time <= now, in their order (a later time is a clock or test mistake, not news)."""
    return [item for item in items if since <= ts_of(item) <= now]


def group(items: Iterable[T], key_of: Callable[[T], K]) -> dict[K, list[T]]:
    """The items by key, keys in order of first appearance, items in their order."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key_of(item), []).append(item)
    return groups


def by_day(items: Iterable[T], ts_of: Callable[[T], float], tz: tzinfo | None) -> dict[date, list[T]]:
    return group(items, lambda item: day_of(ts_of(item), tz))


def series_by_day(items: Sequence[T], ts_of: Callable[[T], float], since: float, now: float, tz: tzinfo | None,
                  measure: Callable[[list[T]], float | None]) -> list[tuple[date, float | None]]:
    """measure(items of the day) for every day from since to now; None for a day without items."""
    days = by_day(within(items, since, now, ts_of), ts_of, tz)
    return [(day, measure(days[day]) if day in days else None) for day in days_between(since, now, tz)]


# ---- formatting ----------------------------------------------------------------------------------------


def format_number(value: float | None) -> str:
    """A value for people: `-` when missing, whole numbers without a decimal point, else 6 significant digits."""
    if value is None:
        return "-"
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def format_seconds(value: float | None) -> str:
    """A run time for people: `-` when missing, `850 ms` below a second, `1.5 s` above."""
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.3g} ms"
    return f"{value:.3g} s" if abs(value) < 100 else f"{value:.0f} s"


def format_percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def format_labels(labels: Mapping[str, Any]) -> str:
    """Prometheus' form: name="value" pairs, sorted, comma separated."""
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def series_name(name: str, labels: Mapping[str, Any]) -> str:
    """One metric series as Prometheus writes it: name{a="1",b="2"}, or the bare name without labels."""
    return f"{name}{{{format_labels(labels)}}}" if labels else name


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, a header line first; trailing spaces trimmed."""
    body = [list(row) for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(headers)]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [list(headers), *body]]


def plural(count: int, word: str) -> str:
    """`1 check`, `2 checks`: English plurals by an `s`, enough for the words these outputs use."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def alert_name(labels: Mapping[str, Any]) -> str:
    """An alert's name without its host: `Root disk` (a check), `HighMemory` (a rule),
    `SLOBurnRate api-availability` (an SLO), `Root disk regression`; "" without those labels."""
    alertname, check, slo = labels.get("alertname"), labels.get("check"), labels.get("slo")
    if slo and alertname:
        return f"{alertname} {slo}"
    if alertname == "Regression" and check:
        return f"{check} regression"
    return str(check or alertname or "")


def alert_title(labels: Mapping[str, Any], key: str) -> str:
    """An alert as people name it: `Root disk on web1` (a check), `HighMemory on web1` (a rule),
    `SLOBurnRate api-availability on web1` (an SLO), `Root disk regression on web1`."""
    host = labels.get("host")
    name = alert_name(labels)
    return f"{name} on {host}" if name and host else str(key)


def period(since: float, now: float, tz: tzinfo | None) -> dict[str, Any]:
    """The head of a report's or statistics' JSON: the period, and the zone its days and hours are in
    (an IANA name when the zone has one)."""
    zone = getattr(tz, "key", None) or (str(tz) if tz is not None else None)
    if zone is None:
        local = local_time(now, None)
        zone = getattr(local.tzinfo, "key", None) or local.tzname() or "local"
    return {"generated": iso_time(now, tz), "generated_ts": now, "since": iso_time(since, tz), "since_ts": since,
            "timezone": zone}
