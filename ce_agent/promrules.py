"""`ce-agent export prometheus-rules`: the plays' alert rules and SLOs as Prometheus rule groups (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ce_agent.alerting.expr import Expr, format_number
from ce_agent.alerting.matchers import Matcher, is_label_name, quote
from ce_agent.contracts import Metric
from ce_agent.errors import Location, Problem, Problems
from ce_agent.metrics import Families

#: the series a `{check}` SLI counts: one sample per run, by status (the daemon's /metrics only)
CHECK_RUNS = "ce_check_runs_total"
#: recording rules: a threshold SLI's samples as 0/1, and each SLO's error ratio per window
GOOD_EVENT_RULE = "ce_slo:good_event:bool"
ERROR_RATIO_RULE = "ce_slo:sli_error:ratio_rate"  # + the window: ce_slo:sli_error:ratio_rate5m
#: the alerts of ce_agent.slo, with the labels it gives them
BURN_ALERT = "SLOBurnRate"
BUDGET_ALERT = "SLOErrorBudget"
SEVERITY_OF_BURN = {"page": "critical", "ticket": "warning"}
#: the aggregation an SLO's recorded series keep: one SLO per play and host, as ce-agent evaluates it
SLO_BY = ("host", "play")

_DURATION_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))
# what RE2 (Prometheus' regular expressions) has no equivalent for; Python's re accepts them
_PYTHON_ONLY_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?P=", "(?(", "(?>", "(?#")
_RE2_META = frozenset("\\.+*?()|[]{}^$")
# the two template forms ce-agent's annotations document, with or without spaces
_TEMPLATE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_VALUE = re.compile(r"^value$")
_LABEL = re.compile(r"""^labels\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(['"])([^'"]*)\2\s*\])$""")


class ExportError(Exception):
    """What cannot be expressed in PromQL: one `FILE:LINE:COL: message` line each."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = list(problems)

    @property
    def lines(self) -> list[str]:
        """Every problem, then their count (as `ce-agent validate` prints its errors)."""
        count = len(self.problems)
        return [*(str(p) for p in self.problems), f"{count} error{'s' if count != 1 else ''}"]


@dataclass(frozen=True, slots=True)
class Source:
    """One way a ce-agent metric name is exported: the sample name, the labels ce-agent adds to it
    (of which `host` stays on an alert), and each of the sample's own labels as renamed there."""

    kind: str  # "collector" (a collector's sample) or "perfdata" (a check's metric)
    metric: str  # as ce-agent names it
    name: str  # the sample name exported
    fixed: dict[str, str]  # label -> value in the selector (metric="NAME" for perfdata), or "" when not selected on
    renamed: dict[str, str]

    def label(self, own: str) -> str:
        """The exported name of the sample's own label `own` (`host` -> `exported_host`)."""
        return self.renamed.get(own, own)

    @property
    def dropped(self) -> tuple[str, ...]:
        """Labels an alert of ce-agent does not carry: which collector or check, the metric, the unit, the play."""
        return tuple(sorted(k for k in self.fixed if k != "host"))


def exported_as(kind: str, name: str, own_labels: Iterable[str] = ()) -> Source:
    """How ce-agent's exporter (ce_agent.metrics.Families, also behind the daemon's /metrics) names
    the sample `name` of a collector (kind "collector") or a check's perfdata (kind "perfdata"), and
    its own labels `own_labels`: taken from the exporter itself, by exporting one made-up sample."""
    labels = list(dict.fromkeys(own_labels))
    marks = {f"\x00{index}": label for index, label in enumerate(labels)}  # values no real label has
    built = Families(lambda text: text)
    job = SimpleNamespace(kind="check" if kind == "perfdata" else "collector", name="\x00task", host="\x00host",
                          play="\x00play", plugin_name="")
    sample = Metric(name, 1.0, "", {label: mark for mark, label in marks.items()})
    if kind == "perfdata":
        built.add_perfdata(SimpleNamespace(job=job, result=SimpleNamespace(metrics=[sample])))
    else:
        built.add_samples(SimpleNamespace(job=job, samples=[sample]))
    (family,) = built.by_name.values()
    ((series, _value),) = family.series.items()
    renamed = {marks[value]: label for label, value in series if value in marks}
    # the labels the exporter adds; perfdata names its metric in one (metric="NAME"), which is selected on
    fixed = {label: (value if value == name else "") for label, value in series if value not in marks}
    return Source(kind, name, family.sample_name, fixed, renamed)


def sources_of(name: str, kinds: Iterable[str], own_labels: Iterable[str] = ()) -> list[Source]:
    """The exported forms of metric `name` given the kinds of tasks ("collector", "check") that may
    produce it: a collector's sample first, then a check's perfdata."""
    kinds = set(kinds)
    order = (("collector", "collector"), ("check", "perfdata"))
    return [exported_as(form, name, own_labels) for task, form in order if task in kinds]


def selector(source: Source, matchers: Iterable[Matcher] = (), extra: Iterable[str] = ()) -> str:
    """`name{...}`: the metric-naming label (perfdata), `extra` matchers as written, then the sample's own."""
    parts = [f"{label}={quote(value)}" for label, value in source.fixed.items() if value]
    parts += list(extra)
    parts += [f"{source.label(m.name)}{m.op}{quote(m.value)}" for m in matchers]
    return source.name + ("{" + ", ".join(parts) + "}" if parts else "")


def host_matcher(hosts: Iterable[str]) -> str:
    """`host="a"`, or `host=~"a|b"` (RE2-escaped) for several."""
    names = sorted(set(hosts))
    if len(names) == 1:
        return f"host={quote(names[0])}"
    return "host=~" + quote("|".join("".join("\\" + c if c in _RE2_META else c for c in n) for n in names))


def re2_problem(pattern: str) -> str | None:
    """Why Python regex `pattern` (what ce-agent matches with) has no RE2 meaning (what Prometheus
    matches with), or None. Catches the Python-only constructs; RE2 reads the rest alike."""
    for group in _PYTHON_ONLY_GROUPS:
        if group in pattern:
            return f"{group}...) is a Python-only construct (lookaround, atomic group, conditional or comment)"
    pos, in_class = 0, False
    while pos < len(pattern) - 1:
        char = pattern[pos]
        if char == "\\":
            nxt = pattern[pos + 1]
            if nxt.isdigit() and nxt != "0" and not in_class:
                return f"\\{nxt} is a back-reference, which Prometheus' RE2 does not have"
            if nxt == "Z" and not in_class:
                return "\\Z is Python's end of text; Prometheus' RE2 writes it \\z"
            pos += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            pos += 2 if pattern[pos + 1] == "]" else 1  # a `]` first in a class is a literal one
            continue
        elif char in "*+?}" and pattern[pos + 1] == "+":
            return f"{pattern[pos:pos + 2]} is a possessive quantifier, which Prometheus' RE2 does not have"
        pos += 1
    return None


def translate_expr(expr: Expr, sources: Sequence[Source], hosts: Iterable[str]) -> str:
    """An `alerts:` expr in PromQL: per exported form, the series of the rule's hosts that meet the
    comparison, without the labels a ce-agent alert does not carry; the forms joined with `or`
    (a collector's sample wins over perfdata of the same labels). ValueError when it has no PromQL
    equivalent."""
    if not sources:
        raise ValueError(f"no check or collector runs on its hosts, so {expr.metric!r} is never exported")
    for matcher in expr.matchers:
        if matcher.op in ("=~", "!~") and (why := re2_problem(matcher.value)):
            raise ValueError(f"matcher {matcher}: {why}")
    hosts = list(hosts)
    extra = [host_matcher(hosts)] if hosts else []
    parts = [f"max without ({', '.join(s.dropped)}) ({selector(s, expr.matchers, extra)} {expr.op} "
             f"{format_number(expr.threshold)})" for s in sources]
    return " or ".join(parts)


def translate_template(text: str, constants: Mapping[str, str], sources: Sequence[Source]) -> str:
    """A rule annotation in Prometheus' template language: `{{ value }}` -> `{{ $value }}`, `{{ labels.X }}`
    -> `{{ $labels.X }}` (as exported), or the label's value when the rule gives it (alertname, play,
    severity, its `labels:`: Prometheus' $labels only has the series'). ValueError for anything else."""
    for opener in ("{%", "{#"):
        if opener in text:
            raise ValueError(f"{opener!r}: Jinja statements and comments have no Prometheus equivalent")
    out, pos = [], 0
    for found in _TEMPLATE.finditer(text):
        out.append(_literal(text[pos:found.start()]))
        pos = found.end()
        body = found.group(1)
        label = _LABEL.match(body)
        if _VALUE.match(body):
            out.append("{{ $value }}")
        elif label:
            name = label.group(1) or label.group(3)
            if name in constants:
                out.append(_literal(constants[name]))
                continue
            # the alert's host is the series' (ce-agent sets it over a sample's own `host` label)
            names = {"host"} if name == "host" else {exported_as(s.kind, s.metric, [name]).label(name) for s in sources}
            names = names or {name}
            if len(names) > 1:
                raise ValueError(f"{found.group(0)}: the label is named {' or '.join(sorted(names))} in the export")
            (exported,) = names
            out.append("{{ $labels." + exported + " }}" if is_label_name(exported) and not exported.startswith("__")
                       else "{{ index $labels " + _go_string(exported) + " }}")
        else:
            raise ValueError(f"{found.group(0)}: only {{{{ value }}}} and {{{{ labels.NAME }}}} have a Prometheus "
                             "equivalent")
    rest = text[pos:]
    out.append(_literal(rest))
    return "".join(out)


def _literal(text: str) -> str:
    """Text shown as is by a Go template: a `{{` in it would start an action."""
    return text.replace("{{", '{{ "{{" }}') if "{{" in text else text


def _go_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def prom_duration(seconds: float) -> str:
    """A duration as Prometheus writes it, exact to the millisecond: 90 -> 1m30s, 259200 -> 3d."""
    rest = round(seconds * 1000)
    if rest <= 0:
        return "0s"
    out = []
    for unit, size in _DURATION_UNITS:
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)


