"""What `run` prints: a readable table per play and host, or one JSON object (version 1)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ce_agent.contracts import Status
from ce_agent.runner import Outcome

JSON_VERSION = 1


def exit_code(worst: Status) -> int:
    return int(worst)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def number(value: float | None) -> str:
    """A metric value for people: `U` when unknown, whole numbers without exponent."""
    if value is None:
        return "U"
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def reported(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The rows of the report: every check, and each collector that failed."""
    return [o for o in outcomes if o.job.kind == "check" or o.result.status is not Status.OK]


def as_json(outcomes: Sequence[Outcome], deliveries: Sequence[Any], worst: Status, slos: Sequence[Any] = ()) -> str:
    results = [
        {
            "play": o.job.play,
            "host": o.job.host,
            "name": o.job.name,
            "plugin": o.job.plugin_name,
            "kind": o.job.kind,
            "status": o.result.status.name,
            "code": int(o.result.status),
            "summary": o.result.summary,
            "details": o.result.details or o.trace or None,
            "duration_s": round(o.duration_s, 6),
            "metrics": [m.as_dict() for m in o.result.metrics],
        }
        for o in reported(outcomes)
    ]
    samples = [
        {**m.as_dict(), "host": o.job.host, "play": o.job.play, "collector": o.job.name}
        for o in outcomes
        if o.job.kind == "collector"
        for m in o.samples
    ]
    document = {
        "version": JSON_VERSION,
        "exit_code": exit_code(worst),
        "worst": worst.name,
        "results": results,
        "metrics": samples,
        "notifications": [d.as_dict() for d in deliveries],
    }
    if slos:  # as `ce-agent slo status --format json` has them, with the play and host
        from ce_agent.alertcmds import iso

        document["slos"] = [{**data, "play": play, "host": host, "evaluated": iso(at)}
                            for play, host, _name, data, at in slos]
    return json.dumps(_finite(document), indent=2, allow_nan=False)


def as_text(outcomes: Sequence[Outcome], deliveries: Sequence[Any], worst: Status, check_mode: bool, verbose: bool,
            routing: Sequence[Any] = (), slos: Sequence[Any] = ()) -> str:
    lines: list[str] = []
    rows = reported(outcomes)
    name_width = min(32, max([len(o.job.name) for o in rows] + [5]))
    current: tuple[str, str] | None = None
    for outcome in rows:
        job = outcome.job
        if current is None or current[0] != job.play:
            lines.append(f"PLAY [{job.play}]")
        if current != (job.play, job.host):
            lines.append(f"  {job.host}")
            current = (job.play, job.host)
        status = outcome.result.status.name
        name = job.name if len(job.name) <= name_width else job.name[: name_width - 1] + "…"
        lines.append(f"    {status:<9} {name:<{name_width}}  {outcome.result.summary}  ({outcome.duration_s:.2f}s)")
        long_output = outcome.result.details or outcome.trace
        if verbose and long_output:
            lines += [f"{'':14}{line}" for line in long_output.splitlines()]
        if verbose:
            for metric in outcome.result.metrics:
                lines.append(f"{'':14}{metric.name} = {number(metric.value)}{metric.unit}")
    collectors = [o for o in outcomes if o.job.kind == "collector" and o.result.status is Status.OK]
    if collectors:
        total = sum(len(o.samples) for o in collectors)
        lines.append(f"COLLECTORS  {len(collectors)} ran, {total} samples (see --format json)")
        if verbose:
            for o in collectors:
                for m in o.samples:
                    labels = ",".join(f"{k}={v}" for k, v in m.labels.items())
                    lines.append(f"    {o.job.host} {m.name}{'{' + labels + '}' if labels else ''} = {number(m.value)}{m.unit}")
    if slos:
        lines.append("SLOS")
        for play, host, name, data, _at in slos:
            sli = "no data" if data.get("sli") is None else f"{data['sli']:.3f}%"
            budget = data.get("error_budget_remaining")
            left = "" if budget is None else f", {100 * budget:.1f}% of the error budget left"
            lines.append(f"    {data.get('status', '?'):<9} {name}  {sli} of {data['objective']:g}% over {data['window']}"
                         f"{left}  ({host}, {play})")
    if routing and (check_mode or verbose):
        lines.append("ROUTING" + ("  (--check: what each channel would be told)" if check_mode else ""))
        for planned in routing:
            what = f"held: {planned.reason}" if planned.kind == "held" else planned.kind
            lines.append(f"    {planned.key}  -> {planned.channel}: {what}")
    if deliveries:
        lines.append("NOTIFICATIONS" + ("  (--check: rendered, not sent)" if check_mode else ""))
        for d in deliveries:
            if check_mode:
                state = "would send"
            elif d.sent:
                state = "sent" + (f" through the fallback {d.via!r}" if d.via else "")
            else:
                state = ("DROPPED: " if d.dropped else "FAILED, will retry: ") + str(d.error)
            again = "  (re-send)" if _all_resends(d.notification) else ""  # Alertmanager's keep-alive
            lines.append(f"    {d.channel:<12} {d.notification.title}{again}  -> {state}")
            if check_mode:
                lines += [f"{'':8}| {line}" for line in d.notification.body.splitlines()]
    counts = {s: 0 for s in Status}
    for o in rows:
        counts[o.result.status] += 1
    summary = " ".join(f"{s.name.lower()}={counts[s]}" for s in Status)
    lines.append(f"SUMMARY  {summary}  worst={worst.name} (exit {exit_code(worst)})")
    return "\n".join(lines)


def _all_resends(notification: Any) -> bool:
    kinds = {str(a.get("kind")) for a in notification.alerts} or {notification.kind}
    return kinds == {"resend"}
