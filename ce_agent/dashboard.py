"""`ce-agent status`: checks, alerts, SLOs, resource usage and recent runs, from the state or a running agent."""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ce_agent.errors import UserError
from ce_agent.history import status_name

if TYPE_CHECKING:  # rich is imported only where a dashboard is drawn: `run` and plain output never pay for it
    from rich.console import Console, RenderableType
    from rich.text import Text

    from ce_agent.store import Store

SNAPSHOT_VERSION = 1
MODES = ("full", "compact", "minimal")
STATUS_ORDER = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
#: worst first, as contracts.Status.rank ranks them: a known outage before a check that could not tell
STATUS_RANK = {"CRITICAL": 0, "UNKNOWN": 1, "WARNING": 2, "OK": 3}
NOT_RUN = "not run yet"
SEVERITY_ORDER = ("page", "critical", "warning", "ticket", "info")
API_TIMEOUT_S = 5.0
RECENT_RUNS = 10
#: `results(since)` reads every row since then: start narrow (a busy agent fills 5 minutes) and widen for
#: a quiet cron job, rather than read a day of a thousand checks to show ten rows
RUN_WINDOWS_S = (300.0, 3600.0, 86400.0, 31 * 86400.0)
#: every check that is not OK is listed; OK ones fill the table up to this many rows (a fleet has thousands)
MAX_CHECK_ROWS = 30
#: bars turn yellow, then red, at the `disk` check's default thresholds
BAR_WARN, BAR_CRIT = 80.0, 90.0
PLAIN_BAR_WIDTH = 20
EXPORT_WIDTH = 120
#: collector samples shown as bars, in this order; disks get their mount point appended
RESOURCES = (("system_cpu_percent", "cpu"), ("system_memory_used_percent", "memory"),
             ("system_swap_used_percent", "swap"), ("system_disk_used_percent", "disk"))
LOADS = ("system_load1", "system_load5", "system_load15")
#: C0 and C1 controls: an escape sequence in a summary must not drive the user's terminal
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
WEB_FONT = re.compile(r',\s*url\("https?://[^"]*"\)\s*format\("[^"]*"\)')
STATUS_STYLE = {"OK": "green", "WARNING": "yellow", "CRITICAL": "bold red", "UNKNOWN": "magenta"}
SLO_STYLE = {"ok": "green", "at_risk": "yellow", "breached": "bold red", "no_data": "dim"}
SEVERITY_STYLE = {"page": "bold red", "critical": "bold red", "warning": "yellow"}
NO_SLOS_FROM_AGENT = "SLOs: not in the agent's API (`ce-agent status` without --agent, where its state is, shows them)"
NO_SLOS = "SLOs: none (add `slos:` to a play)"
NO_RESOURCES_FROM_AGENT = "Resources: the agent's /metrics could not be read"
NO_RESOURCES = "Resources: no samples of the `system` collector (add `- system: {}` to a play's collectors)"
NO_RESOURCES_YET = "Resources: the `system` collector has not run yet"
# the columns whose text may wrap (at spaces) when the terminal is narrow; the others stay on one line
FREE_TEXT_COLUMNS = frozenset({"HOST", "PLAY", "CHECK", "SUMMARY", "ALERT", "NAME", "RESOURCE"})


class AgentUnreachable(UserError):
    """The agent's API did not answer, or not as an agent does: one line, exit 2."""


@dataclass(frozen=True, slots=True)
class StatusOptions:
    """What `ce-agent status` was asked for."""

    mode: str = "full"
    watch: float | None = None
    export: Path | None = None
    agent_url: str | None = None
    state_dir: Path | None = None


# ---- small helpers ---------------------------------------------------------------------------------


def clean(value: object) -> str:
    """Text from checks and alerts as one printable line (newlines and control characters become spaces)."""
    return CONTROL.sub(" ", "" if value is None else str(value))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _age(ts: float | None, now: float) -> str:
    from ce_agent.durations import format_duration

    if ts is None:
        return "-"
    seconds = now - ts
    # a clock a little ahead (another host's agent) is "just now", not a negative age
    return "<1s" if seconds < 1 else format_duration(seconds)


