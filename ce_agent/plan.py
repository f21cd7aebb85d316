"""From playbooks and inventory to jobs: hosts selected, templates rendered, options validated."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_agent.config.inventory import Inventory, load_inventories
from ce_agent.config.playbook import Play, Task, load_playbook
from ce_agent.config.templating import Templar, TemplateError, VarScope, has_template
from ce_agent.config.yamlfile import LocDict, LocList
from ce_agent.contracts import TaskContext
from ce_agent.durations import parse_timeout
from ce_agent.errors import Location, Problems
from ce_agent.options import convert_options
from ce_agent.registry import PluginLoadError, Registry


@dataclass
class Channel:
    """A named destination for notifications, resolved for one host: a notifier and its options."""

    name: str
    notifier: str
    plugin: type
    options: Any
    fallback: str | None = None  # the channel that takes over after `fallback_after` failed deliveries
    fallback_after: int = 3


@dataclass
class Job:
    """One task on one host, ready to run."""

    kind: str
    play: str
    host: str
    name: str
    plugin_name: str
    plugin: type
    options: Any
    context: TaskContext
    task: Task
    notify: list[Channel] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    severity: str | None = None
    instance: Any = None  # the plugin object while it runs, so a timeout can cancel it
    load_error: str | None = None  # the plugin could not be imported: the job reports UNKNOWN


@dataclass
class Selection:
    """What the command line narrows the run to."""

    limit: str | None = None
    tags: set[str] = field(default_factory=set)
    skip_tags: set[str] = field(default_factory=set)
    extra_vars: dict[str, Any] = field(default_factory=dict)
    state_dir: Path | None = None  # handed to plugins (TaskContext.state_dir)
    # `validate` checks more at a cost `run` should not pay: cron syntax (croniter), Apprise URLs (apprise)
    check_schedules: bool = False
    # `run`: a plugin that is installed but fails to import makes its tasks UNKNOWN, and only those
    broken_plugins_run: bool = False


@dataclass
class Plan:
    """Every job of a run, the alert rules of each play and host, and how to reach channels later."""

    jobs: list[Job]
    inventory: Inventory
    plays: list[Play]
    rules: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (play, host) -> AlertRules
    builder: Any = None
    slos: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (play, host) -> slo.SLO

    @property
    def sample_history(self) -> frozenset[str]:
        """The collector sample names whose history the SLOs need (the rest keep only their newest value)."""
        if not self.slos:  # most plans: no reason to import the SLO module on every run
            return frozenset()
        from ce_agent.slo import RatioSLI, ThresholdSLI

        names: set[str] = set()
        for slos in self.slos.values():
            for slo in slos:
                if isinstance(slo.sli, ThresholdSLI):
                    names.add(slo.sli.metric)
                elif isinstance(slo.sli, RatioSLI):
                    names.update((slo.sli.good, slo.sli.total))
        return frozenset(names)
    _by_key: dict[str, list[Job]] | None = None

    def alerting(self, host: str) -> Any:
        """Routes, inhibition rules and maintenance windows for a host (validated when loading)."""
        return self.builder.alerting(host)

    @property
    def delivery(self) -> Any:
        """The outbox's retry policy, from the `delivery` variable of `all` (see outbox.RetryPolicy)."""
        return self.builder.delivery()

    def resolve_channel(self, name: str, payload: Mapping[str, Any]) -> Channel | None:
        """A channel as configured now, for a notification queued by this or an earlier run: as the
        check that notifies resolved it (task vars included), else from the host's and play's vars."""
        for alert in payload.get("alerts", []):
            for job in self._jobs_by_key().get(alert.get("key", ""), []):
                for channel in job.notify:
                    if channel.name == name:
                        return channel
        return self.builder.channel_for_delivery(name, str(payload.get("host", "")), str(payload.get("play", "")))

    def _jobs_by_key(self) -> dict[str, list[Job]]:
        if self._by_key is None:
            from ce_agent.alerting.pipeline import check_key

            self._by_key = {}
            for job in self.jobs:
                self._by_key.setdefault(check_key(job.play, job.host, job.name), []).append(job)
        return self._by_key


