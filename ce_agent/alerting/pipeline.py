"""One evaluation: results and samples become alert states, and each channel is told what it must know.

Telling is state-based, as in Alertmanager, not event-based: for every alert and every channel it
routes to, the store remembers what that channel was last told (firing with a status, or not). A
firing alert the channel was not told about is queued; a status change is queued; a reminder is
queued after `repeat_interval`; a channel told "firing" is told "resolved" once the alert resolves.
So a restart, the next cron run, a silence that ends or a flap that settles all converge on the
right messages, and none is sent twice. Held alerts (silenced, in maintenance, inhibited, waiting on a
failing dependency, flapping) change state and history as usual; only their notifications wait.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ce_agent.alerting.evaluator import AlertState, Event, Observation, Policy, step
from ce_agent.alerting.matchers import all_match, parse_matcher
from ce_agent.alerting.routing import AlertingConfig, Route, decide
from ce_agent.contracts import Metric, Notification, Status
from ce_agent.durations import format_duration

Scrub = Callable[[str], str]
SEVERITY_OF_STATUS = {Status.WARNING: "warning", Status.CRITICAL: "critical", Status.UNKNOWN: "warning"}


@dataclass
class AlertInput:
    """One alert as this run observed it."""

    key: str
    labels: dict[str, str]
    observation: Observation
    policy: Policy
    host: str
    play: str
    title: str  # "Root disk on web1", "HighMemory on web1"
    notify: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)  # keys of parent alerts


@dataclass
class Planned:
    """What one alert means for one channel in this run: a message to queue, or why it waits."""

    key: str
    channel: str
    kind: str  # firing | resolved | reminder | flapping_start | flapping_stop | held | none
    reason: str = ""
    route: Route | None = None


@dataclass
class Evaluation:
    """The outcome of evaluating a run: new states, events for history, and per-channel decisions."""

    states: dict[str, AlertState] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    # changes of state that nobody is told of because the alert flaps: for the history only
    quiet: dict[str, list[Event]] = field(default_factory=dict)
    planned: list[Planned] = field(default_factory=list)
    # (notification, host, group, due, parts): parts are what compose() made the notification from
    notifications: list[tuple[Notification, str, str, float, list[dict[str, Any]]]] = field(default_factory=list)


@dataclass(frozen=True)
class _Elsewhere:
    """A firing alert of an earlier evaluation, as inhibition needs it."""

    key: str
    labels: dict[str, str]
    title: str


def check_key(play: str, host: str, check: str) -> str:
    return f'check{{check="{check}",host="{host}",play="{play}"}}'


def rule_key(play: str, host: str, alertname: str, labels: Mapping[str, str]) -> str:
    """A rule alert's identity: its name, host and play, and its other labels (series, rule labels,
    severity), so two rules of one name (a warning and a critical one) are two alerts."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k not in ("alertname", "host", "play"))
    return f'alert{{alertname="{alertname}",host="{host}",play="{play}"' + (f",{inner}}}" if inner else "}")


def rule_prefix(play: str, host: str, alertname: str) -> str:
    return f'alert{{alertname="{alertname}",host="{host}",play="{play}"'


def state_from_json(data: Mapping[str, Any] | None) -> AlertState:
    if not data:
        return AlertState()
    known = {f for f in AlertState.__dataclass_fields__}
    values = {k: (tuple(v) if k == "history" else v) for k, v in data.items() if k in known}
    return AlertState(**values)


def state_to_json(state: AlertState) -> dict[str, Any]:
    out = asdict(state)
    out["history"] = list(state.history)
    return out


