"""Usage analytics: runs and failure rates per check, frequent alerts, notifications per channel, a heatmap."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import tzinfo
from typing import Any

from ce_agent.history import (
    alert_title,
    period,
    WEEKDAYS,
    format_percent,
    format_table,
    group,
    iso_time,
    percent,
    plural,
    status_name,
    weekday_hour,
    within,
)
from ce_agent.store import ResultRow

JSON_VERSION = 1
#: the heatmap's characters: no problem, then five levels up to the busiest hour
LEVELS = ".-+*#@"
CSV_COLUMNS: tuple[str, ...] = ("section", "play", "host", "check", "alert", "channel", "kind", "weekday", "hour",
                                "measure", "value")
HEATMAP_OF = "results that were not OK"
# a cell starting with one of these is a formula to a spreadsheet (CSV injection)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _checks(rows: Sequence[ResultRow], tz: tzinfo | None) -> list[dict[str, Any]]:
    out = []
    for (play, host, check), runs in group(rows, lambda r: (r.play, r.host, r.check)).items():
        names = Counter(status_name(r.status if r.status in (0, 1, 2) else 3) for r in runs)
        failures = len(runs) - names["OK"]
        out.append({"play": play, "host": host, "check": check, "runs": len(runs), "failures": failures,
                    "failure_rate": percent(failures, len(runs)), "ok": names["OK"], "warning": names["WARNING"],
                    "critical": names["CRITICAL"], "unknown": names["UNKNOWN"],
                    "last_at": iso_time(max(r.ts for r in runs), tz)})
    return sorted(out, key=lambda c: (-(c["failure_rate"] or 0.0), -c["runs"], c["play"], c["host"], c["check"]))


def _alerts(events: Sequence[Mapping[str, Any]], tz: tzinfo | None, top: int) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        key = str(event.get("key", ""))
        labels = dict(event.get("labels") or {})
        row = rows.setdefault(key, {"key": key, "title": alert_title(labels, key), "labels": labels, "fired": 0,
                                    "resolved": 0, "last_fired": None, "last_fired_ts": None, "last_summary": ""})
        if event.get("kind") == "firing":
            row["fired"] += 1
            row["last_fired"], row["last_fired_ts"] = iso_time(event["at"], tz), event["at"]
            row["last_summary"] = str(event.get("summary") or "")
        elif event.get("kind") == "resolved":
            row["resolved"] += 1
    fired = [r for r in rows.values() if r["fired"]]
    fired.sort(key=lambda r: (-r["fired"], -(r["last_fired_ts"] or 0.0), r["key"]))
    return fired[:top]


def _channels(deliveries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for channel, items in sorted(group(deliveries, lambda d: str(d.get("channel", ""))).items()):
        sent = sum(1 for d in items if d.get("sent"))
        kinds = Counter(str(d.get("kind", "")) for d in items)
        out.append({"channel": channel, "total": len(items), "sent": sent, "failed": len(items) - sent,
                    "by_kind": dict(sorted(kinds.items()))})
    return out


def _heatmap(rows: Sequence[ResultRow], tz: tzinfo | None) -> dict[str, Any]:
    counts = [[0] * 24 for _ in WEEKDAYS]
    for row in rows:
        if row.status != 0:
            weekday, hour = weekday_hour(row.ts, tz)
            counts[weekday][hour] += 1
    return {"of": HEATMAP_OF, "weekdays": list(WEEKDAYS), "hours": list(range(24)), "counts": counts,
            "max": max(max(day) for day in counts), "total": sum(map(sum, counts))}


def build_stats(results: Iterable[ResultRow], history: Iterable[Mapping[str, Any]],
                deliveries: Iterable[Mapping[str, Any]], since: float, now: float, tz: tzinfo | None, *,
                top: int = 10) -> dict[str, Any]:
    """Usage over since <= time <= now, as the JSON form. `deliveries` are {"channel", "kind", "at", "sent"};
    `tz` is the zone of the heatmap's hours and weekdays (None: the system's).

    Keys: version, generated(_ts), since(_ts), timezone, totals {checks, runs, failures, failure_rate,
    alerts_fired, notifications, notifications_failed}, checks (highest failure rate first), alerts (the
    `top` most fired), notifications (per channel), heatmap {of, weekdays, hours, counts[7][24], max, total}.
    A failure is a result that was not OK (WARNING, CRITICAL or UNKNOWN); the heatmap counts those results."""
    rows = within(results, since, now, lambda r: r.ts)
    events = within(history, since, now, lambda e: e["at"])
    sent = within(deliveries, since, now, lambda d: d["at"])
    checks = _checks(rows, tz)
    channels = _channels(sent)
    failures = sum(c["failures"] for c in checks)
    return {
        "version": JSON_VERSION,
        **period(since, now, tz),
        "totals": {"checks": len(checks), "runs": len(rows), "failures": failures,
                   "failure_rate": percent(failures, len(rows)),
                   "alerts_fired": sum(1 for e in events if e.get("kind") == "firing"),
                   "notifications": len(sent), "notifications_failed": sum(c["failed"] for c in channels)},
        "checks": checks,
        "alerts": _alerts(events, tz, top),
        "notifications": channels,
        "heatmap": _heatmap(rows, tz),
    }


def as_json(stats: Mapping[str, Any]) -> str:
    return json.dumps(stats, indent=2)


# ---- text ----------------------------------------------------------------------------------------------


def _level(count: int, top: int) -> int:
    """0 for none, else 1..5 by count / top rounded up, so the busiest hour is always the top level."""
    return 0 if count <= 0 or top <= 0 else -(-count * (len(LEVELS) - 1) // top)


def legend(top: int) -> str:
    """What each heatmap character stands for, in counts: `. 0  - 1  + 2  * 3  # 4  @ 5-6`."""
    parts = [f"{LEVELS[0]} 0"]
    steps = len(LEVELS) - 1
    for level in range(1, steps + 1):
        low, high = (level - 1) * top // steps + 1, level * top // steps
        if low <= high:
            parts.append(f"{LEVELS[level]} {low}" if low == high else f"{LEVELS[level]} {low}-{high}")
    return "  ".join(parts)


def heatmap_lines(heatmap: Mapping[str, Any]) -> list[str]:
    """A 7 x 24 grid, one character per hour: the weekdays down, the hours across (tens above units)."""
    top = heatmap["max"]
    lines = ["    " + "".join(str(h // 10) for h in heatmap["hours"]),
             "    " + "".join(str(h % 10) for h in heatmap["hours"])]
    for name, day in zip(heatmap["weekdays"], heatmap["counts"]):
        lines.append(f"{name} " + "".join(LEVELS[_level(c, top)] for c in day))
    lines.append(f"legend (count per hour): {legend(top)}")
    return lines


def render_text(stats: Mapping[str, Any]) -> str:
    t = stats["totals"]
    out = [f"ce-agent stats from {stats['since']} to {stats['generated']}", "",
           f"Runs per check: {plural(t['runs'], 'run')} of {plural(t['checks'], 'check')}, "
           f"{plural(t['failures'], 'failure')} "
           f"({format_percent(t['failure_rate'])}); a failure is a result that was not OK"]
    if stats["checks"]:
        out += format_table(
            ("PLAY", "HOST", "CHECK", "RUNS", "FAILURES", "FAILURE RATE", "OK", "WARNING", "CRITICAL", "UNKNOWN"),
            [(c["play"], c["host"], c["check"], str(c["runs"]), str(c["failures"]), format_percent(c["failure_rate"]),
              str(c["ok"]), str(c["warning"]), str(c["critical"]), str(c["unknown"])) for c in stats["checks"]])
    out += ["", f"Most frequent alerts: {plural(t['alerts_fired'], 'firing')} in all"]
    if stats["alerts"]:
        out += format_table(("FIRED", "RESOLVED", "LAST FIRED", "ALERT"),
                            [(str(a["fired"]), str(a["resolved"]), a["last_fired"] or "-", a["title"])
                             for a in stats["alerts"]])
    out += ["", f"Notifications per channel: {t['notifications']} sent or tried, {t['notifications_failed']} failed"]
    if stats["notifications"]:
        out += format_table(("CHANNEL", "SENT", "FAILED", "TOTAL", "KINDS"),
                            [(n["channel"], str(n["sent"]), str(n["failed"]), str(n["total"]),
                              ", ".join(f"{k} {v}" for k, v in n["by_kind"].items())) for n in stats["notifications"]])
    heatmap = stats["heatmap"]
    out += ["", f"Problems by weekday and hour ({plural(heatmap['total'], 'problem')}: {heatmap['of']}; "
                f"hours in {stats['timezone']})",
            *heatmap_lines(heatmap)]
    # one line per printed row: a check name cannot inject a fake line into the table
    return "\n".join(" ".join(line.splitlines()) for line in out) + "\n"


# ---- CSV -----------------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return "" if value is None else value


def csv_rows(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The long (tidy) form: one measure a row, with the columns of CSV_COLUMNS that say what it is of.

    sections: totals; check (play, host, check); alert (alert = its key); channel (channel, and kind for
    the count per notification kind); heatmap (weekday, hour; measure "problems")."""
    rows: list[dict[str, Any]] = []

    def add(section: str, measure: str, value: Any, **where: Any) -> None:
        rows.append({"section": section, **where, "measure": measure, "value": value})

    for measure, value in stats["totals"].items():
        add("totals", measure, value)
    for c in stats["checks"]:
        for measure in ("runs", "failures", "failure_rate", "ok", "warning", "critical", "unknown"):
            add("check", measure, c[measure], play=c["play"], host=c["host"], check=c["check"])
    for a in stats["alerts"]:
        for measure in ("fired", "resolved"):
            add("alert", measure, a[measure], alert=a["key"])
    for n in stats["notifications"]:
        for measure in ("sent", "failed", "total"):
            add("channel", measure, n[measure], channel=n["channel"])
        for kind, count in n["by_kind"].items():
            add("channel", "notifications", count, channel=n["channel"], kind=kind)
    heatmap = stats["heatmap"]
    for name, day in zip(heatmap["weekdays"], heatmap["counts"]):
        for hour, count in zip(heatmap["hours"], day):
            add("heatmap", "problems", count, weekday=name, hour=hour)
    return rows


def render_csv(stats: Mapping[str, Any]) -> str:
    """One CSV table in the long form of csv_rows(), header first: every section in one file that a
    spreadsheet or pandas filters by `section` (one table per section would not be one valid CSV).
    Text that a spreadsheet would run as a formula (=, +, -, @) is prefixed with a quote."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(stats):
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()