# ---- SLOs -----------------------------------------------------------------------------------------


def slo_windows(slo: Any) -> list[str]:
    """The windows an SLO's error ratio is recorded over: the burn-rate windows and its own."""
    from ce_agent.slo import BURN_WINDOWS

    windows = [prom_duration(seconds) for _label, seconds in BURN_WINDOWS]
    own = prom_duration(slo.window_s)
    return windows if own in windows else [*windows, own]


def slo_rules(slo: Any, play: str, kinds: Iterable[str]) -> list[dict[str, Any]]:
    """An SLO's recording rules (its error ratio per window, by host) and its burn-rate and budget
    alerts, as ce_agent.slo evaluates them. ValueError when its metric is never exported."""
    from ce_agent.slo import BURN_RULES, CheckSLI, RatioSLI, ThresholdSLI

    sli = slo.sli
    own = [k for k, _v in slo.labels]
    ids = {"slo": slo.name}
    by = f"sum by ({', '.join(SLO_BY)})"
    rules: list[dict[str, Any]] = []

    def scope(source: Source) -> list[str]:
        """The play's series, with the SLO's `labels:` under their exported names."""
        return [f"play={quote(play)}", *(f"{source.label(k)}={quote(v)}" for k, v in slo.labels)]

    if isinstance(sli, CheckSLI):
        runs = f"{CHECK_RUNS}{{check={quote(sli.check)}, play={quote(play)}"
        ratio = {w: f"{by} (rate({runs}, status!=\"ok\"}}[{w}])) / {by} (rate({runs}}}[{w}]))"
                 for w in slo_windows(slo)}
    elif isinstance(sli, ThresholdSLI):
        sources = sources_of(sli.metric, kinds, own)
        if not sources:
            raise ValueError(f"sli.metric: the play has no check or collector, so {sli.metric!r} is never exported")
        good = " or ".join(f"({selector(s, (), scope(s))} {sli.op} bool {format_number(sli.threshold)})"
                           for s in sources)
        rules.append({"record": GOOD_EVENT_RULE, "expr": good, "labels": dict(ids)})
        events = f"{GOOD_EVENT_RULE}{{slo={quote(slo.name)}, play={quote(play)}}}"
        ratio = {w: f"1 - {by} (sum_over_time({events}[{w}])) / {by} (count_over_time({events}[{w}]))"
                 for w in slo_windows(slo)}
    elif isinstance(sli, RatioSLI):
        counters = {}
        for key in ("good", "total"):
            sources = sources_of(getattr(sli, key), kinds, own)
            if not sources:
                raise ValueError(f"sli.{key}: the play has no check or collector, so {getattr(sli, key)!r} "
                                 "is never exported")
            counters[key] = sources
        ratio = {}
        for w in slo_windows(slo):
            good, total = (" or ".join(f"rate({selector(s, (), scope(s))}[{w}])" for s in counters[k])
                           for k in ("good", "total"))
            # counters read a moment apart can show more good than total events: no negative error
            ratio[w] = f"clamp(1 - {by} ({good}) / {by} ({total}), 0, 1)"
    else:  # pragma: no cover - parse_slos gives only these three
        raise ValueError(f"unknown SLI {sli!r}")
    rules += [{"record": ERROR_RATIO_RULE + w, "expr": expr, "labels": dict(ids)} for w, expr in ratio.items()]

    budget = format_number(slo.budget)
    alert_ids = {"slo": _literal(slo.name)}  # an alerting rule's labels are templates, a recording rule's not

    def burning(rule: Any) -> str:
        return " and ".join(f"{_ratio(slo, play, w)} / {budget} >= {format_number(rule.factor)}"
                            for w in (prom_duration(_seconds(rule.long)), prom_duration(_seconds(rule.short))))

    if slo.alerts:
        for index, rule in enumerate(BURN_RULES):
            expr = burning(rule)
            # one alert per SLO, as ce-agent raises it: the most urgent row that burns, the later rows only without it
            earlier = [f"({burning(r)})" for r in BURN_RULES[:index]]
            if earlier:
                expr = f"({expr}) unless " + " unless ".join(earlier)
            rules.append({
                "alert": BURN_ALERT,
                "expr": expr,
                "labels": {**alert_ids, "severity": SEVERITY_OF_BURN[rule.alert], "long_window": rule.long,
                           "short_window": rule.short},
                "annotations": {"summary": f'error budget burning at {{{{ printf "%.1f" $value }}}}x over {rule.long} '
                                           f"(at least {format_number(rule.factor)}x over {rule.short} too)"},
            })
    if slo.budget_policy is not None:
        below = slo.budget_policy.below
        rules.append({
            "alert": BUDGET_ALERT,
            # in percent, so that the summary can show it as ce-agent does (Prometheus' templates cannot multiply)
            "expr": f"100 * (1 - {_ratio(slo, play, prom_duration(slo.window_s))} / {budget}) < {100 * below:g}",
            "labels": {**alert_ids, "severity": "warning"},
            "annotations": {"summary": '{{ printf "%.0f" $value }}% of the error budget left, below the '
                                       f"policy's {100 * below:g}%"},
        })
    return rules