def _parse_iso(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _severity_rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else len(SEVERITY_ORDER)


def _check_rank(status: str | None) -> int:
    return STATUS_RANK.get(status or "", len(STATUS_RANK))


# ---- the snapshot: plain data from either source ----------------------------------------------------


def _empty(source: str, now: float) -> dict[str, Any]:
    return {"version": SNAPSHOT_VERSION, "source": source, "now": now, "agent": None, "checks": [], "alerts": [],
            "slos": [], "resources": [], "runs": [], "error": None}


def _alert(row: Mapping[str, Any], now: float) -> dict[str, Any]:
    """An alertcmds.active_alerts() row (stored, or from the agent's JSON) as the dashboard shows it."""
    labels = {str(k): clean(v) for k, v in dict(row.get("labels") or {}).items()}
    from ce_agent.history import alert_name

    # as report and stats name it ("Flaky regression", "SLOBurnRate api"), so a rule's alert on a check
    # does not read as the check's own
    name = alert_name(labels) or clean(row.get("key"))
    # the labels that tell two alerts of one rule apart (mount=..., window=...), not those in the name or columns
    shown = ("check", "alertname", "host", "play", "severity", "slo")
    extra = [f"{k}={v}" for k, v in sorted(labels.items()) if k not in shown]
    since = _number(row.get("since_ts"))
    return {"key": clean(row.get("key")), "name": " ".join([name, *extra]), "host": labels.get("host", ""),
            "play": labels.get("play", ""), "severity": labels.get("severity", ""), "state": clean(row.get("state")),
            "status": status_name(row.get("status")), "since": since if since is not None else now,
            "silenced": bool(row.get("silenced")), "flapping": bool(row.get("flapping"))}


def _resources(samples: Iterable[tuple[str, str, Mapping[str, str], float | None, float]]) -> list[dict[str, Any]]:
    """(host, name, labels, value, ts) samples -> one row per host and resource: bars for the percentages,
    a text row for the load averages. Two plays collecting one host: the newest sample of a series wins."""
    newest: dict[tuple[str, str, str], tuple[float, float]] = {}
    for host, name, labels, value, ts in samples:
        if value is None or not math.isfinite(value):
            continue
        key = (host, name, str(labels.get("mount", "")))
        if key not in newest or ts >= newest[key][1]:
            newest[key] = (value, ts)
    order = {name: i for i, (name, _label) in enumerate(RESOURCES)}
    labels_of = dict(RESOURCES)
    rows = []
    for host in sorted({h for h, _n, _m in newest}):
        bars = sorted(((order[n], m), n, m) for h, n, m in newest if h == host and n in order)
        for _sort, name, mount in bars:
            label = f"{labels_of[name]} {mount}".rstrip()
            rows.append({"host": host, "name": label, "percent": newest[(host, name, mount)][0], "text": None})
        loads = [newest.get((host, name, "")) for name in LOADS]
        if any(load is not None for load in loads):
            text = " ".join("-" if load is None else f"{load[0]:.2f}" for load in loads)
            rows.append({"host": host, "name": "load 1m 5m 15m", "percent": None, "text": text})
    return rows


def _recent_runs(store: Store, now: float) -> list[dict[str, Any]]:
    rows: list[Any] = []
    for window in RUN_WINDOWS_S:
        rows = store.results(now - window)
        if len(rows) >= RECENT_RUNS:
            break
    return [{"at": r.ts, "play": r.play, "host": r.host, "name": r.check, "status": status_name(r.status),
             "summary": clean(r.summary), "duration_s": r.duration_s} for r in reversed(rows[-RECENT_RUNS:])]


def snapshot_from_store(store: Store | None, now: float, source: str = "state database") -> dict[str, Any]:
    """What the state database says now; `store` None (nothing has run yet) gives an empty snapshot."""
    from ce_agent.alertcmds import active_alerts

    snapshot = _empty(source, now)
    if store is None:
        return snapshot
    snapshot["checks"] = [{"play": r.play, "host": r.host, "name": r.check, "status": status_name(r.status),
                           "summary": clean(r.summary), "last_run": r.ts, "duration_s": r.duration_s}
                          for r in store.latest_results()]
    snapshot["alerts"] = [_alert(row, now) for row in active_alerts(store.load_alerts(), store.silences(now), now)]
    snapshot["slos"] = [_slo({"name": name, **data, "play": play, "host": host})
                        for play, host, name, data, _at in store.slo_statuses()]
    snapshot["resources"] = _resources((s.host, s.name, s.labels, s.value, s.ts) for s in store.latest_samples())
    snapshot["runs"] = _recent_runs(store, now)
    return snapshot


def _no_resources(snapshot: Mapping[str, Any]) -> str:
    if snapshot["resources"] is None:
        return NO_RESOURCES_FROM_AGENT
    return NO_RESOURCES_YET if snapshot.get("system_pending") else NO_RESOURCES


def _slo(data: Mapping[str, Any]) -> dict[str, Any]:
    """An SLO as `slo status --format json` has it (with play and host), as the dashboard shows it."""
    return {"name": clean(data.get("name")), "play": clean(data.get("play")), "host": clean(data.get("host")),
            "objective": _number(data.get("objective")), "window": clean(data.get("window")),
            "sli": _number(data.get("sli")), "budget_left": _number(data.get("error_budget_remaining")),
            "status": clean(data.get("status"))}


def agent_url(text: str) -> str:
    """`--agent`: http(s)://HOST:PORT[/prefix], or HOST:PORT as `--listen` takes it; no trailing slash."""
    from urllib.parse import urlsplit

    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"--agent must be a URL such as http://127.0.0.1:9464, got {text!r}")
    return url.rstrip("/")


