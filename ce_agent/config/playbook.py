"""Playbooks: plays and their tasks (a task names its plugin by key), read with locations, unrendered."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_agent.config.yamlfile import LocDict, LocList, load_yaml
from ce_agent.durations import parse_duration, parse_interval, parse_timeout
from ce_agent.errors import Location, Problems, UserError

PLAY_KEYS = ("name", "hosts", "vars", "checks", "collectors", "tags", "alerts", "slos")
# Keys the later alerting and SLO features own; read and kept, not evaluated by `run` yet.
PLAY_KEYS_NOT_YET: tuple[str, ...] = ()
TASK_KEYS = (
    "name", "schedule", "interval", "jitter", "timezone", "timeout", "retries", "regression", "notify", "tags", "labels", "severity", "vars", "depends_on",
    "isolate", "disable_after_errors",
)
#: plugin errors (raised, timed out) are counted over this many latest runs of a task
ERROR_WINDOW = 10
RULE_KEYS = ("name", "expr", "for", "keep_firing_for", "severity", "labels", "annotations", "notify", "tags")
SEVERITIES = ("info", "warning", "critical", "page", "ticket")
DEFAULT_TIMEOUT = 30.0
HISTORY_DAYS = 30  # how long results are kept (store.prune's default)
_RULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Task:
    """One check or collector of a play, as written (templates not yet rendered)."""

    kind: str
    plugin: str
    name: str
    options: Any
    loc: Location | None
    options_loc: Location | None
    plugin_loc: Location | None = None
    schedule: str | None = None
    interval: float | None = None
    jitter: float = 0.0
    timezone: str | None = None
    regression: Any = None  # ce_agent.baseline.RegressionRule
    timeout: Any = DEFAULT_TIMEOUT
    retries: int = 1
    notify: list[str] = field(default_factory=list)
    notify_locs: list[Location | None] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    isolate: bool = False  # run the plugin in a child process of its own (runner._run_isolated)
    disable_after_errors: int | None = None  # plugin errors in the last ERROR_WINDOW runs that stop it
    key_locs: dict[str, Location | None] = field(default_factory=dict)


@dataclass
class AlertRule:
    """An `alerts:` rule of a play: a comparison on metrics of its hosts (Prometheus alerting rules)."""

    name: str
    expr: Any  # ce_agent.alerting.expr.Expr
    loc: Location | None
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    severity: str = "warning"
    labels: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    notify: list[str] = field(default_factory=list)
    notify_locs: list[Location | None] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


@dataclass
class Play:
    """A play: which hosts, with which variables, run which checks and collectors."""

    name: str
    hosts: str
    loc: Location | None
    hosts_loc: Location | None
    vars: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    rules: list[AlertRule] = field(default_factory=list)
    slos: list[Any] = field(default_factory=list)  # ce_agent.slo.SLO
    slo_notify_locs: dict[str, Location | None] = field(default_factory=dict)  # channel -> where an SLO names it
    file: str = ""


def load_playbook(path: Path, problems: Problems) -> list[Play]:
    """Read a playbook file into plays; every problem found is added to `problems`."""
    try:
        data = load_yaml(path, "playbook")
    except UserError as exc:
        problems.items.append(exc.problem)
        return []
    file_loc = Location(str(path), 1, 1)
    if data is None:
        problems.add(file_loc, "the playbook is empty; expected a list of plays")
        return []
    if not isinstance(data, list):
        problems.add(getattr(data, "loc", file_loc), "a playbook must be a list of plays (each starting with '- name:')")
        return []
    plays = []
    for index, raw in enumerate(data):
        loc = data.item_loc(index) if isinstance(data, LocList) else file_loc
        play = _read_play(raw, loc, problems, str(path))
        if play is not None:
            plays.append(play)
    return plays


def _read_play(raw: Any, loc: Location | None, problems: Problems, file: str) -> Play | None:
    if not isinstance(raw, LocDict):
        problems.add(loc, "a play must be a mapping with at least 'hosts' and 'checks' or 'collectors'")
        return None
    for key in raw:
        if key not in PLAY_KEYS:
            hint = difflib.get_close_matches(str(key), PLAY_KEYS, n=1)
            problems.add(raw.key_loc(key), f"unknown play key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                         + f"; valid keys: {', '.join(PLAY_KEYS)}")
    for key in PLAY_KEYS_NOT_YET:
        if key in raw:
            problems.warn(raw.key_loc(key), f"'{key}' in a play is read but not evaluated by this version")
    name = _string(raw, "name", problems) or ""
    hosts = _string(raw, "hosts", problems)
    if hosts is None or not hosts.strip():
        if "hosts" not in raw:
            problems.add(raw.loc, f"play {name or '(unnamed)'!r} has no 'hosts' (a host, a group, 'all' or a pattern)")
        elif hosts is not None or raw.get("hosts") is None:
            problems.add(raw.value_loc("hosts"), "'hosts' is empty: name a host, a group, 'all' or a pattern")
        hosts = ""
    play = Play(name=name or hosts, hosts=hosts, loc=raw.loc, hosts_loc=raw.value_loc("hosts"), file=file)
    play.vars = _mapping(raw, "vars", problems)
    play.tags = _string_list(raw, "tags", problems)[0]
    for kind, key in (("check", "checks"), ("collector", "collectors")):
        items = raw.get(key)
        if items is None:
            continue
        if not isinstance(items, LocList):
            problems.add(raw.value_loc(key), f"'{key}' must be a list of tasks")
            continue
        for index, item in enumerate(items):
            task = _read_task(kind, item, items.item_loc(index), problems)
            if task is not None:
                play.tasks.append(task)
    _check_dependencies(play, problems)
    rules = raw.get("alerts")
    if rules is not None:
        if not isinstance(rules, LocList):
            problems.add(raw.value_loc("alerts"), "'alerts' must be a list of rules (name, expr, ...)")
        else:
            for index, item in enumerate(rules):
                rule = _read_rule(item, rules.item_loc(index), problems)
                if rule is not None:
                    play.rules.append(rule)
    if "slos" in raw:
        from ce_agent.slo import parse_slos

        slos, errors = parse_slos(raw["slos"], "slos", check_names={t.name for t in play.tasks if t.kind == "check"})
        for path, message in errors:
            problems.add(_path_loc(raw, path), f"{path}: {message}")
        for index, slo in enumerate(slos):
            if slo.window_s > HISTORY_DAYS * 86400:
                problems.warn(_path_loc(raw, f"slos[{index}].window"),
                              f"slos[{index}].window: {slo.window} is longer than the {HISTORY_DAYS} days of history "
                              "kept: it is measured on those")
            for path, names in ((f"slos[{index}].notify", slo.notify),
                                (f"slos[{index}].budget_policy.notify", slo.budget_policy.notify if slo.budget_policy else ())):
                for name in names:
                    play.slo_notify_locs.setdefault(name, _path_loc(raw, _item_path(raw, path, name)))
        play.slos = slos
    if not play.tasks and not play.rules and not play.slos and not any(k in raw for k in PLAY_KEYS_NOT_YET):
        problems.warn(raw.loc, f"play {play.name!r} has no checks, collectors or alerts")
    return play


def _item_path(raw: LocDict, path: str, name: str) -> str:
    """`path` down to the list item holding channel `name` when `notify:` is a list (else `path`)."""
    node = _path_node(raw, path)
    if isinstance(node, LocList) and name in node:
        return f"{path}[{list(node).index(name)}]"
    return path


def _path_node(raw: LocDict, path: str) -> Any:
    node: Any = raw
    for token in re.findall(r"\[\d+\]|[^.\[\]]+", path):
        if token.startswith("[") and isinstance(node, LocList) and int(token[1:-1]) < len(node):
            node = node[int(token[1:-1])]
        elif isinstance(node, LocDict) and token in node:
            node = node[token]
        else:
            return None
    return node


def _path_loc(raw: LocDict, path: str) -> Location | None:
    """The location of `slos[0].sli.good` in a play: the deepest part of the path that exists."""
    node: Any = raw
    loc = raw.loc
    for token in re.findall(r"\[\d+\]|[^.\[\]]+", path):
        if token.startswith("[") and isinstance(node, LocList):
            index = int(token[1:-1])
            if index >= len(node):
                break
            loc, node = node.item_loc(index) or loc, node[index]
        elif isinstance(node, LocDict) and token in node:
            loc, node = node.value_loc(token) or loc, node[token]
        else:
            break
    return loc


def _check_dependencies(play: Play, problems: Problems) -> None:
    """`depends_on` names checks of the same play; a check cannot wait on itself, even in a loop."""
    checks = {t.name: t for t in play.tasks if t.kind == "check"}
    for task in play.tasks:
        where = task.key_locs.get("depends_on", task.loc)
        for parent in task.depends_on:
            if parent == task.name:
                problems.add(where, f"depends_on: {task.name!r} cannot depend on itself")
            elif parent not in checks:
                close = difflib.get_close_matches(parent, list(checks), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.add(where, f"depends_on: no check named {parent!r} in play {play.name!r}{hint}")
    reported: set[frozenset[str]] = set()
    for start in checks:
        path, node = [start], start
        while True:
            parents = [p for p in checks[node].depends_on if p in checks and p != node]
            if not parents:
                break
            node = parents[0]
            if node in path:
                loop = path[path.index(node):] + [node]
                if frozenset(loop) not in reported:
                    reported.add(frozenset(loop))
                    task = checks[loop[0]]
                    problems.add(task.key_locs.get("depends_on", task.loc), "depends_on loop: " + " -> ".join(loop))
                break
            path.append(node)


def _read_rule(raw: Any, loc: Location | None, problems: Problems) -> AlertRule | None:
    if not isinstance(raw, LocDict):
        problems.add(loc, "an alert rule must be a mapping with 'name' and 'expr'")
        return None
    ok = True
    for key in raw:
        if key not in RULE_KEYS:
            close = difflib.get_close_matches(str(key), RULE_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.add(raw.key_loc(key), f"unknown alert rule key {key!r}{hint}; valid keys: {', '.join(RULE_KEYS)}")
            ok = False
    name = _string(raw, "name", problems)
    if not name or not _RULE_NAME.match(name):
        where = raw.value_loc("name") if "name" in raw else raw.loc
        problems.add(where, f"an alert rule needs a 'name' like HighMemory (letters, digits, _), got {name!r}")
        ok = False
    text = _string(raw, "expr", problems)
    expr = None
    if text is None:
        problems.add(raw.loc, "an alert rule needs an 'expr' such as 'system_memory_used_percent > 90'")
        ok = False
    else:
        from ce_agent.alerting.expr import parse_expr

        try:
            expr = parse_expr(text)
        except ValueError as exc:
            problems.add(raw.value_loc("expr"), f"'expr': {exc}")
            ok = False
    durations = {}
    for key in ("for", "keep_firing_for"):
        try:
            durations[key] = parse_duration(raw[key]) if key in raw else 0.0
        except ValueError as exc:
            problems.add(raw.value_loc(key), f"'{key}': {exc}")
            ok = False
    severity = _string(raw, "severity", problems) or "warning"
    if severity not in SEVERITIES:
        problems.add(raw.value_loc("severity"), f"'severity' must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        ok = False
    notify, notify_locs = _string_list(raw, "notify", problems)
    for reserved in ("alertname", "host", "play", "severity", "check"):
        if reserved in (raw.get("labels") or {}):
            problems.add(raw.value_loc("labels"), f"labels: {reserved!r} is set by ce-agent"
                         + (" (use 'severity:' on the rule)" if reserved == "severity" else ""))
            ok = False
    if not ok:
        return None
    return AlertRule(
        name=str(name), expr=expr, loc=raw.loc, for_s=durations["for"], keep_firing_for_s=durations["keep_firing_for"],
        severity=severity, labels=_mapping(raw, "labels", problems), annotations=_mapping(raw, "annotations", problems),
        notify=notify, notify_locs=notify_locs, tags=_string_list(raw, "tags", problems)[0],
    )


def _read_task(kind: str, raw: Any, loc: Location | None, problems: Problems) -> Task | None:
    if not isinstance(raw, LocDict):
        problems.add(loc, f"a {kind} must be a mapping such as '- name: Root disk' with 'disk: {{path: /}}' below it")
        return None
    for key in raw:
        if not isinstance(key, str):
            problems.add(raw.key_loc(key), f"{key!r} is not a plugin name: a task's keys are names such as 'disk' or 'timeout'")
            return None
    plugin_keys = [k for k in raw if k not in TASK_KEYS]
    typos = [(k, close[0]) for k in plugin_keys if (close := difflib.get_close_matches(k, TASK_KEYS, n=1, cutoff=0.75))]
    if len(plugin_keys) > 1 and typos:
        for key, close in typos:
            problems.add(raw.key_loc(key), f"unknown task key {key!r} (did you mean {close!r}?)")
        rest = [k for k in plugin_keys if k not in dict(typos)]
        if len(rest) != 1:
            return None
        # the one key left is the plugin: check it too, so one pass reports every error
        plugin_keys = rest
    if not plugin_keys:
        problems.add(raw.loc, f"this {kind} names no plugin: add a key such as 'disk: {{path: /}}' (task keys are {', '.join(TASK_KEYS)})")
        return None
    if len(plugin_keys) > 1:
        problems.add(
            raw.key_loc(plugin_keys[1]),
            f"a {kind} names one plugin, this one names {len(plugin_keys)}: {', '.join(map(str, plugin_keys))}",
        )
        return None
    plugin = plugin_keys[0]
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        problems.add(raw.value_loc("name"), "'name' must be a string")
        name = None
    task = Task(
        kind=kind,
        plugin=plugin,
        name=name or plugin,
        options=raw[plugin],
        loc=raw.loc,
        options_loc=raw.value_loc(plugin),
        plugin_loc=raw.key_loc(plugin),
        key_locs={k: raw.value_loc(k) for k in raw},
    )
    task.schedule = _string(raw, "schedule", problems)
    if "interval" in raw:
        try:
            task.interval = parse_interval(raw["interval"])
        except ValueError as exc:
            problems.add(raw.value_loc("interval"), f"'interval': {exc}")
    if "jitter" in raw:
        try:
            task.jitter = parse_duration(raw["jitter"])
        except ValueError as exc:
            problems.add(raw.value_loc("jitter"), f"'jitter': {exc}")
    task.timezone = _string(raw, "timezone", problems)
    if "regression" in raw:
        from ce_agent.baseline import parse_regression_rule

        try:
            task.regression = parse_regression_rule(raw["regression"])
        except ValueError as exc:
            problems.add(raw.value_loc("regression"), str(exc))
    if "timeout" in raw:
        task.timeout = raw["timeout"]
        if not _is_template(raw["timeout"]):
            try:
                task.timeout = parse_timeout(raw["timeout"])
            except ValueError as exc:
                problems.add(raw.value_loc("timeout"), f"'timeout': {exc}")
                task.timeout = DEFAULT_TIMEOUT  # reported; the rest of the task is still checked
    if "retries" in raw:
        retries = raw["retries"]
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            problems.add(raw.value_loc("retries"), f"'retries' must be a whole number of at least 1, got {retries!r}")
        else:
            task.retries = retries
    if "isolate" in raw:
        if not isinstance(raw["isolate"], bool):
            problems.add(raw.value_loc("isolate"), f"'isolate' must be true or false, got {raw['isolate']!r}")
        else:
            task.isolate = raw["isolate"]
    if "disable_after_errors" in raw:
        limit = raw["disable_after_errors"]
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= ERROR_WINDOW:
            problems.add(raw.value_loc("disable_after_errors"), "'disable_after_errors' must be a whole number from 1 "
                         f"to {ERROR_WINDOW} (plugin errors in the last {ERROR_WINDOW} runs), got {limit!r}")
        else:
            task.disable_after_errors = limit
    task.notify, task.notify_locs = _string_list(raw, "notify", problems)
    task.tags = _string_list(raw, "tags", problems)[0]
    task.labels = _mapping(raw, "labels", problems)
    task.depends_on = _string_list(raw, "depends_on", problems)[0]
    task.vars = _mapping(raw, "vars", problems)
    severity = _string(raw, "severity", problems)
    if severity is not None and not _is_template(severity) and severity not in SEVERITIES:
        problems.add(raw.value_loc("severity"), f"'severity' must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    task.severity = severity
    return task


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _string(raw: LocDict, key: str, problems: Problems) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        problems.add(raw.value_loc(key), f"'{key}' must be a string, got {_kind(value)}")
        return None
    return str(value)


def _kind(value: Any) -> str:
    """What a YAML value is, in YAML's words."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    return type(value).__name__


def _string_list(raw: LocDict, key: str, problems: Problems) -> tuple[list[str], list[Location | None]]:
    value = raw.get(key)
    if value is None:
        return [], []
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
        return items, [raw.value_loc(key)] * len(items)
    if isinstance(value, LocList) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value], [value.item_loc(i) for i in range(len(value))]
    problems.add(raw.value_loc(key), f"'{key}' must be a list of names")
    return [], []


def _mapping(raw: LocDict, key: str, problems: Problems) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(raw.value_loc(key), f"'{key}' must be a mapping")
        return {}
    return value