def _ratio(slo: Any, play: str, window: str) -> str:
    return f"{ERROR_RATIO_RULE}{window}{{slo={quote(slo.name)}, play={quote(play)}}}"


def _seconds(text: str) -> float:
    from ce_agent.durations import parse_duration

    return parse_duration(text)


# ---- alert rules ----------------------------------------------------------------------------------


def alert_rule(rule: Any, play: str, hosts: Sequence[str], kinds: Iterable[str]) -> dict[str, Any]:
    """One `alerts:` rule as a Prometheus alerting rule. ValueError (with the key at fault) when it
    cannot be expressed."""
    expr: Expr = rule.expr
    sources = sources_of(expr.metric, kinds, [m.name for m in expr.matchers])
    try:
        promql = translate_expr(expr, sources, hosts)
    except ValueError as exc:
        raise ValueError(f"'expr': {exc}") from None
    labels = {"play": play, "severity": rule.severity}
    for key, value in rule.labels.items():
        key = str(key)
        if not is_label_name(key) or key.startswith("__"):
            raise ValueError(f"labels: {key!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no __ prefix)")
        labels[key] = str(value)  # as ce-agent makes a label of it: `true` is "True"
    constants = {"alertname": rule.name, **labels}
    annotations = {}
    for key, value in rule.annotations.items():
        key = str(key)
        if not is_label_name(key):
            raise ValueError(f"annotations: {key!r} is not a Prometheus annotation name ([a-zA-Z_][a-zA-Z0-9_]*)")
        try:
            annotations[key] = translate_template(str(value), constants, sources)
        except ValueError as exc:
            raise ValueError(f"annotations.{key}: {exc}") from None
    out: dict[str, Any] = {"alert": rule.name, "expr": promql}
    if rule.for_s > 0:
        out["for"] = prom_duration(rule.for_s)
    if rule.keep_firing_for_s > 0:
        out["keep_firing_for"] = prom_duration(rule.keep_firing_for_s)
    out["labels"] = {key: _literal(value) for key, value in labels.items()}  # Prometheus templates them; ce-agent not
    if annotations:
        out["annotations"] = annotations
    return out