def build_plan(
    playbooks: list[Path],
    inventories: list[Path],
    registry: Registry,
    templar: Templar,
    selection: Selection,
    problems: Problems,
) -> Plan:
    """Load, render and validate everything; each problem found is added to `problems`."""
    inventory = load_inventories(inventories, problems)
    plays = [play for path in playbooks for play in load_playbook(path, problems)]
    _load_plugins(plays, registry, problems)
    limit_hosts: set[str] | None = None
    if selection.limit:
        try:
            limit_hosts = set(inventory.select(selection.limit))
        except ValueError as exc:
            problems.add(None, f"--limit {selection.limit!r}: {exc}")
            limit_hosts = set()
    if selection.check_schedules:
        _check_schedules(plays, problems)
    builder = _Builder(inventory, registry, templar, selection, problems)
    jobs: list[Job] = []
    rules: dict[tuple[str, str], list[Any]] = {}
    slos: dict[tuple[str, str], list[Any]] = {}
    for play in plays:
        if not play.hosts:
            continue
        try:
            hosts = inventory.select(play.hosts)
        except ValueError as exc:
            problems.add(play.hosts_loc, f"hosts {play.hosts!r}: {exc}; known: {', '.join(inventory.all_names())}")
            continue
        if not hosts:
            problems.warn(play.hosts_loc, f"hosts {play.hosts!r} matches no hosts; play {play.name!r} is skipped")
        for host in hosts:
            if limit_hosts is not None and host not in limit_hosts:
                continue
            selected = builder.jobs_for(play, host)
            jobs.extend(selected)
            chosen = builder.rules_for(play, host)
            if chosen:
                rules[(play.name, host)] = chosen
            if play.slos and builder.slos_for(play, host):
                slos[(play.name, host)] = play.slos
            if selected or chosen or (play.name, host) in slos:
                builder.alerting(host)  # validate the host's routes, inhibit rules and maintenance now
            if not selection.broken_plugins_run:  # `validate`: channels nothing uses yet are checked too
                builder.every_channel(host)
    builder.delivery()
    return Plan(jobs, inventory, plays, rules, builder, slos=slos)


def selected_by_tags(tags: set[str], only: set[str], skip: set[str]) -> bool:
    """Ansible's tag rules: `always` runs unless skipped by name, `never` only when named; the special
    selectors `all` (the default), `tagged` and `untagged` work in --tags and --skip-tags."""
    only = only or {"all"}
    if "always" in tags:
        run = True
    elif "never" in tags:
        run = bool(only & (tags - {"never"})) or "never" in only
    else:
        run = bool(
            "all" in only
            or ("tagged" in only and tags)
            or ("untagged" in only and not tags)
            or only & tags
        )
    if not run or not skip:
        return run
    if "always" in tags and "always" not in skip:
        return True
    return not ("all" in skip or skip & tags or ("tagged" in skip and tags) or ("untagged" in skip and not tags))


def _check_schedules(plays: list[Play], problems: Problems) -> None:
    from ce_agent.scheduler import task_schedule

    for play in plays:
        for task in play.tasks:
            if task.schedule is not None and task.interval is not None:
                problems.add(task.key_locs.get("interval", task.loc), "give either 'schedule' or 'interval', not both")
                continue
            try:
                task_schedule(task)
            except ValueError as exc:
                message = str(exc)
                key = next((k for k in ("timezone", "jitter") if k in task.key_locs and (f"`{k}`" in message or
                            f"unknown {k}" in message)), "schedule" if task.schedule is not None else "interval")
                problems.add(task.key_locs.get(key, task.loc), f"'{key}': {message}")


def _load_plugins(plays: list[Play], registry: Registry, problems: Problems) -> None:
    wanted: dict[str, set[str]] = {"check": set(), "collector": set()}
    for play in plays:
        for task in play.tasks:
            wanted[task.kind].add(task.plugin)
    for kind, names in wanted.items():
        registry.load(kind, names)