def evaluate(
    inputs: Sequence[AlertInput],
    previous: Mapping[str, AlertState],
    config_of: Callable[[str], AlertingConfig],
    told: Callable[[str, str], Mapping[str, Any] | None],
    group_sent: Callable[[str, str], float | None],
    silenced: Callable[[Mapping[str, str]], str | None],
    now: float,
    scrub: Scrub,
    elsewhere_labels: Mapping[str, Mapping[str, str]] | None = None,
    resend_of: Callable[[str, str, str], float | None] | None = None,
    queued_lookup: Callable[[str, str], bool] | None = None,
) -> Evaluation:
    """Pure but for the lookups passed in: step every alert, then decide what each channel is told.

    `elsewhere_labels` (the labels of stored alerts) lets an alert not observed in this evaluation
    still inhibit others while it fires and hold its dependents while it fails: the daemon evaluates
    each batch of finished tasks, not the whole plan at once.

    `resend_of(channel, host, play)` (see `resend_lookup`) names the channels whose receiver forgets a
    firing alert unless told again (Alertmanager): they get a "resend" every so often, and their
    messages skip group_wait/group_interval (the receiver groups). `queued_lookup(group, channel)` says whether
    the outbox still holds a message of that group for that channel (a re-send never queues behind one);
    without it, a message queued after the group's last delivery is taken to be still there."""
    result = Evaluation()
    for alert in inputs:
        before = previous.get(alert.key, AlertState())
        state, events = step(before, alert.observation, alert.policy, now)
        result.states[alert.key] = state
        result.events[alert.key] = events
        if state.flapping and (state.state == "firing") != (before.state == "firing"):
            obs = alert.observation
            result.quiet[alert.key] = [Event("firing" if state.state == "firing" else "resolved", now, obs.status,
                                             f"{obs.summary} (while flapping: not notified)", obs.value)]
    firing = {a.key: a for a in inputs if result.states[a.key].state == "firing"}
    for key, labels in (elsewhere_labels or {}).items():
        state = previous.get(key)
        if key not in result.states and state is not None and state.state == "firing":
            firing[key] = _Elsewhere(key, dict(labels), f"{labels.get('check') or labels.get('alertname')} on {labels.get('host')}")
    states = {**previous, **result.states}
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for alert in inputs:
        state = result.states[alert.key]
        config = config_of(alert.host)
        hold = _hold_reason(alert, state, config, firing, states, silenced, now)
        routed = decide(alert.labels, config.routes, alert.notify).channels()
        elsewhere = _told_elsewhere(alert, routed, config.routes, told) if state.state != "firing" else []
        for channel, route in routed + elsewhere:
            last_told = told(alert.key, channel)
            resend = resend_of(channel, alert.host, alert.play) if resend_of is not None else None
            repeat = route.repeat_interval
            if resend is not None:
                delivered = group_sent(route.group_key(alert.labels, alert.key), channel) or 0.0
                last_queued = float((last_told or {}).get("last_sent") or 0)
                # the last message is still in the outbox (the receiver is down): another would only
                # queue up behind it, and it carries a fresh endsAt when it goes. Not for longer than
                # repeat_interval: the group may have changed since (a route edited), and then its
                # last delivery says nothing of this alert.
                group = route.group_key(alert.labels, alert.key)
                # a message the channel refused (4xx) is gone from the outbox: not pending
                waiting = queued_lookup(group, channel) if queued_lookup is not None else delivered < last_queued
                pending = waiting and now - last_queued < route.repeat_interval
                repeat = route.repeat_interval if pending else min(repeat, resend)
            kinds = _what_to_tell(alert, state, result.events[alert.key], last_told, route, now, repeat,
                                  resend is not None)
            if (channel, route) in elsewhere:
                kinds = [k for k in kinds if k in ("resolved", "forget")]
            if not kinds:
                continue
            if hold:
                result.planned.append(Planned(alert.key, channel, "held", hold, route))
                continue
            for kind in kinds:
                result.planned.append(Planned(alert.key, channel, kind, "", route))
                if kind == "forget":  # send_resolved: false: the channel is not told, but no longer "told firing"
                    continue
                group = route.group_key(alert.labels, alert.key)
                entry = groups.setdefault((channel, group), {"alerts": [], "route": route, "host": alert.host,
                                                             "resend": resend is not None})
                shown = "resend" if kind == "reminder" and resend is not None else kind
                before_labels = (elsewhere_labels or {}).get(alert.key)
                # the labels the channel knows the alert by, when a change of status changed them
                # (a check's severity): a receiver keyed by labels must hear that those ended
                replaced = (dict(before_labels) if kind == "firing" and (last_told or {}).get("firing")
                            and before_labels is not None and dict(before_labels) != alert.labels else None)
                entry["alerts"].append((alert, state, shown, replaced))
    for (channel, group), entry in groups.items():
        route: Route = entry["route"]
        last = group_sent(group, channel)
        due = now + route.group_wait if last is None else max(now, last + route.group_interval)
        if entry["resend"]:
            due = now
        parts = [part(alert, state, kind, now, scrub, replaced) for alert, state, kind, replaced in entry["alerts"]]
        result.notifications.append((compose(channel, parts), entry["host"], group, due, parts))
    return result


