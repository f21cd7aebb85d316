"""The health report: a verdict, checks by tag and play, SLOs, performance and alerts (Markdown, JSON, HTML)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import tzinfo
from typing import Any

from ce_agent.durations import format_duration
from ce_agent.history import (
    alert_title,
    period,
    format_number,
    format_percent,
    format_seconds,
    group,
    iso_time,
    percent,
    percentile,
    plural,
    series_by_day,
    status_name,
    summarize,
    within,
)
from ce_agent.store import ResultRow

JSON_VERSION = 1
HEALTHY, DEGRADED, UNHEALTHY = "HEALTHY", "DEGRADED", "UNHEALTHY"
EXIT_CODES: tuple[tuple[str, int], ...] = ((HEALTHY, 0), (DEGRADED, 1), (UNHEALTHY, 2))
#: how many rows the Markdown and HTML forms show of the long lists (the JSON has them all)
SHOWN_EVENTS = 20
UNTAGGED = "(untagged)"

CheckKey = tuple[str, str, str]  # (play, host, check)


# ---- building ------------------------------------------------------------------------------------------


def _counts(rows: Sequence[ResultRow]) -> dict[str, Any]:
    """pass (OK), warn (WARNING), fail (CRITICAL) and unknown (UNKNOWN, and any code outside 0-3, as Nagios)."""
    statuses = [r.status if r.status in (0, 1, 2) else 3 for r in rows]
    passed = statuses.count(0)
    return {"runs": len(rows), "pass": passed, "warn": statuses.count(1), "fail": statuses.count(2),
            "unknown": statuses.count(3), "pass_rate": percent(passed, len(rows))}


def _active(rows: Iterable[Mapping[str, Any]], tz: tzinfo | None) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        labels = dict(row.get("labels") or {})
        since_ts = row.get("since_ts")
        out.append({
            "key": str(row.get("key", "")),
            "title": alert_title(labels, str(row.get("key", ""))),
            "labels": labels,
            "state": str(row.get("state", "")),
            "status": status_name(row.get("status")),
            "since": iso_time(since_ts, tz) if isinstance(since_ts, (int, float)) else row.get("since"),
            "for_s": row.get("for_s"),
            "silenced": bool(row.get("silenced")),
            "flapping": bool(row.get("flapping")),
        })
    return out


def _recovery(by_check: Mapping[CheckKey, list[ResultRow]]) -> dict[str, Any]:
    """Time to recover: from a check's first non-OK result to its next OK one.

    An incident already under way at the start of the period counts from its first result seen; one
    still under way at the end is counted as open, without a time (it has not recovered yet)."""
    checks, every = [], []
    for (play, host, check), rows in by_check.items():
        times: list[float] = []
        started: float | None = None
        incidents = 0
        for row in rows:
            if row.status != 0 and started is None:
                started, incidents = row.ts, incidents + 1
            elif row.status == 0 and started is not None:
                times.append(row.ts - started)
                started = None
        if not incidents:
            continue
        every += times
        checks.append({"play": play, "host": host, "check": check, "incidents": incidents, "recovered": len(times),
                       "open": started is not None, **_times(times)})
    checks.sort(key=lambda c: (-(c["mean_s"] or 0.0), -c["incidents"], c["play"], c["host"], c["check"]))
    overall = {"incidents": sum(c["incidents"] for c in checks), "recovered": len(every), **_times(every)}
    return {"overall": overall, "checks": checks}


def _times(times: Sequence[float]) -> dict[str, float | None]:
    stats = summarize(times)
    # the median is the nearest-rank p50 as everywhere else: a time that a real incident took
    return {"mean_s": stats["mean"], "median_s": stats["p50"], "max_s": stats["max"]}


def _flapping(events: Sequence[Mapping[str, Any]], active: Sequence[Mapping[str, Any]],
              tz: tzinfo | None) -> list[dict[str, Any]]:
    now_flapping = {a["key"] for a in active if a["flapping"]}
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("kind") != "flapping_start":
            continue
        key, labels = str(event.get("key", "")), dict(event.get("labels") or {})
        row = rows.setdefault(key, {"key": key, "title": alert_title(labels, key), "labels": labels, "starts": 0})
        row["starts"] += 1
        row["last_start"], row["last_start_ts"] = iso_time(event["at"], tz), event["at"]
    # an alert flapping since before the period is flapping all the same
    for alert in active:
        if alert["flapping"] and alert["key"] not in rows:
            rows[alert["key"]] = {"key": alert["key"], "title": alert["title"], "labels": alert["labels"],
                                  "starts": 0, "last_start": None, "last_start_ts": None}
    out = [{**row, "flapping_now": row["key"] in now_flapping} for row in rows.values()]
    return sorted(out, key=lambda r: (-r["starts"], r["key"]))


def _verdict(checks: Sequence[Mapping[str, Any]], active: Sequence[Mapping[str, Any]],
             slos: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """UNHEALTHY: a CRITICAL alert firing (silenced or not: a silence mutes the news, not the problem) or
    an SLO breached. DEGRADED: another alert firing or pending, a check whose latest result is not OK, an
    SLO at risk. Else HEALTHY. Problems that recovered within the period do not count: the tables show them."""
    bad, poor = [], []
    for alert in active:
        note = " (silenced)" if alert["silenced"] else ""
        if alert["state"] == "firing" and alert["status"] == "CRITICAL":
            bad.append(f"CRITICAL alert firing: {alert['title']}{note}")
        elif alert["state"] == "firing":
            poor.append(f"{alert['status']} alert firing: {alert['title']}{note}")
        else:
            poor.append(f"{alert['status']} alert {alert['state']}: {alert['title']}{note}")
    for slo in slos:
        if slo["status"] == "breached":
            bad.append(f"SLO breached: {slo['name']}")
        elif slo["status"] == "at_risk":
            poor.append(f"SLO at risk: {slo['name']}")
    alerted = {(a["labels"].get("play"), a["labels"].get("host"), a["labels"].get("check")) for a in active}
    for check in checks:
        if check["last_status"] != "OK" and (check["play"], check["host"], check["check"]) not in alerted:
            poor.append(f"{check['check']} on {check['host']} is {check['last_status']}: {check['last_summary']}")
    if bad:
        return UNHEALTHY, bad + poor
    return (DEGRADED, poor) if poor else (HEALTHY, [])


def build_report(results: Iterable[ResultRow], history: Iterable[Mapping[str, Any]],
                 active_alerts: Iterable[Mapping[str, Any]], slos: Iterable[Mapping[str, Any]],
                 tags: Mapping[tuple[str, str], Sequence[str]], since: float, now: float, *,
                 tz: tzinfo | None = None, top: int = 10) -> dict[str, Any]:
    """The report of the results and alert events with since <= time <= now, as its JSON form.

    `active_alerts` are alertcmds.active_alerts() rows, `slos` the `slo status` JSON objects, `tags` maps
    (play, check) to the check's tags; `tz` is where days begin (None: the system's zone). Keys: version,
    generated(_ts), since(_ts), overall, exit_code, reasons, totals, groups, checks, slos, performance,
    alerts {active, recent}, top_failing, recovery {overall, checks}, flapping, trends {days, runs,
    pass_rate, p95_duration_s}. Rates are percentages (2 decimals), times seconds."""
    rows = sorted(within(results, since, now, lambda r: r.ts), key=lambda r: r.ts)
    events = sorted(within(history, since, now, lambda e: e["at"]), key=lambda e: e["at"])
    by_check = dict(sorted(group(rows, lambda r: (r.play, r.host, r.check)).items()))

    checks = []
    for (play, host, check), runs in by_check.items():
        last = runs[-1]
        checks.append({"play": play, "host": host, "check": check, "tags": sorted(tags.get((play, check), ())),
                       **_counts(runs), "last_status": status_name(last.status), "last_summary": last.summary,
                       "last_at": iso_time(last.ts, tz)})

    groups: dict[tuple[str, str], list[ResultRow]] = {}
    members: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for (play, host, check), runs in by_check.items():
        for tag in sorted(tags.get((play, check), ())) or [UNTAGGED]:
            groups.setdefault((tag, play), []).extend(runs)
            members.setdefault((tag, play), set()).add((host, check))
    group_rows = [{"tag": None if tag == UNTAGGED else tag, "play": play, "checks": len(members[(tag, play)]),
                   **_counts(runs)}
                  # the untagged checks come last, whatever their play's name
                  for (tag, play), runs in sorted(groups.items(), key=lambda g: (g[0][0] == UNTAGGED, g[0]))]

    performance = []
    for (play, host, check), runs in by_check.items():
        stats = summarize(r.duration_s for r in runs)
        performance.append({"play": play, "host": host, "check": check, **stats})
    performance.sort(key=lambda p: (-(p["p95"] or 0.0), p["play"], p["host"], p["check"]))  # slowest first

    failing = [{"play": c["play"], "host": c["host"], "check": c["check"], "failures": c["runs"] - c["pass"],
                "runs": c["runs"], "failure_rate": percent(c["runs"] - c["pass"], c["runs"]),
                "last_status": c["last_status"]} for c in checks if c["pass"] < c["runs"]]
    failing.sort(key=lambda f: (-f["failures"], -(f["failure_rate"] or 0.0), f["play"], f["host"], f["check"]))

    active = _active(active_alerts, tz)
    slo_rows = [_slo(s) for s in slos]
    overall, reasons = _verdict(checks, active, slo_rows)
    recent = [{"at": iso_time(e["at"], tz), "at_ts": e["at"], "key": str(e.get("key", "")),
               "title": alert_title(e.get("labels") or {}, str(e.get("key", ""))), "labels": dict(e.get("labels") or {}),
               "kind": str(e.get("kind", "")), "status": status_name(e.get("status")),
               "summary": str(e.get("summary") or "")} for e in reversed(events)]

    days = series_by_day(rows, lambda r: r.ts, since, now, tz, len)
    rates = series_by_day(rows, lambda r: r.ts, since, now, tz, lambda day: percent(_counts(day)["pass"], len(day)))
    p95s = series_by_day(rows, lambda r: r.ts, since, now, tz, lambda day: percentile((r.duration_s for r in day), 95))
    return {
        "version": JSON_VERSION,
        **period(since, now, tz),
        "overall": overall,
        "exit_code": dict(EXIT_CODES)[overall],
        "reasons": reasons,
        "totals": {"checks": len(checks), **_counts(rows)},
        "groups": group_rows,
        "checks": checks,
        "slos": slo_rows,
        "performance": performance,
        "alerts": {"active": active, "recent": recent},
        "top_failing": failing[:top],
        "recovery": _recovery(by_check),
        "flapping": _flapping(events, active, tz),
        "trends": {"days": [d.isoformat() for d, _ in days], "runs": [n or 0 for _, n in days],
                   "pass_rate": [v for _, v in rates], "p95_duration_s": [v for _, v in p95s]},
    }


def _slo(slo: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": str(slo.get("name", "")), "objective": slo.get("objective"), "window": slo.get("window"),
            "sli": slo.get("sli"), "error_budget_remaining": slo.get("error_budget_remaining"),
            "burn_rates": dict(slo.get("burn_rates") or {}), "status": str(slo.get("status", "no_data"))}


def as_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2)


# ---- the tables both text forms show -------------------------------------------------------------------


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format_number(value)
    return str(value)


def _pct(value: Any, scale: float, spec: str) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value * scale:{spec}} %"


def _for(seconds: Any) -> str:
    return "-" if not isinstance(seconds, (int, float)) else format_duration(seconds)


def _sections(report: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, headers, rows, a note under the table) of every section, in the order shown."""
    recent = report["alerts"]["recent"]
    more = len(recent) - SHOWN_EVENTS
    recovery = report["recovery"]["overall"]
    return [
        ("Checks by tag and play", ["Tag", "Play", "Checks", "Runs", "Pass", "Warn", "Fail", "Unknown", "Pass rate"],
         [[g["tag"] or UNTAGGED, g["play"], str(g["checks"]), str(g["runs"]), str(g["pass"]), str(g["warn"]),
           str(g["fail"]), str(g["unknown"]), format_percent(g["pass_rate"])] for g in report["groups"]], ""),
        ("SLOs", ["SLO", "Objective", "Window", "SLI", "Error budget left", "Burn rates", "Status"],
         [[s["name"], _pct(s["objective"], 1, "g"), _value(s["window"]), _pct(s["sli"], 1, ".3f"),
           _pct(s["error_budget_remaining"], 100, ".1f"),
           ", ".join(f"{k}: {'-' if v is None else f'{v:.2f}x'}" for k, v in s["burn_rates"].items()) or "-",
           s["status"].replace("_", " ")]
          for s in report["slos"]], "SLI and objective in % of events; the budget left in % of the error budget "
                                    "(below 0: overspent); burn rates as multiples of the sustainable rate."),
        ("Performance", ["Check", "Host", "Play", "Runs", "Min", "Max", "Mean", "p95"],
         [[p["check"], p["host"], p["play"], str(p["count"]), format_seconds(p["min"]), format_seconds(p["max"]),
           format_seconds(p["mean"]), format_seconds(p["p95"])] for p in report["performance"]],
         "Run times, slowest p95 first (nearest-rank percentiles)."),
        ("Active alerts", ["State", "Status", "Alert", "Since", "For", "Notes"],
         [[a["state"], a["status"], a["title"], _value(a["since"]), _for(a["for_s"]),
           ", ".join(n for n, on in (("silenced", a["silenced"]), ("flapping", a["flapping"])) if on) or "-"]
          for a in report["alerts"]["active"]], ""),
        ("Recent alert events", ["Time", "Event", "Status", "Alert", "Summary"],
         [[e["at"], e["kind"].replace("_", " "), e["status"], e["title"], e["summary"] or "-"]
          for e in recent[:SHOWN_EVENTS]],
         f"Newest first; {more} older events are in the JSON report." if more > 0 else "Newest first."),
        ("Top failing checks", ["Check", "Host", "Play", "Failures", "Runs", "Failure rate", "Latest"],
         [[f["check"], f["host"], f["play"], str(f["failures"]), str(f["runs"]), format_percent(f["failure_rate"]),
           f["last_status"]] for f in report["top_failing"]],
         "Failures are the results that were not OK (WARNING, CRITICAL or UNKNOWN)."),
        ("Time to recover", ["Check", "Host", "Play", "Incidents", "Recovered", "Mean", "Median", "Longest",
                             "Still failing"],
         [[c["check"], c["host"], c["play"], str(c["incidents"]), str(c["recovered"]), _for(c["mean_s"]),
           _for(c["median_s"]), _for(c["max_s"]), _value(c["open"])] for c in report["recovery"]["checks"]],
         f"From the first result that was not OK to the next OK one. Overall: "
         f"{plural(recovery['incidents'], 'incident')}, {recovery['recovered']} recovered, mean {_for(recovery['mean_s'])}, median {_for(recovery['median_s'])}."),
        ("Flapping", ["Alert", "Flapping starts", "Last start", "Flapping now"],
         [[f["title"], str(f["starts"]), _value(f["last_start"]), _value(f["flapping_now"])]
          for f in report["flapping"]], ""),
    ]