def _plugin_error(registry: Registry, kind: str, name: str) -> str:
    duplicates = registry.duplicates(kind).get(name)
    if duplicates:
        return f"{kind} plugin {name!r} is provided more than once: {'; '.join(duplicates)}"
    if not registry.has(kind, name):
        other = "collector" if kind == "check" else "check"
        if registry.has(other, name):
            return f"{name!r} is a {other} plugin; move it under '{other}s:'"
        hint = registry.suggest(kind, name)
        known = ", ".join(registry.names(kind))
        return f"unknown {kind} plugin {name!r}" + (f"; did you mean {hint!r}?" if hint else "") + f" (known: {known})"
    try:
        registry.get(kind, name)
    except PluginLoadError as exc:
        return f"{kind} plugin {name!r} cannot be used: {exc}"
    return ""


class _Builder:
    """Per-play, per-host expansion of tasks into jobs, caching what hosts share."""

    def __init__(
        self, inventory: Inventory, registry: Registry, templar: Templar, selection: Selection, problems: Problems
    ) -> None:
        self.inventory = inventory
        self.registry = registry
        self.templar = templar
        self.selection = selection
        self.problems = problems
        self._host_vars: dict[str, dict[str, Any]] = {}
        self._plugin_errors: dict[tuple[str, str], str] = {}
        self._alerting: dict[str, Any] = {}
        self._unknown_channels: set[tuple[Location | None, str]] = set()
        self._channels_checked: set[str] = set()  # hosts whose every channel `validate` resolved
        self._plays = {}  # name -> Play, for channels of notifications queued by earlier runs

    def _vars(self, host: str) -> dict[str, Any]:
        if host not in self._host_vars:
            self._host_vars[host] = self.inventory.variables(host)
        return self._host_vars[host]

    def _selected(self, play: Play, task: Task) -> bool:
        return selected_by_tags(set(task.tags) | set(play.tags), self.selection.tags, self.selection.skip_tags)

    def rules_for(self, play: Play, host: str) -> list[Any]:
        """The play's alert rules selected by tags, their `notify:` channels checked for this host."""
        self._plays[play.name] = play
        chosen = []
        scope = None
        for rule in play.rules:
            if not selected_by_tags(set(rule.tags) | set(play.tags), self.selection.tags, self.selection.skip_tags):
                continue
            if scope is None:
                scope = self.templar.scope([self._vars(host), play.vars, self.selection.extra_vars])
            if all(self._resolve_channel(host, n, loc, scope) is not None for n, loc in zip(rule.notify, rule.notify_locs)):
                chosen.append(rule)
        return chosen

    def slos_for(self, play: Play, host: str) -> bool:
        """Whether the play's SLOs are evaluated on this host (selected by the play's tags; every
        `notify:` channel of theirs exists for it)."""
        if not selected_by_tags(set(play.tags), self.selection.tags, self.selection.skip_tags):
            return False
        self._plays[play.name] = play
        scope = self.templar.scope([self._vars(host), play.vars, self.selection.extra_vars])
        names = {n for slo in play.slos for n in (*slo.notify, *(slo.budget_policy.notify if slo.budget_policy else ()))}
        return all(self._resolve_channel(host, name, play.slo_notify_locs.get(name, play.loc), scope) is not None
                   for name in sorted(names))

    def alerting(self, host: str) -> Any:
        """Routes, inhibit rules and maintenance windows from the host's variables; problems reported once."""
        if host in self._alerting:
            return self._alerting[host]
        from ce_agent.alerting.routing import AlertingConfig, parse_inhibit, parse_maintenance, parse_routes

        variables = self._vars(host)
        config = AlertingConfig()
        for name, parse, attr in (("routes", parse_routes, "routes"), ("inhibit", parse_inhibit, "inhibit"),
                                  ("maintenance", parse_maintenance, "maintenance")):
            if name not in variables:
                continue
            loc = _var_loc(self.inventory, host, name)
            try:
                setattr(config, attr, parse(self.templar.render(variables[name], self.templar.scope([variables]))))
            except (ValueError, TemplateError) as exc:
                self.problems.add(loc, f"{name}: {exc}")
        scope = self.templar.scope([variables, self.selection.extra_vars])
        for route in config.routes:
            for channel in route.channels:
                self._resolve_channel(host, channel, _var_loc(self.inventory, host, "routes"), scope)
        self._alerting[host] = config
        return config

    def delivery(self) -> Any:
        """`delivery:` from the variables every host shares (group `all`); problems reported once."""
        if "delivery" not in self._alerting:
            from ce_agent.outbox import RetryPolicy, policy_from

            spec = self.inventory.groups["all"].vars.get("delivery")
            for layer in self.inventory.group_vars.get("all", []):
                spec = layer.get("delivery", spec)
            try:
                self._alerting["delivery"] = policy_from(spec)
            except ValueError as exc:
                loc = spec.loc if isinstance(spec, LocDict) else None
                self.problems.add(loc, str(exc))
                self._alerting["delivery"] = RetryPolicy()
        return self._alerting["delivery"]

    def channel_for_delivery(self, name: str, host: str, play: str) -> Channel | None:
        """Resolve a channel quietly (no problems recorded): for notifications waiting in the outbox."""
        layers = [self._vars(host)]
        if play in self._plays:
            layers.append(self._plays[play].vars)
        layers.append(self.selection.extra_vars)
        quiet = Problems()
        saved, self.problems = self.problems, quiet
        try:
            return self._resolve_channel(host, name, None, self.templar.scope(layers))
        finally:
            self.problems = saved

    def jobs_for(self, play: Play, host: str) -> list[Job]:
        self._plays[play.name] = play
        play_scope = self.templar.scope([self._vars(host), play.vars, self.selection.extra_vars])
        jobs = []
        for task in play.tasks:
            if not self._selected(play, task):
                continue
            key = (task.kind, task.plugin)
            if key not in self._plugin_errors:
                self._plugin_errors[key] = _plugin_error(self.registry, task.kind, task.plugin)
            if self._plugin_errors[key]:
                if (
                    self.selection.broken_plugins_run
                    and self.registry.has(task.kind, task.plugin)
                    and task.plugin not in self.registry.duplicates(task.kind)
                ):
                    self.problems.warn(task.plugin_loc, self._plugin_errors[key])
                    jobs.append(self._broken_job(play, host, task, self._plugin_errors[key], play_scope))
                else:
                    self.problems.add(task.plugin_loc, self._plugin_errors[key])
                continue
            scope = play_scope.child([task.vars, self.selection.extra_vars]) if task.vars else play_scope
            job = self._job(play, host, task, scope)
            if job is not None:
                jobs.append(job)
        return jobs

    def _broken_job(self, play: Play, host: str, task: Task, error: str, scope: VarScope) -> Job:
        name = task.name if not has_template(task.name) else task.plugin
        # its channels still matter: the task is UNKNOWN, and that is an alert like any other
        channels = [c for n, loc in zip(task.notify, task.notify_locs)
                    if (c := self._resolve_channel(host, n, loc, scope)) is not None]
        return Job(
            kind=task.kind, play=play.name, host=host, name=name, plugin_name=task.plugin, plugin=type(None),
            options=None, context=TaskContext(task=name, host=host, play=play.name), task=task, load_error=error,
            notify=channels,
        )

    def _render(self, value: Any, scope: VarScope, loc: Location | None, what: str) -> tuple[Any, bool]:
        if not has_template(value):
            return value, True
        try:
            return self.templar.render(value, scope), True
        except TemplateError as exc:
            self.problems.add(loc, f"{what}: {exc}")
            return None, False

    def _job(self, play: Play, host: str, task: Task, scope: VarScope) -> Job | None:
        plugin = self.registry.get(task.kind, task.plugin)
        ok = True
        name, good = self._render(task.name, scope, task.key_locs.get("name", task.loc), "name")
        ok &= good
        raw = task.options
        if raw is None:
            raw = {}
        elif isinstance(raw, str) and plugin.FREE_FORM:
            raw = {plugin.FREE_FORM: raw}
        if not isinstance(raw, dict):
            form = f" or a string for '{plugin.FREE_FORM}'" if plugin.FREE_FORM else ""
            self.problems.add(task.options_loc, f"options of {task.plugin!r} must be a mapping{form}")
            return None
        rendered, good = self._render(raw, scope, task.options_loc, f"{task.plugin} options")
        ok &= good
        options = None
        if good:
            options, errors = convert_options(plugin.Options, rendered)
            for error in errors:
                loc = _option_loc(raw, error.path, task.options_loc, error.at_key)
                self.problems.add(loc, f"{task.plugin}: {error.message}")
            ok &= not errors
        timeout, good = self._render(task.timeout, scope, task.key_locs.get("timeout"), "timeout")
        if good and has_template(task.timeout):
            try:
                timeout = parse_timeout(timeout)
            except ValueError as exc:
                self.problems.add(task.key_locs.get("timeout"), f"'timeout': {exc}")
                good = False
        ok &= good
        labels, good = self._render(task.labels, scope, task.key_locs.get("labels"), "labels")
        ok &= good
        severity, good = self._render(task.severity, scope, task.key_locs.get("severity"), "severity")
        ok &= good
        channels = []
        seen: set[str] = set()
        for channel_name, loc in zip(task.notify, task.notify_locs):
            if channel_name in seen:  # `notify: [hook, hook]` tells the channel once
                continue
            seen.add(channel_name)
            channel = self._resolve_channel(host, channel_name, loc, scope)
            if channel is None:
                ok = False
            else:
                channels.append(channel)
        if not ok:
            return None
        context = TaskContext(task=str(name), host=host, play=play.name, hostvars=scope, timeout=float(timeout),
                              state_dir=self.selection.state_dir)
        return Job(
            kind=task.kind,
            play=play.name,
            host=host,
            name=str(name),
            plugin_name=task.plugin,
            plugin=plugin,
            options=options,
            context=context,
            task=task,
            notify=channels,
            labels={str(k): str(v) for k, v in (labels or {}).items()},
            severity=severity,
        )

    def every_channel(self, host: str) -> None:
        """Resolve (and so validate) every channel in the host's `channels`, used by a task or not."""
        if host in self._channels_checked:
            return
        self._channels_checked.add(host)
        scope = self.templar.scope([self._vars(host), self.selection.extra_vars])
        channels = scope.raw("channels") or {}
        if not isinstance(channels, Mapping):
            return  # said where it is used
        for name in channels:
            loc = channels.key_loc(name) if isinstance(channels, LocDict) else None
            self._resolve_channel(host, str(name), loc, scope)

    def _resolve_channel(self, host: str, name: str, loc: Location | None, scope: VarScope) -> Channel | None:
        # play and task vars may override `channels` like any variable, so it is read from the scope
        channels = scope.raw("channels") or {}
        if not isinstance(channels, Mapping):
            self.problems.add(getattr(channels, "loc", loc), "'channels' must be a mapping of channel names")
            return None
        if name not in channels:
            if (loc, name) in self._unknown_channels:
                return None  # said once for this line, not once per host
            self._unknown_channels.add((loc, name))
            known = sorted(map(str, channels))
            hint = difflib.get_close_matches(name, known, n=1)
            self.problems.add(
                loc,
                f"unknown channel {name!r} for host {host!r}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
                + (f" (channels: {', '.join(known)})" if known else " (no 'channels' in the inventory vars)"),
            )
            return None
        spec_loc = channels.value_loc(name) if isinstance(channels, LocDict) else loc
        spec, good = self._render(channels[name], scope, spec_loc, f"channel {name!r}")
        if not good:
            return None
        notifier, options = _channel_spec(spec)
        if notifier is None:
            self.problems.add(
                spec_loc,
                f"channel {name!r} must be an Apprise URL, a list of them, or a mapping {{NOTIFIER: {{options}}}}",
            )
            return None
        self.registry.load("notifier", [notifier])
        error = _plugin_error(self.registry, "notifier", notifier)
        if error:
            self.problems.add(spec_loc, f"channel {name!r}: {error}")
            return None
        plugin = self.registry.get("notifier", notifier)
        if options is None:
            options = {}
        elif isinstance(options, str) and plugin.FREE_FORM:
            options = {plugin.FREE_FORM: options}
        if not isinstance(options, dict):
            self.problems.add(spec_loc, f"channel {name!r}: options of {notifier!r} must be a mapping")
            return None
        converted, errors = convert_options(plugin.Options, options)
        raw_options = _channel_spec(channels[name])[1]
        for error in errors:
            # the message names the option, never its value: channel options hold secrets
            where = _option_loc(raw_options, error.path, spec_loc, error.at_key)
            self.problems.add(where, f"channel {name!r}: {notifier}: {error.message.split(', got')[0]}")
        if errors:
            return None
        config_problems = getattr(plugin, "config_problems", None)
        if self.selection.check_schedules and config_problems is not None:
            for problem in config_problems(converted):
                self.problems.add(spec_loc, f"channel {name!r}: {problem}")
        fallback, fallback_after = None, 3
        if isinstance(spec, Mapping):
            fallback = spec.get("fallback")
            fallback_after = spec.get("fallback_after", 3)
            if fallback is not None and (not isinstance(fallback, str) or fallback == name or fallback not in channels):
                self.problems.add(spec_loc, f"channel {name!r}: 'fallback' must name another channel, got {fallback!r}")
                return None
            if isinstance(fallback_after, bool) or not isinstance(fallback_after, int) or fallback_after < 1:
                self.problems.add(spec_loc, f"channel {name!r}: 'fallback_after' must be a whole number of at least 1")
                return None
        return Channel(name=name, notifier=notifier, plugin=plugin, options=converted, fallback=fallback,
                       fallback_after=fallback_after)