def _told_elsewhere(alert: AlertInput, routed: Sequence[tuple[str, Route]], routes: Sequence[Route],
                    told: Callable[[str, str], Mapping[str, Any] | None]) -> list[tuple[str, Route]]:
    """Channels told that the alert fires that it no longer routes to (its severity went from critical
    to warning, say): they must hear it resolve all the same, through the route that names them."""
    seen = {channel for channel, _ in routed}
    out = []
    candidates = [(c, r) for r in routes for c in r.channels] + [(c, Route(channels=tuple(alert.notify)))
                                                                  for c in alert.notify]
    for channel, route in candidates:
        if channel in seen:
            continue
        seen.add(channel)
        if (told(alert.key, channel) or {}).get("firing"):
            out.append((channel, route))
    return out


# A re-send is due a little before its interval has fully passed: evaluations follow the checks, whose
# runs land a few milliseconds either side of the interval, and "elapsed >= interval" would then skip
# every other run (a re-send every 2 minutes for a 1-minute interval).
RESEND_SLACK = 0.9


def _what_to_tell(alert: AlertInput, state: AlertState, events: Sequence[Event], told: Mapping[str, Any] | None,
                  route: Route, now: float, repeat: float | None = None, resend: bool = False) -> list[str]:
    """The kinds of message a channel is owed; `repeat` is the reminder interval (the route's unless a
    channel that must be re-sent to needs less), `resend` says the channel is such a channel."""
    kinds = [e.kind for e in events if e.kind in ("flapping_start", "flapping_stop")]
    was_firing = bool(told and told.get("firing"))
    repeat = route.repeat_interval if repeat is None else repeat
    last_sent = float((told or {}).get("last_sent") or 0)
    if state.flapping:
        # firing/resolved wait until the flapping stops; a receiver that forgets unsent alerts is still
        # kept up to date with the firing it was told of, or it would resolve it (and page) meanwhile
        if resend and was_firing and state.state == "firing" and now - last_sent >= repeat * RESEND_SLACK:
            kinds.append("reminder")
        return kinds
    status = alert.observation.status
    if state.state == "firing":
        if not was_firing:
            # A firing the channel refused or never got (dropped) is tried again only after
            # repeat_interval, or when the status changes: never once per cron run.
            # A channel that must be re-sent to (Alertmanager) tries again at its re-send interval: a
            # refusal there is most often a wrong URL or password, fixed long before repeat_interval ends.
            tried = (told is not None and told.get("status") == status and last_sent >= (state.fired_at or 0)
                     and now - last_sent < (repeat if resend else route.repeat_interval))
            if not tried and alert.observation.active:
                kinds.append("firing")
        elif alert.observation.active and told.get("status") != status:  # type: ignore[union-attr]
            kinds.append("firing")  # a hard state change (WARNING -> CRITICAL); not while only kept firing
        elif now - last_sent >= repeat * (RESEND_SLACK if resend else 1.0):
            kinds.append("reminder")
    elif was_firing:
        kinds.append("resolved" if route.send_resolved else "forget")
    return kinds


def _hold_reason(alert: AlertInput, state: AlertState, config: AlertingConfig, firing: Mapping[str, AlertInput],
                 states: Mapping[str, AlertState], silenced: Callable[[Mapping[str, str]], str | None],
                 now: float) -> str:
    silence = silenced(alert.labels)
    if silence:
        return f"silenced ({silence})"
    for window in config.maintenance:
        if window.active(alert.labels, now):
            return f"in maintenance ({window.schedule} for {format_duration(window.duration)})"
    if state.state == "firing":
        for rule in config.inhibit:
            for other in firing.values():
                if other.key != alert.key and rule.inhibits(other.labels, alert.labels):
                    return f"inhibited by {other.title}"
    for parent in alert.depends_on:
        parent_state = states.get(parent)
        if parent_state is not None and parent_state.status != 0:
            return "its dependency is failing"
    return ""


