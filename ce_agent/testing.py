"""The pytest plugin for plugin authors: run a plugin through the real loader and runner, capture notifications, assert.

Registered as the `pytest11` entry point `ce_agent`, so every pytest run in an environment with
ce-agent installed has these fixtures (disable with `-p no:ce_agent`):

- `ce_run_check(check, options, hostvars=..., timeout=...) -> Result`
- `ce_run_collector(collector, options, ...) -> list[Metric]`
- `ce_send_notification(notifier, options, notification=None)`
- `ce_notifications`: runs a check (or a whole playbook) as `ce-agent run` does, with a channel that
  keeps every notification for the test to inspect.

and the helpers `assert_status`, `assert_metric` and `sample_notification`. Each fixture writes a
one-task playbook and inventory to a directory of its own and loads them with the same code as
`ce-agent run`: options validation, templating, the timeout, "an exception is UNKNOWN" all come
from ce-agent itself, never from a copy here.

pytest imports this module in every run of every project of the environment: everything heavy is
imported inside the functions that use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ce_agent.contracts import Metric, Notification, Result
    from ce_agent.runner import Outcome

#: the notifier `ce_notifications` puts behind the channel `capture` of its inventory
CAPTURE_NOTIFIER = "ce_capture"
#: the channel of the default inventory of `ce_notifications`
CAPTURE_CHANNEL = "capture"


class ValidationFailed(ValueError):
    """What `ce-agent validate` would refuse: an unknown option, a wrong type, an unknown plugin.

    `errors` holds each message (without the temporary file's location)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors) if errors else "the task was refused")
        self.errors = errors


class CollectorFailed(AssertionError):
    """A collector raised or overran its timeout (the runner's UNKNOWN result is in the message)."""


# -- the fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def ce_run_check(tmp_path_factory: pytest.TempPathFactory) -> PluginRunner:
    """Run a check once, as `ce-agent run` would, and return its Result.

    `ce_run_check(MyCheck or "name", {"option": ...}, hostvars={...}, host="localhost", timeout="5s")`;
    options are validated as in a playbook (ValidationFailed when refused), templates in them are
    rendered against `hostvars`, an exception becomes UNKNOWN (its traceback goes to stderr, which
    pytest shows when the test fails) and an overrun becomes UNKNOWN "timed out after …"."""
    return PluginRunner("check", _Workspace(tmp_path_factory.mktemp("ce-agent-check")))


@pytest.fixture
def ce_run_collector(tmp_path_factory: pytest.TempPathFactory) -> PluginRunner:
    """Run a collector once, as `ce-agent run` would, and return its samples (a list of Metric).

    Same arguments as `ce_run_check`; raises CollectorFailed when the collector raised or timed out."""
    return PluginRunner("collector", _Workspace(tmp_path_factory.mktemp("ce-agent-collector")))


@pytest.fixture
def ce_send_notification(tmp_path_factory: pytest.TempPathFactory) -> NotifierSender:
    """Deliver one notification through a notifier as the outbox does; DeliveryError when it failed.

    `ce_send_notification(MyNotifier or "name", {"option": ...}, notification=None)`: the options are
    validated as a channel of the inventory (ValidationFailed when refused); the default notification
    is `sample_notification()`. One attempt, no retries: a transient DeliveryError is raised as is."""
    return NotifierSender(_Workspace(tmp_path_factory.mktemp("ce-agent-notifier")))


@pytest.fixture
def ce_notifications(tmp_path_factory: pytest.TempPathFactory) -> NotificationCapture:
    """Run checks through the whole `ce-agent run` pass (alert state, routing, outbox) with a channel
    named `capture` whose notifier keeps every Notification: `ce_notifications.run_check(MyCheck,
    {...})` returns what that run sent. The alert state lives in a directory of the test, so a second
    run of a check that still fails sends nothing, and one that recovers sends `resolved`."""
    return NotificationCapture(_Workspace(tmp_path_factory.mktemp("ce-agent-run")))


# -- assertion helpers ----------------------------------------------------------------------------


def assert_status(result: Result, status: Any, summary: str | None = None) -> None:
    """The result has this status (a Status, its name such as "CRITICAL", or its code 2) and, when
    `summary` is given, a summary that this regular expression is found in (as pytest.raises' match)."""
    __tracebackhide__ = True
    from ce_agent.contracts import Status

    wanted = _status(status)
    if result.status is not wanted and result.status != wanted:
        got = Status(result.status).name if isinstance(result.status, int) else repr(result.status)
        raise AssertionError(f"expected {wanted.name}, got {got}: {result.summary!r}"
                             + (f"\n{result.details}" if result.details else ""))
    if summary is not None and not re.search(summary, result.summary):
        raise AssertionError(f"summary {result.summary!r} does not match {summary!r}")


def assert_metric(
    source: Result | Iterable[Metric],
    name: str,
    value: float | None | Any = ...,
    *,
    labels: Mapping[str, str] | None = None,
    unit: str | None = None,
    count: int | None = None,
) -> Metric:
    """A metric named `name` is there; returns the first that matches.

    `value` is compared with pytest.approx (None matches an unknown value, Nagios' `U`); `labels`,
    when given, must equal the metric's labels exactly (as Datadog's `assert_metric(tags=...)`);
    `count` is how many samples must match (default: at least one)."""
    __tracebackhide__ = True
    metrics = list(getattr(source, "metrics", source))
    matching = [
        m for m in metrics
        if m.name == name
        and (value is ... or (m.value is None if value is None else m.value is not None and m.value == pytest.approx(value)))
        and (labels is None or dict(m.labels) == {str(k): str(v) for k, v in labels.items()})
        and (unit is None or m.unit == unit)
    ]
    if (count is None and matching) or (count is not None and len(matching) == count):
        return matching[0] if matching else None  # type: ignore[return-value]  # count=0: nothing to return
    wanted = name + (f" = {value!r}" if value is not ... else "") + (f" {dict(labels)}" if labels is not None else "")
    wanted += f" [{unit}]" if unit is not None else ""
    seen = "\n".join(f"  {m.name} = {m.value!r} {dict(m.labels)} [{m.unit}]" for m in metrics) or "  (no metrics)"
    how_many = f"{count} sample(s) of " if count is not None else ""
    raise AssertionError(f"expected {how_many}{wanted}, found {len(matching)}; the metrics are:\n{seen}")


def sample_notification(**changes: Any) -> Notification:
    """A CRITICAL "firing" notification of a disk check on localhost; keyword arguments replace fields."""
    from dataclasses import replace

    from ce_agent.contracts import Metric, Notification, Status

    notification = Notification(
        channel=CAPTURE_CHANNEL,
        title="[CRITICAL] Root disk on localhost",
        body="DISK CRITICAL - / is 97% full\n\nhost: localhost\ncheck: Root disk",
        status=Status.CRITICAL,
        host="localhost",
        play="ce_agent.testing",
        check="Root disk",
        summary="DISK CRITICAL - / is 97% full",
        metrics=[Metric("disk_used_percent", 97.0, "%", {"path": "/"})],
        labels={"severity": "critical"},
        kind="firing",
    )
    return replace(notification, **changes)


# -- what the fixtures return ---------------------------------------------------------------------


class PluginRunner:
    """`ce_run_check` and `ce_run_collector`: call it to run a plugin once; `last` is the runner's
    Outcome of the latest call (duration, timed_out, the traceback of an exception)."""

    def __init__(self, kind: str, workspace: _Workspace) -> None:
        self.kind = kind
        self.last: Outcome | None = None
        self._workspace = workspace

    def __call__(
        self,
        plugin: type | str,
        options: Mapping[str, Any] | str | None = None,
        *,
        hostvars: Mapping[str, Any] | None = None,
        host: str = "localhost",
        timeout: float | str | None = None,
        name: str | None = None,
    ) -> Any:
        __tracebackhide__ = True
        import sys

        from ce_agent.runner import execute

        plan, redactor = self._workspace.plan(self.kind, plugin, options, hostvars=hostvars, host=host,
                                              timeout=timeout, name=name)
        (outcome,) = execute(plan.jobs, forks=1, scrub=redactor.scrub)
        self.last = outcome
        if outcome.trace:  # shown by pytest under "Captured stderr" when the test fails
            print(f"ce_agent.testing: the {self.kind} raised:\n{outcome.trace}", file=sys.stderr)
        if self.kind == "check":
            return outcome.result
        if outcome.trace or outcome.timed_out:
            raise CollectorFailed(outcome.result.summary + (f"\n{outcome.trace}" if outcome.trace else ""))
        return outcome.samples


class NotifierSender:
    """`ce_send_notification`: validate a channel's options and deliver one notification through it."""

    def __init__(self, workspace: _Workspace) -> None:
        self._workspace = workspace

    def __call__(
        self,
        notifier: type | str,
        options: Mapping[str, Any] | str | None = None,
        notification: Notification | None = None,
        *,
        hostvars: Mapping[str, Any] | None = None,
        host: str = "localhost",
    ) -> None:
        __tracebackhide__ = True
        from dataclasses import replace

        from ce_agent.outbox import RetryPolicy, send_with_retries

        channel = self._workspace.channel(notifier, options, hostvars=hostvars, host=host)
        message = replace(notification or sample_notification(), channel=channel.name)
        # attempts=1: a test asserts on the notifier's own behaviour, not on the outbox's retries
        send_with_retries(channel, message, RetryPolicy(attempts=1), lambda _seconds: None)


class NotificationCapture:
    """`ce_notifications`: runs as `ce-agent run` does and keeps what the `capture` channel was sent.

    `sent` is every notification captured so far; `report` the latest run's oneshot.Report."""

    def __init__(self, workspace: _Workspace) -> None:
        self.sent: list[Notification] = []
        self.report: Any = None
        self._workspace = workspace

    def run_check(
        self,
        check: type | str,
        options: Mapping[str, Any] | str | None = None,
        *,
        hostvars: Mapping[str, Any] | None = None,
        host: str = "localhost",
        timeout: float | str | None = None,
        name: str | None = None,
        task: Mapping[str, Any] | None = None,
    ) -> list[Notification]:
        """Run one check that notifies `capture` (plus any task keys in `task`, such as `severity` or
        `labels`) and return the notifications this run sent."""
        __tracebackhide__ = True
        keys = {"notify": [CAPTURE_CHANNEL], **(task or {})}
        plan, redactor = self._workspace.plan("check", check, options, hostvars=hostvars, host=host,
                                              timeout=timeout, name=name, task=keys, sink=self.sent)
        return self._run(plan, redactor)

    def run_playbook(
        self,
        playbook: str,
        inventory: str | None = None,
        plugins: Mapping[str, type] | Iterable[type] = (),
    ) -> list[Notification]:
        """Run a playbook (YAML text) and return the notifications this run sent to any channel whose
        notifier is `ce_capture`. Without `inventory`, the inventory is localhost with the channel
        `capture: {ce_capture: {}}`; `plugins` are classes to use by name without installing them
        ({"name": Class}, or classes named after themselves: UptimeCheck is `uptime`)."""
        __tracebackhide__ = True
        plan, redactor = self._workspace.load(playbook, inventory, _named(plugins), sink=self.sent)
        return self._run(plan, redactor)

    def _run(self, plan: Any, redactor: Any) -> list[Notification]:
        import time

        from ce_agent import oneshot

        before = len(self.sent)
        store, _notices = oneshot.open_store(self._workspace.state_dir, time.time())
        try:
            self.report = oneshot.run(plan, redactor, store)
        finally:
            store.close()
        return self.sent[before:]


# -- the machinery --------------------------------------------------------------------------------


class _Workspace:
    """A directory for the playbooks, inventories and alert state of one test's runs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state_dir = directory / "state"
        self._files = 0

    def _write(self, stem: str, text: str) -> Path:
        self._files += 1
        path = self.directory / f"{stem}-{self._files}.yml"
        path.write_text(text, encoding="utf-8")
        return path

    def plan(
        self,
        kind: str,
        plugin: type | str,
        options: Any,
        *,
        hostvars: Mapping[str, Any] | None,
        host: str,
        timeout: float | str | None,
        name: str | None,
        task: Mapping[str, Any] | None = None,
        sink: list[Notification] | None = None,
    ) -> tuple[Any, Any]:
        """The plan of a one-task playbook, loaded as `ce-agent run` loads one."""
        __tracebackhide__ = True
        extra: dict[str, type] = {}
        if isinstance(plugin, str):
            key = plugin
        else:
            key = _name_of(plugin)
            _expect_kind(plugin, kind)
            extra[key] = plugin
        item: dict[str, Any] = {"name": name or key, key: options}
        if timeout is not None:
            item["timeout"] = timeout
        item.update(task or {})
        play = [{"name": "ce_agent.testing", "hosts": host, f"{kind}s": [item]}]
        inventory = {"all": {"hosts": {host: dict(hostvars or {})},
                             "vars": {"channels": {CAPTURE_CHANNEL: {CAPTURE_NOTIFIER: {}}}}}}
        return self.load(_yaml(play), _yaml(inventory), extra, sink)

    def load(self, playbook: str, inventory: str | None, extra: Mapping[str, type],
             sink: list[Notification] | None = None) -> tuple[Any, Any]:
        __tracebackhide__ = True
        import os

        from ce_agent import oneshot
        from ce_agent.plan import Selection
        from ce_agent.redact import Redactor

        if inventory is None:
            inventory = _yaml({"all": {"hosts": {"localhost": {}},
                                       "vars": {"channels": {CAPTURE_CHANNEL: {CAPTURE_NOTIFIER: {}}}}}})
        paths = [self._write("playbook", playbook)], [self._write("inventory", inventory)]
        registry = _registry({**extra, CAPTURE_NOTIFIER: _capture_notifier([] if sink is None else sink)})
        redactor = Redactor()
        try:
            plan, _problems = oneshot.load(*paths, Selection(state_dir=self.state_dir), registry, redactor, os.environ)
        except oneshot.InvalidConfig as exc:
            raise ValidationFailed([p.message for p in exc.problems.errors]) from None
        return plan, redactor

    def channel(self, notifier: type | str, options: Any, *, hostvars: Mapping[str, Any] | None, host: str) -> Any:
        """A channel `test` of that notifier, validated as `ce-agent notify test` validates one."""
        __tracebackhide__ = True
        import os

        from ce_agent.config.inventory import load_inventories
        from ce_agent.config.templating import Templar
        from ce_agent.errors import Problems
        from ce_agent.plan import resolve_channel_for

        extra: dict[str, type] = {}
        if isinstance(notifier, str):
            key = notifier
        else:
            key = _name_of(notifier)
            _expect_kind(notifier, "notifier")
            extra[key] = notifier
        inventory = {"all": {"hosts": {host: dict(hostvars or {})}, "vars": {"channels": {"test": {key: options}}}}}
        problems = Problems()
        loaded = load_inventories([self._write("inventory", _yaml(inventory))], problems)
        channel = None
        if not problems:
            channel = resolve_channel_for(loaded, host, "test", _registry(extra), Templar(os.environ), problems)
        if channel is None:
            raise ValidationFailed([p.message for p in problems.errors])
        return channel


def _registry(extra: Mapping[str, type]) -> Any:
    """The installed plugins plus the given classes (kind from their base class), which win on a
    name both have: a test runs the class it imported, installed or not."""
    from ce_agent.registry import Registry

    added = {(_kind_of(cls), name): cls for name, cls in extra.items()}

    class _WithClasses(Registry):
        def names(self, kind: str) -> list[str]:
            return sorted({*super().names(kind), *(n for k, n in added if k == kind)})

        def has(self, kind: str, name: str) -> bool:
            return (kind, name) in added or super().has(kind, name)

        def load(self, kind: str, names: Iterable[str]) -> None:
            super().load(kind, [n for n in names if (kind, n) not in added])

        def get(self, kind: str, name: str) -> type:
            return added.get((kind, name)) or super().get(kind, name)

        def duplicates(self, kind: str) -> dict[str, list[str]]:
            return {n: d for n, d in super().duplicates(kind).items() if (kind, n) not in added}

    return _WithClasses()


def _capture_notifier(sink: list[Notification]) -> type:
    """A notifier class whose instances append to `sink` (one class per test: no shared state)."""
    from ce_agent.contracts import Notifier

    class CaptureNotifier(Notifier):
        """Keeps each notification for the test (ce_agent.testing)."""

        def send(self, notification: Notification) -> None:
            sink.append(notification)  # list.append is atomic: the outbox sends from worker threads

    return CaptureNotifier


def _kind_of(cls: type) -> str:
    from ce_agent.contracts import Check, Collector, Notifier

    for kind, base in (("check", Check), ("collector", Collector), ("notifier", Notifier)):
        if isinstance(cls, type) and issubclass(cls, base):
            return kind
    raise TypeError(f"{cls!r} is not a Check, Collector or Notifier class")


def _expect_kind(cls: type, kind: str) -> None:
    if _kind_of(cls) != kind:
        raise TypeError(f"{cls.__name__} is a {_kind_of(cls)}, not a {kind}")


def _name_of(cls: type) -> str:
    """A class's playbook name when given as a class: UptimeCheck -> uptime, HTTPProbeCheck -> http_probe."""
    base = re.sub(r"(Check|Collector|Notifier)$", "", cls.__name__) or cls.__name__
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", base).lower()


def _named(plugins: Mapping[str, type] | Iterable[type]) -> dict[str, type]:
    if isinstance(plugins, Mapping):
        return dict(plugins)
    return {_name_of(cls): cls for cls in plugins}


def _yaml(data: Any) -> str:
    import os

    import yaml

    def plain(value: Any) -> Any:
        # what a test naturally passes (a tmp_path) as the text a playbook would hold
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, str) and type(value) is not str:
            return str(value)
        if isinstance(value, float) and type(value) is not float:
            return float(value)
        return value

    return yaml.safe_dump(plain(data), sort_keys=False, allow_unicode=True)


def _status(value: Any) -> Any:
    from ce_agent.contracts import Status

    if isinstance(value, Status):
        return value
    if isinstance(value, str) and value.upper() in Status.__members__:
        return Status[value.upper()]
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2, 3):
        return Status(value)
    raise ValueError(f"not a status: {value!r} (use Status.CRITICAL, 'CRITICAL' or 2)")
