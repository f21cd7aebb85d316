"""Routes, inhibition rules and maintenance windows from the inventory: which channels, which holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ce_agent.alerting.matchers import Matcher, all_match, matchers_from
from ce_agent.durations import parse_duration

DEFAULT_REPEAT_INTERVAL = 4 * 3600.0
ROUTE_KEYS = ("match", "matchers", "channels", "continue", "group_by", "group_wait", "group_interval",
              "repeat_interval", "send_resolved")
INHIBIT_KEYS = ("source", "target", "equal")
MAINTENANCE_KEYS = ("schedule", "duration", "match", "matchers", "comment")


@dataclass(frozen=True)
class Route:
    """Alertmanager's route, flattened: first match wins unless `continue`."""

    matchers: tuple[Matcher, ...] = ()
    channels: tuple[str, ...] = ()
    cont: bool = False
    group_by: tuple[str, ...] = ("...",)
    group_wait: float = 0.0
    group_interval: float = 0.0
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL
    send_resolved: bool = True
    index: int = -1  # position in `routes`; -1 for the fallback to the check's `notify:`

    def group_key(self, labels: Mapping[str, str], alert_key: str = "") -> str:
        """The notification group of an alert on this route: equal group_by labels share a message.

        `...` (one message per alert) groups by the alert's identity, `alert_key`, rather than by its
        labels: a check's `severity` follows its status, and the outbox keeps a channel's messages in
        order per group, so a group that changed with the status would let a "resolved" or a
        "critical" overtake the "warning" still waiting for a channel that is down."""
        if "..." in self.group_by:
            if alert_key:
                return f"route{self.index}:{alert_key}"
            names = sorted(labels)
        else:
            names = list(self.group_by)
        inner = ",".join(f'{n}="{labels.get(n, "")}"' for n in names)
        return f"route{self.index}:{{{inner}}}"


@dataclass(frozen=True)
class Decision:
    """Where one alert goes: each route that matched, with its channels."""

    routes: tuple[Route, ...] = ()

    def channels(self) -> list[tuple[str, Route]]:
        out, seen = [], set()
        for route in self.routes:
            for channel in route.channels:
                if channel not in seen:
                    seen.add(channel)
                    out.append((channel, route))
        return out


def decide(labels: Mapping[str, str], routes: Sequence[Route], fallback: Sequence[str]) -> Decision:
    """The routes an alert takes; with none matching (or none configured), the check's `notify:`."""
    matched = []
    for route in routes:
        if all_match(route.matchers, labels):
            matched.append(route)
            if not route.cont:
                break
    if not matched:
        return Decision((Route(channels=tuple(fallback)),)) if fallback else Decision()
    return Decision(tuple(matched))


@dataclass(frozen=True)
class InhibitRule:
    """While an alert matching `source` fires, alerts matching `target` with the same `equal` labels are held."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()

    def inhibits(self, source_labels: Mapping[str, str], target_labels: Mapping[str, str]) -> bool:
        if source_labels is target_labels:
            return False
        return (
            all_match(self.source, source_labels)
            and all_match(self.target, target_labels)
            and all(source_labels.get(n, "") == target_labels.get(n, "") for n in self.equal)
        )


def default_inhibit_rules() -> list[InhibitRule]:
    """A CRITICAL inhibits a WARNING of the same check (or rule) on the same host."""
    return [
        InhibitRule(
            source=tuple(matchers_from({"severity": "critical"})),
            target=tuple(matchers_from({"severity": "warning"})),
            equal=("host", "check", "alertname"),
        )
    ]


@dataclass(frozen=True)
class Maintenance:
    """A recurring window (cron start + duration) during which matching alerts notify nobody."""

    schedule: str
    duration: float
    matchers: tuple[Matcher, ...] = ()
    comment: str = ""

    def active(self, labels: Mapping[str, str], now: float) -> bool:
        if not all_match(self.matchers, labels):
            return False
        from datetime import datetime, timezone

        from croniter import croniter

        start = croniter(self.schedule, datetime.fromtimestamp(now, timezone.utc)).get_prev(float)
        return now < start + self.duration


@dataclass
class AlertingConfig:
    """What one host's variables say about alert handling."""

    routes: list[Route] = field(default_factory=list)
    inhibit: list[InhibitRule] = field(default_factory=default_inhibit_rules)
    maintenance: list[Maintenance] = field(default_factory=list)


