"""One pass of the agent, as `run` and `validate` do it: load and validate, run, notify, report."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_agent.config.templating import Templar, TemplateError
from ce_agent.config.yamlfile import parse_yaml
from ce_agent.contracts import Status, worst
from ce_agent.errors import ConfigError, FaultError, Problems, UserError
from ce_agent.plan import Plan, Selection, build_plan
from ce_agent.redact import Redactor
from ce_agent.registry import Registry
from ce_agent.runner import Outcome, execute


PRUNE_CHANCE = 0.05  # about one run in twenty trims the history to its retention


class InvalidConfig(Exception):
    """The playbooks or inventory have errors; `problems` lists every one of them."""

    def __init__(self, problems: Problems) -> None:
        super().__init__(f"{len(problems.errors)} error(s)")
        self.problems = problems


@dataclass
class Report:
    """What one pass produced."""

    outcomes: list[Outcome]
    deliveries: list[Any] = field(default_factory=list)  # outbox.Delivery
    routing: list[Any] = field(default_factory=list)  # pipeline.Planned: what each channel is told, or why not
    dropped: int = 0
    slos: list[tuple[str, str, str, dict[str, Any], float]] = field(default_factory=list)  # as store.slo_statuses()
    state_lost: str | None = None  # the state could not be written: what was not kept, and why (one line)

    @property
    def worst(self) -> Status:
        return worst(o.result.status for o in self.outcomes if o.job.kind == "check" or o.result.status is not Status.OK)


def parse_extra_vars(values: list[str]) -> dict[str, Any]:
    """Ansible's `-e`: `k=v k2=v2` (strings), `@file.yml`, or an inline YAML/JSON mapping."""
    out: dict[str, Any] = {}
    for value in values:
        text = value.strip()
        if text.startswith("@"):
            from ce_agent.config.yamlfile import load_yaml

            data = load_yaml(Path(text[1:]), "extra-vars file")
            if not isinstance(data, Mapping):
                raise UserError(f"-e {value}: the file must hold a mapping of variables")
            out.update(data)
        elif text.startswith("{"):
            data = parse_yaml(text, "-e")
            if not isinstance(data, Mapping):
                raise UserError(f"-e {value!r}: expected a mapping")
            out.update(data)
        else:
            import shlex

            try:
                words = shlex.split(text)
            except ValueError as exc:
                raise UserError(f"-e {value!r}: {exc}") from None
            for word in words:
                key, sep, val = word.partition("=")
                if not sep or not key.isidentifier():
                    raise UserError(f"-e {word!r}: expected NAME=VALUE, @FILE or a YAML mapping")
                out[key] = val
    return out


def load(
    playbooks: list[Path],
    inventories: list[Path],
    selection: Selection,
    registry: Registry,
    redactor: Redactor,
    environ: Mapping[str, str] | None = None,
) -> tuple[Plan, Problems]:
    """Everything loaded and validated; InvalidConfig when anything is wrong."""
    templar = Templar(os.environ if environ is None else environ, redactor.add_lookup)
    problems = Problems()
    plan = build_plan(playbooks, inventories, registry, templar, selection, problems)
    for job in plan.jobs:
        for channel in job.notify:
            for url in getattr(channel.options, "urls", None) or []:
                redactor.add_url(url)
    if problems:
        raise InvalidConfig(problems)
    return plan, problems


def load_or_explain(playbooks: list[Path], inventories: list[Path], selection: Selection,
                    environ: Mapping[str, str] | None = None) -> tuple[Plan, Redactor, list[str]]:
    """(plan, redactor, warnings), or ConfigError whose lines are every problem (sorted by file and
    line, secrets masked) and then their count."""
    redactor = Redactor()
    try:
        plan, problems = load(playbooks, inventories, selection, Registry(), redactor, environ)
    except InvalidConfig as exc:
        errors = exc.problems.lines(warnings=False)
        lines = [redactor.scrub(line) for line in sorted(exc.problems.lines(warnings=True) + errors, key=_by_place)]
        raise ConfigError([*lines, f"{len(errors)} error{'s' if len(errors) != 1 else ''}"]) from None
    except UserError as exc:
        raise ConfigError([redactor.scrub(f"error: {exc}")]) from None
    return plan, redactor, [redactor.scrub(w) for w in problems.lines(warnings=True)]


def _by_place(line: str) -> tuple[str, int, int]:
    """Sort key for printed problems: file, then line and column numbers."""
    import re

    match = re.match(r"^(.*?):(\d+):(\d+): ", line)
    return (match[1], int(match[2]), int(match[3])) if match else ("", 0, 0)