_TITLE_PREFIX = {"resolved": "RESOLVED", "flapping_start": "FLAPPING", "flapping_stop": "STOPPED FLAPPING"}


def render(channel: str, alerts: Sequence[tuple[AlertInput, AlertState, str]], now: float, scrub: Scrub) -> Notification:
    """One message for a group: a single alert reads "[CRITICAL] Root disk on web1"; several are listed."""
    return compose(channel, [part(alert, state, kind, now, scrub) for alert, state, kind in alerts])


def part(alert: AlertInput, state: AlertState, kind: str, now: float, scrub: Scrub,
         replaced: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One alert's share of a group message, as JSON-able data (kept in the outbox, already scrubbed,
    so that a message still waiting for its group can take in alerts of later evaluations).

    `replaced`: the labels the channel last heard the alert by, when they changed (see `alerts_of`)."""
    title = scrub(alert.title)
    summary = scrub(alert.observation.summary)
    annotations = {"summary": summary or title,
                   "description": f"{title} is {_prefix(alert, kind)}" + (f": {summary}" if summary else "")}
    annotations.update({str(k): scrub(str(v)) for k, v in alert.annotations.items()})
    extra: dict[str, Any] = {"replaces": {k: scrub(str(v)) for k, v in replaced.items()}} if replaced else {}
    return {
        "key": alert.key,
        "kind": kind,
        "prefix": _prefix(alert, kind),
        "title": scrub(alert.title),
        "lines": [scrub(line) for line in _describe(alert, state, kind, now)],
        "status": 0 if kind == "resolved" else int(alert.observation.status),
        "labels": {k: scrub(str(v)) for k, v in alert.labels.items()},
        "host": alert.host,
        "play": alert.play,
        "summary": summary,
        "metrics": [m.as_dict() for m in alert.metrics],
        "annotations": annotations,
        # when it started firing: the same in every message, so a receiver keyed by it sees one alert
        "starts_at": state.fired_at,
        "ends_at": now if kind == "resolved" else None,
        **extra,
    }


def merge_parts(waiting: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The parts of a queued group message after a later evaluation adds `new` ones (Alertmanager's
    group_wait): an alert's newer part replaces its older one, and an alert that fired and resolved
    before the message left is dropped from it altogether (the channel never heard of it)."""
    merged = {str(p["key"]): dict(p) for p in waiting}
    for p in new:
        old = merged.get(str(p["key"]))
        if old is not None and p["kind"] == "resolved" and old["kind"] != "resolved":
            del merged[str(p["key"])]
        else:
            merged[str(p["key"])] = dict(p)
    return list(merged.values())


def compose(channel: str, parts: Sequence[Mapping[str, Any]]) -> Notification:
    """The message for a group's parts."""
    shown = list(parts)
    lines: list[str] = []
    for p in shown:
        if len(shown) > 1:
            lines += [f"== {p['prefix']} {p['title']}"]
        lines += list(p["lines"])
        lines.append("")
    worst = max((Status(int(p["status"])) for p in shown), key=lambda s: s.rank)
    first = shown[0]
    if len(shown) == 1:
        title = f"[{first['prefix']}] {first['title']}" + (" (still firing)" if first["kind"] == "reminder" else "")
    else:
        counts: dict[str, int] = {}
        for p in shown:
            label = {"resolved": "RESOLVED", "flapping_start": "FLAPPING",
                     "flapping_stop": "STOPPED FLAPPING"}.get(str(p["kind"]), "FIRING")
            counts[label] = counts.get(label, 0) + 1
        common = {k: v for k, v in first["labels"].items() if all(p["labels"].get(k) == v for p in shown)}
        title = "[" + ", ".join(f"{k}:{n}" for k, n in counts.items()) + "] " + " ".join(
            f"{k}={v}" for k, v in sorted(common.items()) if k in ("alertname", "check", "host", "severity")
        )
    labels = dict(first["labels"])
    return Notification(
        channel=channel,
        title=title,
        body="\n".join(lines).rstrip(),
        status=worst,
        host=str(first["host"]),
        play=str(first["play"]),
        check=labels.get("check") or labels.get("alertname", ""),
        summary=str(first["summary"]),
        metrics=[Metric.from_dict(m) for m in first["metrics"]],
        labels=labels,
        kind=str(first["kind"]) if len(shown) == 1 else "group",
        alerts=alerts_of(shown),
    )