def _duration(value: Any, what: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{what} must be a list of names")


def _matchers(spec: Mapping[str, Any]) -> tuple[Matcher, ...]:
    out: list[Matcher] = []
    for key in ("match", "matchers"):
        if spec.get(key) is not None:
            out += matchers_from(spec[key])
    return tuple(out)


def _unknown(spec: Mapping[str, Any], valid: Sequence[str], what: str) -> None:
    extra = [str(k) for k in spec if k not in valid]
    if extra:
        raise ValueError(f"unknown key {extra[0]!r} in {what}; valid keys: {', '.join(valid)}")


def parse_routes(spec: Any) -> list[Route]:
    """`routes:` from the inventory; ValueError naming the route and key at fault."""
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise ValueError("'routes' must be a list of routes")
    routes = []
    for index, item in enumerate(spec):
        what = f"routes[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{what} must be a mapping with 'channels' and optional matchers")
        _unknown(item, ROUTE_KEYS, what)
        send_resolved = item.get("send_resolved", True)
        if not isinstance(send_resolved, bool):
            raise ValueError(f"{what}.send_resolved must be true or false")
        cont = item.get("continue", False)
        if not isinstance(cont, bool):
            raise ValueError(f"{what}.continue must be true or false")
        try:
            matchers = _matchers(item)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        routes.append(
            Route(
                matchers=matchers,
                channels=_names(item.get("channels", []), f"{what}.channels"),
                cont=cont,
                group_by=_names(item.get("group_by", ["..."]), f"{what}.group_by"),
                group_wait=_duration(item.get("group_wait", 0), f"{what}.group_wait"),
                group_interval=_duration(item.get("group_interval", 0), f"{what}.group_interval"),
                repeat_interval=_duration(item.get("repeat_interval", DEFAULT_REPEAT_INTERVAL), f"{what}.repeat_interval"),
                send_resolved=send_resolved,
                index=index,
            )
        )
    return routes


def parse_inhibit(spec: Any) -> list[InhibitRule]:
    """`inhibit:` from the inventory (replaces the default rule when given)."""
    if spec is None:
        return default_inhibit_rules()
    if not isinstance(spec, list):
        raise ValueError("'inhibit' must be a list of rules")
    rules = []
    for index, item in enumerate(spec):
        what = f"inhibit[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{what} must be a mapping with 'source', 'target' and 'equal'")
        _unknown(item, INHIBIT_KEYS, what)
        try:
            source = tuple(matchers_from(item.get("source") or {}))
            target = tuple(matchers_from(item.get("target") or {}))
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        rules.append(InhibitRule(source, target, _names(item.get("equal", []), f"{what}.equal")))
    return rules


def parse_maintenance(spec: Any) -> list[Maintenance]:
    """`maintenance:` windows from the inventory: `{schedule: "0 2 * * 0", duration: 2h, match: {...}}`."""
    if spec is None:
        return []
    if not isinstance(spec, list):
        raise ValueError("'maintenance' must be a list of windows")
    from ce_agent.schedules import cron_error

    windows = []
    for index, item in enumerate(spec):
        what = f"maintenance[{index}]"
        if not isinstance(item, Mapping) or "schedule" not in item or "duration" not in item:
            raise ValueError(f"{what} must be a mapping with 'schedule' (cron) and 'duration'")
        _unknown(item, MAINTENANCE_KEYS, what)
        error = cron_error(str(item["schedule"]))
        if error:
            raise ValueError(f"{what}.schedule: {error}")
        try:
            matchers = _matchers(item)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        windows.append(
            Maintenance(str(item["schedule"]), _duration(item["duration"], f"{what}.duration"), matchers,
                        str(item.get("comment", "")))
        )
    return windows