def open_store(state_dir: Path | None, now: float, read_only: bool = False) -> tuple[Any, list[str]]:
    """The state store; when the state directory cannot be used, a temporary one (said in a notice).

    `read_only` (`--check`) never creates a state directory: without one, it starts from no state."""
    import atexit
    import shutil
    import tempfile

    from ce_agent.store import Store, StoreError, default_state_dir

    def scratch(prefix: str) -> Path:
        # a database for this run only: removed when the process exits, not left in /tmp by every run
        path = Path(tempfile.mkdtemp(prefix=prefix))
        atexit.register(shutil.rmtree, path, True)
        return path

    directory = state_dir or default_state_dir(os.environ, os.geteuid(), Path.home())
    if read_only and not (directory / "state.db").exists():
        return Store.open(scratch("ce-agent-check-") / "state.db", now)
    try:
        return Store.open(directory / "state.db", now)
    except StoreError as exc:
        store, notices = Store.open(scratch("ce-agent-state-") / "state.db", now)
        return store, [f"warning: {exc}; alert state is kept only for this run", *notices]


def run(
    plan: Plan,
    redactor: Redactor,
    store: Any,
    forks: int = 10,
    check_mode: bool = False,
    clock: Callable[[], float] = time.time,
) -> Report:
    """One pass: deliver what earlier runs left in the outbox, run every job, record the results,
    evaluate the alerts, queue what each channel must be told, and deliver it.

    In check mode nothing is written or sent: the notifications are only rendered. When the state
    cannot be written midway, the pass carries on in memory and `Report.state_lost` says so."""
    carry = Carrying(store)
    try:
        return _run(plan, redactor, carry, forks, check_mode, clock)
    finally:
        if carry.store is not store:
            carry.store.close()  # the copy in memory; the caller closes its own