def alerts_of(parts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Notification.alerts: each part as a receiver that keeps alerts by their labels needs it. Parts
    queued by an older version lack the newer keys: those are None (the receiver then decides)."""
    out = []
    for p in parts:
        item = {"key": str(p["key"]), "kind": str(p["kind"]), "status": int(p["status"]), "labels": dict(p["labels"]),
                "annotations": dict(p.get("annotations") or {"summary": str(p.get("summary") or p["title"])}),
                "starts_at": p.get("starts_at"), "ends_at": p.get("ends_at")}
        if p.get("replaces"):
            item["replaces"] = dict(p["replaces"])
        out.append(item)
    return out


def resend_lookup(resolve: Callable[[str, Mapping[str, Any]], Any]) -> Callable[[str, str, str], float | None]:
    """`evaluate`'s `resend_of` from a channel resolver (`Plan.resolve_channel`): the channel's notifier's
    `resend_interval(options)`, looked up once per channel, host and play for the evaluation it is made for."""
    cache: dict[tuple[str, str, str], float | None] = {}

    def resend_of(channel: str, host: str, play: str) -> float | None:
        if (channel, host, play) not in cache:
            found = resolve(channel, {"host": host, "play": play})
            interval = getattr(getattr(found, "plugin", None), "resend_interval", None)
            cache[(channel, host, play)] = interval(found.options) if callable(interval) else None
        return cache[(channel, host, play)]

    return resend_of


def _prefix(alert: AlertInput, kind: str) -> str:
    return _TITLE_PREFIX.get(kind) or Status(alert.observation.status).name


def _describe(alert: AlertInput, state: AlertState, kind: str, now: float) -> list[str]:
    obs = alert.observation
    lines = [obs.summary] if obs.summary else []
    if kind == "resolved" and state.since is not None:
        lasted = now - state.fired_at if state.fired_at else None
        lines.append("Resolved" + (f" after {format_duration(lasted)}" if lasted else "") + ".")
    elif kind == "reminder" and state.fired_at:
        lines.append(f"Still firing, for {format_duration(now - state.fired_at)} now.")
    elif kind == "flapping_start":
        lines.append(f"Flapping: {state.flap_percent:.0f}% state change over the last results; "
                     "notifications are held until it settles.")
    elif kind == "flapping_stop":
        lines.append("Stopped flapping.")
    lines += [f"Host: {alert.host}", f"Play: {alert.play}"]
    for name in ("check", "alertname", "severity"):
        if alert.labels.get(name):
            lines.append(f"{name.capitalize()}: {alert.labels[name]}")
    extra = {k: v for k, v in alert.labels.items() if k not in ("check", "alertname", "severity", "host", "play")}
    if extra:
        lines.append("Labels: " + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())))
    for name, text in alert.annotations.items():
        lines.append(f"{name.capitalize()}: {text}")
    if obs.value is not None and not (isinstance(obs.value, float) and math.isnan(obs.value)):
        lines.append(f"Value: {obs.value:g}")
    if alert.metrics:
        lines.append("Metrics: " + ", ".join(_metric_text(m) for m in alert.metrics[:12]))
    return lines


def _metric_text(metric: Metric) -> str:
    value = "U" if metric.value is None else f"{metric.value:g}"
    labels = ",".join(f"{k}={v}" for k, v in metric.labels.items())
    return f"{metric.name}{'{' + labels + '}' if labels else ''}={value}{metric.unit}"


def silence_matcher(silences: Sequence[Any], now: float) -> Callable[[Mapping[str, str]], str | None]:
    """A lookup: the id of an active silence that matches the labels, if any."""
    active = []
    for silence in silences:
        if silence.active(now):
            try:
                active.append((silence.id, [parse_matcher(m) for m in silence.matchers]))
            except ValueError:
                continue
    return lambda labels: next((sid for sid, ms in active if all_match(ms, labels)), None)