# ---- the whole export -----------------------------------------------------------------------------


def rule_groups(plan: Any) -> list[dict[str, Any]]:
    """Every play with alert rules or SLOs as one rule group (named after the play): each SLO's
    recording rules then its alerts (a group evaluates in order), then the `alerts:` rules.
    ExportError listing every part that cannot be expressed."""
    problems = Problems()
    groups: list[dict[str, Any]] = []
    used: set[str] = set()
    tasks: dict[str, set[tuple[str, str]]] = {}  # host -> (play, kind) of its tasks
    for job in plan.jobs:
        tasks.setdefault(job.host, set()).add((job.play, job.kind))
    for play in plan.plays:
        rules: list[dict[str, Any]] = []
        slo_hosts = sorted(h for (p, h) in plan.slos if p == play.name)
        if play.slos and slo_hosts:
            kinds = {kind for host in slo_hosts for p, kind in tasks.get(host, ()) if p == play.name}
            for index, slo in enumerate(play.slos):
                try:
                    rules += slo_rules(slo, play.name, kinds)
                except ValueError as exc:
                    problems.add(slo_location(play, index), f"slos[{index}] {slo.name!r}: {exc}")
        hosts_of: dict[int, list[str]] = {}
        for (p, host), chosen in plan.rules.items():
            if p == play.name:
                for rule in chosen:
                    hosts_of.setdefault(id(rule), []).append(host)
        for rule in play.rules:
            hosts = hosts_of.get(id(rule))
            if not hosts:
                continue  # left out by tags, or the play matches no host
            kinds = {kind for host in hosts for _p, kind in tasks.get(host, ())}
            try:
                rules.append(alert_rule(rule, play.name, sorted(hosts), kinds))
            except ValueError as exc:
                problems.add(rule.loc, f"alert rule {rule.name!r}: {exc}")
        if rules:
            name, n = play.name, 1
            while name in used:  # group names are unique in a file; plays of two playbooks may share one
                n += 1
                name = f"{play.name} ({n})"
            used.add(name)
            groups.append({"name": name, "rules": rules})
    if problems:
        raise ExportError(sorted(problems.errors, key=_place))
    return groups