class Carrying:
    """The store a pass writes to: the state database, or, once writing it failed (disk full,
    read-only, locked for too long), a copy of it in memory, so the pass still evaluates its alerts
    and sends its notifications; `lost` says why the state was not kept."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.lost: str | None = None

    def write(self, step: Callable[[Any], Any]) -> Any:
        """`step(store)`; when the state fails, again on the copy in memory (the failed transaction
        was rolled back, so the copy is the state as it was before the step)."""
        try:
            return step(self.store)
        except FaultError as exc:
            if getattr(self.store, "in_memory", True):
                raise
            self.fall_back(exc)
            return step(self.store)

    def fall_back(self, exc: BaseException) -> None:
        if not getattr(self.store, "in_memory", True):
            self.lost = str(exc)
            self.store = self.store.memory_copy()

    def flushed(self, report: Any) -> list[Any]:
        """A flush's deliveries; after a state failure, those sent but not recorded leave the copy's outbox."""
        if report.state_error is not None:
            self.fall_back(report.state_error)
            for delivery in report.attempted:
                if delivery.unsaved is not None and delivery.item_id is not None:
                    self.store.delivered(delivery.item_id)
        return list(report.attempted)


def _run(plan: Plan, redactor: Redactor, carry: Carrying, forks: int, check_mode: bool,
         clock: Callable[[], float]) -> Report:
    from ce_agent import outbox
    from ce_agent.alerting import pipeline
    scrub = redactor.scrub
    deliveries: list[outbox.Delivery] = []
    if not check_mode:
        deliveries += carry.flushed(outbox.flush(carry.store, plan.resolve_channel, scrub, clock(), plan.delivery))
    outcomes = execute(plan.jobs, forks=forks, scrub=scrub)
    now = clock()
    if not check_mode:
        carry.write(lambda s: record_outcomes(s, outcomes, now, plan.sample_history))
    store = carry.store
    stored = store.load_alerts()
    inputs = _alert_inputs(plan, outcomes, stored, redactor, store, now)
    slo_rows: list[tuple[str, str, str, dict[str, Any], float]] = []
    if plan.slos:
        slo_alerts, slo_rows = carry.write(lambda s: slo_inputs(plan, s, stored, now, save=not check_mode))
        inputs += slo_alerts
        store = carry.store
    previous = {key: pipeline.state_from_json(state) for key, (_labels, state) in stored.items()}
    silenced = pipeline.silence_matcher(store.silences(now), now)
    group_sent = lambda group, channel: (store.notified(group, channel) or {}).get("last_sent")  # noqa: E731
    evaluation = pipeline.evaluate(inputs, previous, plan.alerting, store.notified, group_sent, silenced, now, scrub,
                                   {key: labels for key, (labels, _state) in stored.items()},
                                   pipeline.resend_lookup(plan.resolve_channel),
                                   lambda group, channel: store.queued(channel, group))
    report = Report(outcomes, deliveries, evaluation.planned, slos=slo_rows)
    if check_mode:
        report.deliveries = [outbox.Delivery(n[0], n[0].channel) for n in evaluation.notifications]
        return report
    report.dropped = carry.write(lambda s: persist(s, plan, evaluation, inputs, now))
    if random.random() < PRUNE_CHANCE:  # retention: cheap enough now and then, wasteful on every cron run
        carry.write(lambda s: s.prune(now))
    report.deliveries += carry.flushed(outbox.flush(carry.store, plan.resolve_channel, scrub, clock(), plan.delivery))
    if carry.lost is not None:
        waiting = carry.store.outbox_depth()
        kept = f"results, alert states and {waiting} notification(s) still to deliver" if waiting else \
            "results and alert states"
        report.state_lost = (f"the state could not be written ({carry.lost}); this run carried on in memory: "
                             f"its {kept} were not kept")
    return report


def record_outcomes(store: Any, outcomes: Sequence[Outcome], now: float, history: frozenset[str] = frozenset()) -> None:
    """Checks' results into the history; collectors' samples as each series' newest value (and over
    time for the names in `history`)."""
    from ce_agent.store import ResultRow, SampleRow

    with store.transaction():
        store.add_results([
            ResultRow(now, o.job.play, o.job.host, o.job.name, o.job.plugin_name, int(o.result.status),
                      o.result.summary, o.duration_s, [m.as_dict() for m in o.result.metrics])
            for o in outcomes if o.job.kind == "check"
        ])
        store.add_samples([
            SampleRow(now, o.job.play, o.job.host, o.job.name, str(m.name), {str(k): str(v) for k, v in m.labels.items()},
                      m.value if isinstance(m.value, (int, float)) and not isinstance(m.value, bool) else None, m.unit)
            for o in outcomes if o.job.kind == "collector" for m in o.samples
        ], history)


def textfile_metrics(plan: Plan, store: Any, scrub: Callable[[str], str], slos: Sequence[Any]) -> str:
    """`run --textfile-dir`'s file: the newest stored value of every series in the state (so cron jobs
    running different playbooks or tags with one state and one textfile keep each other's series), but
    not those of tasks a play loaded here no longer defines (a removed check does not linger)."""
    from ce_agent.metrics import render_stored

    defined = defined_names(plan)

    def kept(play: str, name: str) -> bool:
        return play not in defined or name in defined[play]

    results = [r for r in store.latest_results() if kept(r.play, r.check)]
    samples = [s for s in store.latest_samples() if kept(s.play, s.collector)]
    return render_stored(results, samples, scrub, slos)


def evaluated_places(plan: Plan) -> set[tuple[str, str]]:
    """The (play, host) pairs the plan runs tasks, rules or SLOs on (where `vanished` may resolve)."""
    return {(job.play, job.host) for job in plan.jobs} | set(plan.rules) | set(plan.slos)


def defined_names(plan: Plan) -> dict[str, set[str]]:
    """Each play's task, rule and SLO names, selected or not (what `vanished` must not resolve); plays
    whose task names are templated are left out: an unselected task's name is not known here."""
    return {play.name: {t.name for t in play.tasks} | {r.name for r in play.rules} | {s.name for s in play.slos}
            for play in plan.plays if not any("{" in t.name for t in play.tasks)}


def slo_inputs(plan: Plan, store: Any, stored: Mapping[str, Any], now: float,
               save: bool) -> tuple[list[Any], list[tuple[str, str, str, dict[str, Any], float]]]:
    """Evaluate the plan's SLOs from the history: their burn-rate and budget alerts, and their statuses
    as (play, host, name, `slo status` JSON, now) rows (with `save`, also kept for `ce-agent slo status`)."""
    from ce_agent import slo
    from ce_agent.alerting import sources

    evaluated = slo.evaluate_stored(plan.slos, store, now)
    rows = [(play, host, s.slo.name, slo.as_json(s)) for play, host, s in evaluated]
    if save:
        store.save_slo_statuses(rows, now)
    alerts = sources.from_slos(evaluated, {key: labels for key, (labels, _state) in stored.items()})
    return alerts, [(*row, now) for row in rows]