def _totals_line(report: Mapping[str, Any]) -> str:
    t = report["totals"]
    return (f"{plural(t['checks'], 'check')}, {plural(t['runs'], 'run')}, {format_percent(t['pass_rate'])} passed "
            f"({t['pass']} pass, {t['warn']} warn, {t['fail']} fail, {t['unknown']} unknown).")


# ---- Markdown ------------------------------------------------------------------------------------------


def _md(text: object) -> str:
    """Literal text in a Markdown table cell: one line, and no character that would start markup,
    a raw HTML tag or a new cell (a check summary is whatever a plugin printed)."""
    out = " ".join(str(text).split())
    for char in "\\`*[]<>|":
        out = out.replace(char, "\\" + char)
    return out


def render_markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# ce-agent report: {report['overall']}",
        "",
        f"Overall **{report['overall']}** (exit code {report['exit_code']}) from {_md(report['since'])} to "
        f"{_md(report['generated'])}.",
        "",
    ]
    lines += [f"- {_md(reason)}" for reason in report["reasons"]]
    lines += [""] if report["reasons"] else []
    lines += [_totals_line(report), ""]
    for title, headers, rows, note in _sections(report):
        lines += [f"## {title}", ""]
        if rows:
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "|".join(" --- " for _ in headers) + "|")
            lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
        else:
            lines.append("None.")
        lines += ["", _md(note), ""] if note else [""]
    return "\n".join(lines).rstrip() + "\n"


