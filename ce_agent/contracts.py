"""The shapes every part agrees on: Status, Metric, Result, Notification and the three plugin bases."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgspec


class Status(enum.IntEnum):
    """A check's state, numbered as Nagios plugins number their exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def rank(self) -> int:
        # CRITICAL outranks UNKNOWN: a known outage matters more than a check that could not tell.
        return _RANK[self]

    @classmethod
    def from_code(cls, code: int) -> Status:
        """A plugin exit code as a status; anything outside 0-3 is UNKNOWN, as in Nagios."""
        return cls(code) if code in (0, 1, 2, 3) else cls.UNKNOWN


_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status, ranked OK < WARNING < UNKNOWN < CRITICAL; OK for none."""
    return max(statuses, key=lambda s: s.rank, default=Status.OK)


@dataclass(frozen=True, slots=True)
class Metric:
    """One sample: a name, labels, a value (None for Nagios' `U`), a unit and optional thresholds."""

    name: str
    value: float | None
    unit: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    warn: str | None = None
    crit: str | None = None
    min: float | None = None
    max: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metric:
        return cls(
            str(data["name"]), data.get("value"), str(data.get("unit") or ""), dict(data.get("labels") or {}),
            data.get("warn"), data.get("crit"), data.get("min"), data.get("max"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "labels": dict(self.labels),
            "warn": self.warn,
            "crit": self.crit,
            "min": self.min,
            "max": self.max,
        }


@dataclass(slots=True)
class Result:
    """What a check says: a status, a one-line summary, optional long output and metrics."""

    status: Status
    summary: str
    metrics: list[Metric] = field(default_factory=list)
    details: str = ""


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a plugin knows about where it runs: the task, the host and its variables, the timeout."""

    task: str
    host: str
    play: str = ""
    hostvars: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30.0
    state_dir: Path | None = None  # where the agent keeps its state (for checks such as `heartbeat`)

    @property
    def address(self) -> str:
        """The host's `address` (or Ansible's `ansible_host`), else its inventory name."""
        return str(self.hostvars.get("address") or self.hostvars.get("ansible_host") or self.host)


@dataclass(slots=True)
class Notification:
    """One message for one channel, rendered and ready to send."""

    channel: str
    title: str
    body: str
    status: Status
    host: str = ""
    play: str = ""
    check: str = ""
    summary: str = ""
    metrics: list[Metric] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    #: firing, resolved, reminder, resend, flapping_start, flapping_stop, group or test
    kind: str = "firing"
    #: one entry per alert of the group, for receivers that keep alerts, not messages (Alertmanager):
    #: {"key", "kind", "status", "labels", "annotations", "starts_at", "ends_at"[, "replaces"]}, times in
    #: seconds since the epoch (None when unknown); empty for a message not made from alerts (`notify test`)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        return cls(
            channel=str(data["channel"]), title=str(data["title"]), body=str(data["body"]),
            status=Status[data.get("status", "UNKNOWN")], host=str(data.get("host", "")),
            play=str(data.get("play", "")), check=str(data.get("check", "")), summary=str(data.get("summary", "")),
            metrics=[Metric.from_dict(m) for m in data.get("metrics") or []], labels=dict(data.get("labels") or {}),
            kind=str(data.get("kind", "firing")), alerts=[dict(a) for a in data.get("alerts") or []],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "channel": self.channel,
            "title": self.title,
            "body": self.body,
            "status": self.status.name,
            "host": self.host,
            "play": self.play,
            "check": self.check,
            "summary": self.summary,
            "metrics": [m.as_dict() for m in self.metrics],
            "labels": dict(self.labels),
            # only when there are some: older readers and a test message's record stay as they were
            **({"alerts": [dict(a) for a in self.alerts]} if self.alerts else {}),
        }


class NoOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A plugin that takes no options."""


class DeliveryError(Exception):
    """A notifier could not deliver; the message says why (never the channel's secrets)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class Plugin:
    """What all plugins share: a typed options model, examples for `plugins doc`, and a context."""

    #: the options model: the single source for validation, `plugins doc` and the JSON Schema
    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    #: YAML shown by `ce-agent plugins doc NAME`
    EXAMPLES: ClassVar[str] = ""
    #: the option a bare string fills, as in `command: "check_load -w 5"` (Ansible's free form)
    FREE_FORM: ClassVar[str | None] = None

    def __init__(self, options: Any, context: TaskContext) -> None:
        self.options = options
        self.context = context


class Check(Plugin):
    """Is it healthy? Subclasses implement `run()`; the runner adds the timeout and error handling."""

    def run(self) -> Result:
        raise NotImplementedError

    def cancel(self) -> None:
        """Called from another thread when `run()` overran its timeout: stop what can be stopped."""


class Collector(Plugin):
    """What are the numbers? Subclasses implement `collect()`."""

    def collect(self) -> Iterable[Metric]:
        raise NotImplementedError

    def cancel(self) -> None:
        """Called from another thread when `collect()` overran its timeout."""


class Notifier(Plugin):
    """Tell someone. Subclasses implement `send()`, raising DeliveryError when it did not go out."""

    def send(self, notification: Notification) -> None:
        raise NotImplementedError

    @classmethod
    def resend_interval(cls, options: Any) -> float | None:
        """For a receiver that forgets a firing alert unless told again (Alertmanager ends it at its
        `endsAt`): how often a firing alert is sent again, in seconds. Such a channel also skips the
        route's group_wait/group_interval (the receiver groups). None: reminders at repeat_interval only."""
        return None