def _alert_inputs(plan: Plan, outcomes: list[Outcome], stored: Mapping[str, Any], redactor: Redactor,
                  store: Any, now: float) -> list[Any]:
    """Every alert this run observed: checks, rules on this run's metrics, and removed ones."""
    from ce_agent.alerting import sources

    known = {key: labels for key, (labels, _state) in stored.items()}
    inputs = sources.from_checks(outcomes, known, scrub=redactor.scrub)
    inputs += sources.from_regressions(outcomes, store, now)
    if plan.rules:
        samples: dict[str, list[Any]] = {}
        for o in outcomes:
            samples.setdefault(o.job.host, []).extend(o.samples if o.job.kind == "collector" else o.result.metrics)
        inputs += sources.from_rules(plan.rules, samples, known, annotator(redactor))
    present = {a.key for a in inputs}
    ran = evaluated_places(plan)
    defined = defined_names(plan)
    return inputs + sources.vanished(known, present, ran, defined, store.channels_told_firing)


def persist(store: Any, plan: Plan, evaluation: Any, inputs: list[Any], now: float) -> int:
    """New states, history, what each channel is told and the notifications, in one transaction
    (a state change is written with the notification it causes); returns how many old ones dropped."""
    from ce_agent.alerting import pipeline

    labels_of = {a.key: a.labels for a in inputs}
    status_of = {a.key: a.observation.status for a in inputs}
    dropped = 0
    with store.transaction():
        for key, state in evaluation.states.items():
            store.save_alert(key, labels_of[key], pipeline.state_to_json(state), now)
            for event in evaluation.events.get(key, []) + evaluation.quiet.get(key, []):
                store.add_history(key, labels_of[key], event.kind, event.status, event.summary, event.at)
        for planned in evaluation.planned:
            if planned.kind in ("firing", "reminder", "resolved", "forget"):
                store.set_notified(planned.key, planned.channel, planned.kind in ("firing", "reminder"),
                                   status_of[planned.key], now)
        for notification, host, group, due, parts in evaluation.notifications:
            alerts = [{"key": p.key, "kind": p.kind, "status": status_of[p.key]} for p in evaluation.planned
                      if p.channel == notification.channel and p.route
                      and p.route.group_key(labels_of[p.key], p.key) == group and p.kind not in ("held", "forget")]
            payload = {"notification": notification.as_dict(), "host": host, "play": notification.play,
                       "group": group, "alerts": alerts, "parts": parts}
            channel = plan.resolve_channel(notification.channel, payload)
            urls = list(getattr(getattr(channel, "options", None), "urls", None) or [])
            # each URL of a channel is its own delivery: one that fails is retried alone
            for index in range(len(urls)) if len(urls) > 1 else [None]:
                item = payload if index is None else {**payload, "url_index": index}
                key = group if index is None else f"{group}#{index}"
                if _join_waiting(store, notification.channel, key, item, now):
                    continue
                dropped += store.enqueue(notification.channel, key, notification.kind, item, now,
                                         max_items=plan.delivery.outbox_size, due=due)
    return dropped


def _join_waiting(store: Any, channel: str, key: str, item: dict[str, Any], now: float) -> bool:
    """Add this group message's alerts to one still waiting for the same group and channel (one message
    per group_wait, as Alertmanager sends); True when it was taken in that way."""
    from ce_agent.alerting import pipeline

    waiting = store.waiting(channel, key, now)
    if waiting is None or "parts" not in waiting.payload:
        return False
    parts = pipeline.merge_parts(waiting.payload["parts"], item["parts"])
    if not parts:  # everything in it fired and resolved before it left: nothing to tell
        store.delivered(waiting.id)
        return True
    notification = pipeline.compose(channel, parts)
    known = {a["key"]: a for a in waiting.payload.get("alerts", [])}
    known.update({a["key"]: a for a in item["alerts"]})
    alerts = [known[str(p["key"])] for p in parts if str(p["key"]) in known]
    store.replace_payload(waiting.id, notification.kind,
                          {**waiting.payload, "notification": notification.as_dict(), "alerts": alerts, "parts": parts})
    return True


def annotator(redactor: Redactor) -> Callable[[str, float | None, Mapping[str, str]], str]:
    """Render a rule's annotation with `{{ value }}` and `{{ labels.NAME }}` (Jinja2 only when templated)."""
    templar = Templar({}, redactor.add_lookup)

    def annotate(text: str, value: float | None, labels: Mapping[str, str]) -> str:
        shown: Any = value
        if isinstance(value, float) and value.is_integer():
            shown = int(value)
        elif isinstance(value, float):
            shown = round(value, 2)
        try:
            return str(templar.render(text, templar.scope([{"value": shown, "labels": dict(labels)}])))
        except TemplateError as exc:
            return f"{text} ({exc})"

    return annotate