# ---- HTML ----------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d2329}
h1{margin-bottom:.2rem}.meta{color:#5b6670;margin-top:0}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:.3rem;color:#fff;font-weight:600}
.HEALTHY{background:#2e7d32}.DEGRADED{background:#b26a00}.UNHEALTHY{background:#c62828}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f7}.note{color:#5b6670;font-size:.85rem}.charts{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}figcaption{font-weight:600;margin:.3rem 0}
svg{background:#fafbfc;border:1px solid #d0d7de}svg text{font-size:11px;fill:#5b6670}
.line{fill:none;stroke:#1f6feb;stroke-width:2}.dot{fill:#1f6feb}.bar{fill:#8250df}.axis{stroke:#8c959f}
""".strip()

_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 640, 220, 56, 12, 14, 40


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _x(i: int, n: int) -> float:
    return _LEFT + (i + 0.5) * (_W - _LEFT - _RIGHT) / n


def _y(value: float, top: float) -> float:
    plot = _H - _TOP - _BOTTOM
    return _H - _BOTTOM - (value / top * plot if top else 0.0)


def _frame(title: str, days: Sequence[str], top: float, label: Any) -> list[str]:
    """The chart's box: its title for screen readers, the axes, 3 y ticks and at most ~12 day labels."""
    parts = [f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" aria-label="{_e(title)}">',
             f"<title>{_e(title)}</title>",
             f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}"></line>',
             f'<line class="axis" x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" y2="{_H - _BOTTOM}"></line>']
    for fraction in (0.0, 0.5, 1.0):
        y = _y(top * fraction, top)
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(label(top * fraction))}</text>')
    step = max(1, -(-len(days) // 12))
    for i in range(0, len(days), step):
        parts.append(f'<text x="{_x(i, len(days)):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle">'
                     f"{_e(days[i][5:])}</text>")
    return parts


def _line_chart(title: str, days: Sequence[str], values: Sequence[float | None]) -> str:
    """Pass rate per day, 0 to 100 %: a line broken where a day had no results."""
    parts = _frame(title, days, 100.0, lambda v: f"{v:.0f} %")
    segment: list[str] = []
    for i, value in enumerate([*values, None]):
        if value is not None:
            segment.append(f"{_x(i, len(days)):.1f},{_y(value, 100.0):.1f}")
        elif segment:
            parts.append(f'<polyline class="line" points="{" ".join(segment)}"></polyline>')
            segment = []
    for i, value in enumerate(values):
        if value is not None:
            parts.append(f'<circle class="dot" cx="{_x(i, len(days)):.1f}" cy="{_y(value, 100.0):.1f}" r="3">'
                         f"<title>{_e(days[i])}: {_e(format_percent(value))}</title></circle>")
    return "\n".join([*parts, "</svg>"])


def _bar_chart(title: str, days: Sequence[str], values: Sequence[float | None]) -> str:
    """p95 run time per day: one bar a day, none for a day without results."""
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    parts = _frame(title, days, top, format_seconds)
    width = (_W - _LEFT - _RIGHT) / len(days) * 0.7
    for i, value in enumerate(values):
        if value is None:
            continue
        y = _y(value, top)
        parts.append(f'<rect class="bar" x="{_x(i, len(days)) - width / 2:.1f}" y="{y:.1f}" width="{width:.1f}" '
                     f'height="{_H - _BOTTOM - y:.1f}"><title>{_e(days[i])}: {_e(format_seconds(value))}</title></rect>')
    return "\n".join([*parts, "</svg>"])


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained page: inline CSS and inline SVG charts, no script and no external reference,
    so it can be mailed or archived as is. Every text from the data is HTML-escaped."""
    overall = report["overall"]
    trends = report["trends"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ce-agent report: {_e(overall)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f'<h1>ce-agent report <span class="badge {_e(overall)}">{_e(overall)}</span></h1>',
        f'<p class="meta">Exit code {_e(report["exit_code"])}; from {_e(report["since"])} to '
        f"{_e(report['generated'])}.</p>",
    ]
    if report["reasons"]:
        out += ["<ul>", *(f"<li>{_e(reason)}</li>" for reason in report["reasons"]), "</ul>"]
    out.append(f"<p>{_e(_totals_line(report))}</p>")
    out += ["<h2>Trends</h2>", '<div class="charts">']
    if trends["days"]:
        for title, chart in (("Pass rate per day", _line_chart), ("p95 run time per day", _bar_chart)):
            values = trends["pass_rate"] if chart is _line_chart else trends["p95_duration_s"]
            # a visible caption: an SVG <title> is only a tooltip
            out.append(f"<figure><figcaption>{_e(title)}</figcaption>{chart(title, trends['days'], values)}</figure>")
    out.append("</div>")
    for title, headers, rows, note in _sections(report):
        out.append(f"<h2>{_e(title)}</h2>")
        if rows:
            out += ["<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead>",
                    "<tbody>"]
            out += ["<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows]
            out += ["</tbody>", "</table>"]
        else:
            out.append("<p>None.</p>")
        if note:
            out.append(f'<p class="note">{_e(note)}</p>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