def _place(problem: Problem) -> tuple[str, int, int]:
    where = problem.location
    return ("", 0, 0) if where is None else (where.file, where.line, where.col)


def slo_location(play: Any, index: int) -> Location | None:
    """Where `slos[index]` of `play` is written (the play's own location when it cannot be read again)."""
    from ce_agent.config.yamlfile import LocDict, LocList, load_yaml
    from ce_agent.errors import UserError

    try:
        data = load_yaml(Path(play.file), "playbook") if play.file else None
    except UserError:
        data = None
    if isinstance(data, LocList):
        for position, raw in enumerate(data):
            if data.item_loc(position) == play.loc and isinstance(raw, LocDict):
                slos = raw.get("slos")
                if isinstance(slos, LocList) and index < len(slos):
                    return slos.item_loc(index) or play.loc
    return play.loc


def export(plan: Any, playbooks: Sequence[str], version: str) -> tuple[str, list[str]]:
    """The rule file of a loaded plan (ce_agent.plan.Plan) and warnings for stderr; ExportError when
    part of it has no PromQL form."""
    groups = rule_groups(plan)
    warnings = [] if groups else ["warning: no alert rules or SLOs in these plays: the rule file has no groups"]
    return render(groups, playbooks, version), warnings


def render(groups: list[dict[str, Any]], playbooks: Sequence[str], version: str) -> str:
    """The rule file: a comment saying where it comes from, then `groups:` in YAML."""
    import yaml

    class Dumper(yaml.SafeDumper):
        """Long expressions as they are, on one line; no aliases for repeated label maps."""

        def ignore_aliases(self, data: Any) -> bool:
            return True

    body = yaml.dump({"groups": groups}, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1 << 16,
                     default_flow_style=False)
    header = (f"# Prometheus rules from ce-agent {version}: ce-agent export prometheus-rules {' '.join(playbooks)}\n"
              "# They query the series as ce-agent exports them (docs/prometheus.md). Check: promtool check rules\n")
    return header + body