def _fetch(url: str, timeout: float) -> str:
    import socket
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - the scheme is checked
            return str(reply.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        raise AgentUnreachable(f"{url}: the agent answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = getattr(reason, "strerror", None) or str(reason)
        raise AgentUnreachable(f"cannot reach the agent at {url}: {why}") from None
    except (TimeoutError, socket.timeout):
        raise AgentUnreachable(f"cannot reach the agent at {url}: no answer within {timeout:g}s") from None
    except (OSError, ValueError) as exc:  # a reset connection, a malformed reply
        raise AgentUnreachable(f"cannot reach the agent at {url}: {getattr(exc, 'strerror', None) or exc}") from None


def _fetch_json(url: str, timeout: float) -> dict[str, Any]:
    try:
        data = json.loads(_fetch(url, timeout))
    except ValueError:
        raise AgentUnreachable(f"{url}: the answer is not JSON (is this a ce-agent?)") from None
    if not isinstance(data, dict):
        raise AgentUnreachable(f"{url}: unexpected answer (is this a ce-agent?)")
    return data


def _agent_samples(text: str) -> list[tuple[str, str, dict[str, str], float | None, float]]:
    """The `system` collector's series in the agent's /metrics (prefixed `ce_`, labelled host and mount)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {name for name, _label in RESOURCES} | set(LOADS)
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removeprefix("ce_")
            if name in wanted:
                samples.append((sample.labels.get("host", ""), name, dict(sample.labels), float(sample.value), 0.0))
    return samples


def snapshot_from_api(base_url: str, timeout: float = API_TIMEOUT_S, now: float | None = None) -> dict[str, Any]:
    """What a running agent says: its tasks and alerts (/api/v1/status, /api/v1/alerts) and the `system`
    samples of its /metrics. The API has no SLOs: `slos` is None (unknown), not [] (none)."""
    now = time.time() if now is None else now
    base = agent_url(base_url)
    status = _fetch_json(base + "/api/v1/status", timeout)
    alerts = _fetch_json(base + "/api/v1/alerts", timeout)
    snapshot = _empty(f"agent {base}", now)
    # no software version: the API's "version" is the API's own (1)
    snapshot["agent"] = {"started": _parse_iso(status.get("started")),
                         "ready": bool(status.get("ready")),
                         "not_ready": [clean(r) for r in status.get("not_ready") or []],
                         "config_error": clean(status.get("config_error")) or None}
    tasks = [t for t in status.get("tasks") or [] if isinstance(t, dict) and t.get("kind") == "check"]
    snapshot["checks"] = [{"play": clean(t.get("play")), "host": clean(t.get("host")), "name": clean(t.get("name")),
                           "status": status_name(t["status"]) if t.get("status") is not None else None,
                           "summary": clean(t.get("summary")), "last_run": _parse_iso(t.get("last_run")),
                           "duration_s": _number(t.get("duration_s"))} for t in tasks]
    snapshot["alerts"] = [_alert(row, now) for row in alerts.get("alerts") or [] if isinstance(row, dict)]
    # an agent older than its "slos" key cannot say: None (unknown), not [] (none)
    slos = status.get("slos")
    snapshot["slos"] = None if not isinstance(slos, list) else [_slo(data) for data in slos if isinstance(data, dict)]
    tasks_all = [t for t in status.get("tasks") or [] if isinstance(t, dict)]
    snapshot["system_pending"] = any(t.get("plugin") == "system" and not t.get("last_run") for t in tasks_all)
    try:
        snapshot["resources"] = _resources(_agent_samples(_fetch(base + "/metrics", timeout)))
    except (AgentUnreachable, ValueError):
        snapshot["resources"] = None  # bars are a bonus: the tasks and alerts above are what was asked for
    # the API keeps each task's last run, not a history: the newest of those are the recent runs
    ran = sorted((c for c in snapshot["checks"] if c["last_run"] is not None), key=lambda c: -c["last_run"])
    snapshot["runs"] = [{"at": c["last_run"], "play": c["play"], "host": c["host"], "name": c["name"],
                         "status": c["status"], "summary": c["summary"], "duration_s": c["duration_s"]}
                        for c in ran[:RECENT_RUNS]]
    return snapshot


def load_snapshot(options: StatusOptions, now: float, warn: Callable[[str], None]) -> dict[str, Any]:
    """From the agent when `--agent` (or CE_AGENT_URL) names one, else from the state database."""
    if options.agent_url:
        return snapshot_from_api(options.agent_url, API_TIMEOUT_S, now)
    from ce_agent.alertcmds import _store
    from ce_agent.store import DB_NAME, default_state_dir

    state_dir = options.state_dir or default_state_dir(os.environ, os.geteuid(), Path.home())
    with _store(state_dir, now, warn, create=False) as store:
        return snapshot_from_store(store, now, f"state database {Path(state_dir) / DB_NAME}")


# ---- what is shown: shared by the plain and the rich forms ----------------------------------------


def _counts(snapshot: Mapping[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys([*STATUS_ORDER, NOT_RUN], 0)
    for check in snapshot["checks"]:
        key = check["status"] if check["status"] in counts else (NOT_RUN if check["status"] is None else "UNKNOWN")
        counts[key] += 1
    return counts


def summary_parts(snapshot: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The one-line summary as (text, rich style) pieces: plain output joins the texts, rich colours them."""
    counts = _counts(snapshot)
    parts: list[tuple[str, str]] = [(f"{_plural(len(snapshot['checks']), 'check')}", "bold")]
    shown = [(f"{n} {status}", STATUS_STYLE.get(status, "dim")) for status, n in counts.items() if n]
    for i, piece in enumerate(shown):
        parts += [(": " if i == 0 else ", ", ""), piece]
    alerts = snapshot["alerts"]
    firing = [a for a in alerts if a["state"] == "firing"]
    pending = len(alerts) - len(firing)
    parts += [("; ", ""), (f"{_plural(len(firing), 'alert')} firing", "bold red" if firing else "green")]
    if pending:
        parts.append((f", {pending} pending", "yellow"))
    silenced = sum(1 for a in firing if a["silenced"])
    if silenced:
        parts.append((f" ({silenced} silenced)", "dim"))
    slos = snapshot["slos"] or []
    if slos:  # unknown (the agent's API) or none configured: no SLO part at all, rather than "0/0"
        met = sum(1 for s in slos if s["status"] == "ok")
        parts += [("; ", ""), (f"SLOs {met}/{len(slos)} met", "green" if met == len(slos) else "bold red")]
    return parts


def summary_line(snapshot: Mapping[str, Any]) -> str:
    """The minimal mode: `ce-agent: 12 checks: 10 OK, 1 WARNING, 1 CRITICAL; 2 alerts firing; SLOs 1/2 met`."""
    line = "ce-agent: " + "".join(text for text, _style in summary_parts(snapshot))
    # one line has no room for the header's notes, but old numbers must not pass for new ones
    return line + (f" (not refreshed: {clean(snapshot['error'])})" if snapshot.get("error") else "")


def _header(snapshot: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The title line, and notes about the source (agent not ready, a failed refresh) with their styles."""
    title = f"ce-agent status  {_iso(snapshot['now'])}  ({clean(snapshot['source'])})"
    notes: list[tuple[str, str]] = []
    agent = snapshot.get("agent")
    if agent:
        started = f", up {_age(agent['started'], snapshot['now'])}" if agent["started"] else ""
        notes.append((f"agent{started}, {'ready' if agent['ready'] else 'NOT READY'}",
                      "green" if agent["ready"] else "bold red"))
        notes += [(f"  not ready: {reason}", "red") for reason in agent["not_ready"]]
        if agent["config_error"]:
            notes.append((f"  configuration error: {agent['config_error']}", "red"))
    if snapshot.get("error"):
        notes.append((f"not refreshed: {clean(snapshot['error'])} (showing the last snapshot)", "bold red"))
    return title, notes


def _check_rows(snapshot: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The checks to list (worst first; OK and not yet run ones only up to MAX_CHECK_ROWS), and how many of
    those are left out."""
    ordered = sorted(snapshot["checks"], key=lambda c: (_check_rank(c["status"]), c["play"], c["host"], c["name"]))
    problems = [c for c in ordered if c["status"] not in ("OK", None)]
    rest = [c for c in ordered if c["status"] in ("OK", None)]
    room = max(0, MAX_CHECK_ROWS - len(problems))
    return problems + rest[:room], max(0, len(rest) - room)


def _alert_rows(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    return sorted(snapshot["alerts"], key=lambda a: (_severity_rank(a["severity"]), a["state"] != "firing",
                                                     a["since"], a["key"]))


def _alerts_title(snapshot: Mapping[str, Any]) -> str:
    alerts = snapshot["alerts"]
    if not alerts:
        return "Active alerts: none"
    by_severity: dict[str, int] = {}
    for alert in _alert_rows(snapshot):
        by_severity[alert["severity"] or "none"] = by_severity.get(alert["severity"] or "none", 0) + 1
    return f"Active alerts: {len(alerts)} ({', '.join(f'{n} {s}' for s, n in by_severity.items())})"


def _alert_state(alert: Mapping[str, Any]) -> str:
    return ", ".join([alert["state"], *(["silenced"] if alert["silenced"] else []),
                      *(["flapping"] if alert["flapping"] else [])])


def _slos_title(slos: Sequence[Mapping[str, Any]]) -> str:
    return f"SLOs: {sum(1 for s in slos if s['status'] == 'ok')} of {len(slos)} met"


def _pct(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def _slo_cells(slo: Mapping[str, Any]) -> list[str]:
    objective = "-" if slo["objective"] is None else f"{slo['objective']:g}%"
    budget = None if slo["budget_left"] is None else slo["budget_left"] * 100.0
    return [slo["name"], slo["host"], objective, slo["window"], _pct(slo["sli"]), _pct(budget, 1), slo["status"]]


def _run_cells(run: Mapping[str, Any]) -> list[str]:
    duration = "-" if run["duration_s"] is None else f"{run['duration_s']:.2f}s"
    return [_clock(run["at"]), run["status"] or "-", run["host"], run["name"], duration, run["summary"]]


# ---- plain text ------------------------------------------------------------------------------------


def _columns(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]


def plain_bar(percent: float, width: int = PLAIN_BAR_WIDTH) -> str:
    """`[#######-------------]`: the share of `width` filled, rounded; clamped to 0-100 %."""
    filled = round(max(0.0, min(100.0, percent)) / 100.0 * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def render_plain(snapshot: Mapping[str, Any], mode: str) -> str:
    """The dashboard as plain text (not a terminal, or `--export FILE.txt`): the same sections as on a terminal."""
    if mode == "minimal":
        return summary_line(snapshot)
    now = snapshot["now"]
    title, notes = _header(snapshot)
    lines = [title, *(text for text, _style in notes), "".join(text for text, _style in summary_parts(snapshot))]
    if mode == "full":
        rows, hidden = _check_rows(snapshot)
        lines += ["", f"Checks: {len(snapshot['checks'])}"]
        if rows:
            lines += _columns(("STATUS", "HOST", "PLAY", "CHECK", "LAST RUN", "SUMMARY"),
                              [(c["status"] or NOT_RUN, c["host"], c["play"], c["name"], _age(c["last_run"], now),
                                c["summary"]) for c in rows])
        if hidden:
            lines.append(f"... and {hidden} more without a problem")
    lines += ["", _alerts_title(snapshot)]
    if snapshot["alerts"]:
        lines += _columns(("SEVERITY", "STATE", "STATUS", "HOST", "ALERT", "FOR"),
                          [(a["severity"], _alert_state(a), a["status"], a["host"], a["name"], _age(a["since"], now))
                           for a in _alert_rows(snapshot)])
    slos = snapshot["slos"]
    lines.append("")
    if slos is None:
        lines.append(NO_SLOS_FROM_AGENT)
    elif not slos:
        lines.append(NO_SLOS)
    else:
        lines += [_slos_title(slos), *_columns(("NAME", "HOST", "OBJECTIVE", "WINDOW", "SLI", "BUDGET LEFT", "STATUS"),
                                               [_slo_cells(s) for s in slos])]
    if mode == "full":
        resources = snapshot["resources"]
        lines.append("")
        if not resources:
            lines.append(_no_resources(snapshot))
        else:
            lines += ["Resources", *_columns(("HOST", "RESOURCE", "USAGE", ""), [
                (r["host"], r["name"], *((plain_bar(r["percent"]), _pct(r["percent"], 1)) if r["text"] is None
                                         else (r["text"], ""))) for r in resources])]
        lines += ["", f"Recent runs: {len(snapshot['runs'])}"]
        if snapshot["runs"]:
            lines += _columns(("AT", "STATUS", "HOST", "CHECK", "TOOK", "SUMMARY"),
                              [_run_cells(r) for r in snapshot["runs"]])
    return "\n".join(lines)


# ---- rich (a terminal, and the HTML and SVG exports) ----------------------------------------------


def _styled(parts: Iterable[tuple[str, str]]) -> Text:
    from rich.text import Text

    text = Text()
    for piece, style in parts:
        text.append(piece, style=style or None)  # Text.append never reads markup: "[bold]" stays literal
    return text


def _cell(value: object, style: str = "") -> Text:
    from rich.text import Text

    return Text(clean(value), style=style)


def _table(title: str, columns: Sequence[str]) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=_cell(title, "bold"), title_justify="left", box=box.SIMPLE_HEAD, header_style="bold dim",
                  show_edge=False)
    for column in columns:
        if column in FREE_TEXT_COLUMNS:  # names and summaries wrap at spaces, a long word ends in "…"
            table.add_column(column, overflow="ellipsis")
        else:  # statuses, numbers and times are never split over lines: the free text gives way
            table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=max(len(column), 1))
    return table


def _bar(percent: float) -> Any:
    from rich.progress_bar import ProgressBar

    style = "red" if percent >= BAR_CRIT else "yellow" if percent >= BAR_WARN else "green"
    value = max(0.0, min(100.0, percent))
    return ProgressBar(total=100.0, completed=value, width=20, complete_style=style, finished_style=style)


def rich_view(snapshot: Mapping[str, Any], mode: str) -> RenderableType:
    """The dashboard as one rich renderable (what `render_rich` prints and `--watch` redraws)."""
    from rich.console import Group

    if mode == "minimal":
        stale = [(f" (not refreshed: {clean(snapshot['error'])})", "bold red")] if snapshot.get("error") else []
        line = _styled([("ce-agent: ", "bold"), *summary_parts(snapshot), *stale])
        line.no_wrap, line.overflow = True, "ellipsis"  # one line, for a prompt or a status bar
        return Group(line)  # console.print() re-wraps a bare Text whatever its no_wrap says; a Group's it keeps
    now = snapshot["now"]
    title, notes = _header(snapshot)
    parts: list[Any] = [_cell(title, "bold"), *(_cell(text, style) for text, style in notes),
                        _styled(summary_parts(snapshot)), _cell("")]
    if mode == "full":
        rows, hidden = _check_rows(snapshot)
        table = _table(f"Checks: {len(snapshot['checks'])}", ("STATUS", "HOST", "PLAY", "CHECK", "LAST RUN", "SUMMARY"))
        for c in rows:
            table.add_row(_cell(c["status"] or NOT_RUN, STATUS_STYLE.get(c["status"] or "", "dim")), _cell(c["host"]),
                          _cell(c["play"]), _cell(c["name"]), _cell(_age(c["last_run"], now)), _cell(c["summary"]))
        if hidden:
            table.add_row(_cell(f"... and {hidden} more without a problem", "dim"))
        parts += [table, _cell("")]
    if snapshot["alerts"]:
        table = _table(_alerts_title(snapshot), ("SEVERITY", "STATE", "STATUS", "HOST", "ALERT", "FOR"))
        for a in _alert_rows(snapshot):
            table.add_row(_cell(a["severity"], SEVERITY_STYLE.get(a["severity"], "cyan")),
                          _cell(_alert_state(a), "dim" if a["silenced"] or a["state"] != "firing" else ""),
                          _cell(a["status"], STATUS_STYLE.get(a["status"], "")), _cell(a["host"]), _cell(a["name"]),
                          _cell(_age(a["since"], now)))
        parts += [table, _cell("")]
    else:
        parts += [_cell(_alerts_title(snapshot), "bold green"), _cell("")]
    slos = snapshot["slos"]
    if slos:
        table = _table(_slos_title(slos), ("NAME", "HOST", "OBJECTIVE", "WINDOW", "SLI", "BUDGET LEFT", "STATUS"))
        for slo in slos:
            cells = _slo_cells(slo)
            table.add_row(*map(_cell, cells[:-1]), _cell(cells[-1], SLO_STYLE.get(slo["status"], "")))
        parts += [table, _cell("")]
    else:
        parts += [_cell(NO_SLOS_FROM_AGENT if slos is None else NO_SLOS, "dim"), _cell("")]
    if mode == "full":
        resources = snapshot["resources"]
        if resources:
            table = _table("Resources", ("HOST", "RESOURCE", "USAGE", ""))
            for r in resources:
                if r["text"] is None:
                    table.add_row(_cell(r["host"]), _cell(r["name"]), _bar(r["percent"]), _cell(_pct(r["percent"], 1)))
                else:
                    table.add_row(_cell(r["host"]), _cell(r["name"]), _cell(r["text"]), _cell(""))
            parts += [table, _cell("")]
        else:
            parts += [_cell(_no_resources(snapshot), "dim"), _cell("")]
        table = _table(f"Recent runs: {len(snapshot['runs'])}", ("AT", "STATUS", "HOST", "CHECK", "TOOK", "SUMMARY"))
        for run in snapshot["runs"]:
            cells = _run_cells(run)
            table.add_row(_cell(cells[0]), _cell(cells[1], STATUS_STYLE.get(cells[1], "")), *map(_cell, cells[2:]))
        parts += [table, _cell("")]
    return Group(*parts)


def render_rich(snapshot: Mapping[str, Any], mode: str, console: Console) -> None:
    """Print the dashboard on a rich console (a terminal, or a recording one for the exports)."""
    console.print(rich_view(snapshot, mode))


# ---- export ----------------------------------------------------------------------------------------


def export_kind(path: Path) -> str:
    """html (.html, .htm), svg (.svg), else text."""
    suffix = path.suffix.lower()
    return "html" if suffix in (".html", ".htm") else "svg" if suffix == ".svg" else "text"


def render_export(snapshot: Mapping[str, Any], mode: str, kind: str) -> str:
    """The file's content: rich's own HTML page or SVG (its text escaped by rich), or the plain text."""
    if kind == "text":
        return render_plain(snapshot, mode) + "\n"
    from rich.console import Console

    # a terminal of fixed width, in colour, that records instead of showing: the same on any machine
    console = Console(record=True, file=io.StringIO(), width=EXPORT_WIDTH, force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    render_rich(snapshot, mode, console)
    if kind == "html":
        return console.export_html(inline_styles=True)
    # rich's SVG fetches its font from a CDN: keep the locally installed font, so opening the file calls nobody
    return WEB_FONT.sub("", console.export_svg(title="ce-agent status"))


def write_export(path: Path, content: str) -> None:
    """Replace `path` at once: a web server or a `--watch` reader never sees half a page."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(content, encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UserError(f"--export: cannot write {path}: {exc.strerror or exc}") from None


# ---- the command -----------------------------------------------------------------------------------


def check_options(options: StatusOptions) -> None:
    """Bad options are user errors (exit 2), found before anything is read."""
    if options.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {options.mode!r}")
    if options.watch is not None and not (math.isfinite(options.watch) and options.watch > 0):
        raise UserError(f"--watch must be a number of seconds above 0, got {options.watch:g}")
    if options.agent_url is not None:
        agent_url(options.agent_url)


def run_status(options: StatusOptions, warn: Callable[[str], None], out: IO[str] | None = None,
               clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> int:
    """`ce-agent status`: show (or export) one snapshot, or one every `watch` seconds until Ctrl-C; 0.

    The first snapshot's errors (unreachable agent, unreadable state) are user errors, exit 2; later ones
    show in the dashboard, over the last good data, so a restarting agent does not end the watch."""
    check_options(options)
    out = sys.stdout if out is None else out
    seen: set[str] = set()

    def warn_once(line: str) -> None:
        # "no state yet" would otherwise repeat under every redraw
        if line not in seen:
            seen.add(line)
            warn(line)

    def load(previous: dict[str, Any] | None) -> dict[str, Any]:
        try:
            return load_snapshot(options, clock(), warn_once)
        except UserError as exc:
            if previous is None:
                raise
            return {**previous, "error": f"{_iso(clock())}: {exc}"}

    try:
        snapshot = load(None)
        if options.export is not None:
            kind = export_kind(options.export)
            while True:
                write_export(options.export, render_export(snapshot, options.mode, kind))
                if options.watch is None:
                    return 0
                sleep(options.watch)
                snapshot = load(snapshot)
        if out.isatty():
            return _show_rich(snapshot, options, load, sleep)
        out.write(render_plain(snapshot, options.mode) + "\n")
        out.flush()
        while options.watch is not None:
            sleep(options.watch)
            snapshot = load(snapshot)
            out.write("\n" + render_plain(snapshot, options.mode) + "\n")
            out.flush()
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a watch ends: not an error
    except BrokenPipeError:
        # `| head` closed the pipe: done; stdout goes to /dev/null so the interpreter's last flush stays quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    return 0


def _show_rich(snapshot: dict[str, Any], options: StatusOptions,
               load: Callable[[dict[str, Any] | None], dict[str, Any]], sleep: Callable[[float], None]) -> int:
    from rich.console import Console

    console = Console()
    if options.watch is None:
        render_rich(snapshot, options.mode, console)
        return 0
    from rich.live import Live

    # redrawn only when new data is in (no refresh thread); the last frame stays on screen after Ctrl-C
    with Live(rich_view(snapshot, options.mode), console=console, auto_refresh=False) as live:
        try:
            while True:
                sleep(options.watch)
                snapshot = load(snapshot)
                live.update(rich_view(snapshot, options.mode), refresh=True)
        except KeyboardInterrupt:
            pass
    return 0