def _var_loc(inventory: Inventory, host: str, name: str) -> Location | None:
    """Where a variable was written, as far as the inventory remembers (group or host vars)."""
    for layer in [*reversed(inventory.host_vars.get(host, [])), inventory.hosts.get(host) and inventory.hosts[host].vars,
                  *(g.vars for g in reversed([inventory.groups[n] for n in inventory.groups_of(host)]))]:
        if isinstance(layer, LocDict) and name in layer:
            return layer.value_loc(name)
    return None


def _channel_spec(spec: Any) -> tuple[str | None, Any]:
    if isinstance(spec, str) and "://" in spec:
        return "apprise", {"urls": [spec]}
    if isinstance(spec, list) and spec and all(isinstance(u, str) and "://" in u for u in spec):
        return "apprise", {"urls": list(spec)}
    if isinstance(spec, Mapping):
        notifiers = [k for k in spec if k not in CHANNEL_KEYS]
        if len(notifiers) == 1:
            return str(notifiers[0]), spec[notifiers[0]]
    return None, None


#: keys of a channel mapping besides its notifier: `{apprise: {...}, fallback: chat, fallback_after: 3}`
CHANNEL_KEYS = ("fallback", "fallback_after")


def _option_loc(raw: Any, path: tuple[str | int, ...], default: Location | None, at_key: bool) -> Location | None:
    loc = default
    node = raw
    for part in path:
        if isinstance(node, LocDict) and part in node:
            loc = node.key_loc(part) if at_key and part == path[-1] else node.value_loc(part)
            node = node[part]
        elif isinstance(node, LocList) and isinstance(part, int) and part < len(node):
            loc = node.item_loc(part)
            node = node[part]
        elif isinstance(node, LocDict):
            loc = node.key_loc(part) if part in node.key_locs else loc
            break
        else:
            break
    return loc


def resolve_channel_for(
    inventory: Inventory, host: str, name: str, registry: Registry, templar: Templar, problems: Problems
) -> Channel | None:
    """A channel as the inventory alone configures it for `host` (no play or task vars), validated as
    `run` validates it: for `ce-agent notify test`. None, with the reason in `problems`, when it cannot be used."""
    builder = _Builder(inventory, registry, templar, Selection(), problems)
    return builder._resolve_channel(host, name, None, templar.scope([builder._vars(host)]))
