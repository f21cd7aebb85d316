"""Where alerts come from: every check (its status is the alert) and the plays' `alerts:` rules."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ce_agent.alerting.evaluator import Observation, Policy
from ce_agent.alerting.pipeline import SEVERITY_OF_STATUS, AlertInput, check_key, rule_key, rule_prefix
from ce_agent.contracts import Metric, Status

#: render a rule's annotation for one series: (text, value, labels) -> text
Annotate = Callable[[str, float | None, Mapping[str, str]], str]


def from_checks(outcomes: Sequence[Any], known: Mapping[str, Mapping[str, str]] | None = None,
                names: set[tuple[str, str, str]] | None = None,
                scrub: Callable[[str], str] = lambda text: text) -> list[AlertInput]:
    """One alert per check result: active when not OK; HARD after the task's `retries`.

    `known` holds the labels each alert had in the previous run: a check that is OK again keeps the
    severity of its problem, so its "resolved" takes the routes its "firing" took. `names` (play, host,
    check) are the checks a `depends_on` may name: by default those in `outcomes`."""
    known = known or {}
    inputs = []
    if names is None:
        names = {(o.job.play, o.job.host, o.job.name) for o in outcomes if o.job.kind == "check"}
    for outcome in outcomes:
        job, result = outcome.job, outcome.result
        if job.kind != "check":
            continue
        status = result.status
        key = check_key(job.play, job.host, job.name)
        severity = job.severity or SEVERITY_OF_STATUS.get(status) or known.get(key, {}).get("severity") or "warning"
        # a label templated from a secret is masked before it is stored, served or sent
        labels = {**{str(k): scrub(str(v)) for k, v in job.labels.items()}, "check": job.name, "host": job.host,
                  "play": job.play, "severity": severity}
        inputs.append(
            AlertInput(
                key=key,
                labels=labels,
                observation=Observation(active=status is not Status.OK, status=int(status), summary=result.summary),
                policy=Policy(retries=job.task.retries),
                host=job.host,
                play=job.play,
                title=f"{job.name} on {job.host}",
                notify=[c.name for c in job.notify],
                metrics=list(result.metrics),
                depends_on=[check_key(job.play, job.host, parent) for parent in job.task.depends_on
                            if (job.play, job.host, parent) in names],
            )
        )
    return inputs


def from_rules(
    rules_by_play_host: Mapping[tuple[str, str], Sequence[Any]],
    samples_by_host: Mapping[str, Sequence[Metric]],
    known: Mapping[str, Mapping[str, str]],
    annotate: Annotate,
    status_of_severity: Callable[[str], int] = lambda s: 2 if s in ("critical", "page") else 1,
) -> list[AlertInput]:
    """One alert per rule and matching series; a series seen before and gone now is observed inactive."""
    inputs = []
    for (play, host), rules in rules_by_play_host.items():
        samples = samples_by_host.get(host, [])
        for rule in rules:
            seen: set[str] = set()
            for sample in samples:
                if not rule.expr.selects(sample.name, sample.labels):
                    continue
                series = {str(k): str(v) for k, v in sample.labels.items()}
                key = rule_key(play, host, rule.name, {**series, **_rule_labels(rule)})
                if key in seen:
                    continue
                seen.add(key)
                inputs.append(_rule_input(rule, play, host, series, key, sample.value, sample, annotate,
                                          status_of_severity))
            # a series that disappeared (a mount unmounted, a process gone) resolves its alert
            prefix = rule_prefix(play, host, rule.name)
            own = _rule_labels(rule)
            for key, labels in known.items():
                # a series of this very rule (same name, labels and severity) seen before and gone now
                if (key.startswith(prefix) and key not in seen and key[len(prefix)] in ",}"
                        and all(labels.get(k) == v for k, v in own.items())):
                    series = {k: v for k, v in labels.items() if k not in ("alertname", "host", "play", "severity")
                              and k not in rule.labels}
                    inputs.append(_rule_input(rule, play, host, series, key, None, None, annotate, status_of_severity,
                                              gone=True))
    return inputs


def _rule_labels(rule: Any) -> dict[str, str]:
    return {**{str(k): str(v) for k, v in rule.labels.items()}, "severity": rule.severity}


def _rule_input(rule: Any, play: str, host: str, series: dict[str, str], key: str, value: float | None,
                sample: Metric | None, annotate: Annotate, status_of_severity: Callable[[str], int],
                gone: bool = False) -> AlertInput:
    active = not gone and rule.expr.holds(value)
    labels = {**series, **{str(k): str(v) for k, v in rule.labels.items()}, "alertname": rule.name, "host": host,
              "play": play, "severity": rule.severity}
    shown = "no data" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"
    summary = f"{rule.expr} (value {shown})" if not gone else f"{rule.expr.metric}: series gone"
    annotations = {str(k): annotate(str(v), value, labels) for k, v in rule.annotations.items()} if active else {}
    if active and "summary" in annotations:
        summary = annotations["summary"]
    return AlertInput(
        key=key,
        labels=labels,
        observation=Observation(active=active, status=status_of_severity(rule.severity) if active else 0,
                                summary=summary, value=value),
        policy=Policy(for_s=rule.for_s, keep_firing_for_s=rule.keep_firing_for_s),
        host=host,
        play=play,
        title=f"{rule.name} on {host}",
        notify=list(rule.notify),
        annotations=annotations,
        metrics=[sample] if sample is not None else [],
    )


def vanished(known: Mapping[str, Mapping[str, str]], present: set[str], ran: set[tuple[str, str]],
             defined: Mapping[str, set[str]],
             told_firing: Callable[[str], list[str]] = lambda key: []) -> list[AlertInput]:
    """Alerts of checks and rules removed from a play that ran on their host: observed inactive, so
    they resolve (and channels told "firing" hear it) instead of firing forever.

    `defined` maps each play to every check and rule name it still has, selected by tags or not:
    an alert left out by --tags or --limit is not vanished, only not evaluated. `told_firing` gives the
    channels told it fires: the removed task's `notify:` is gone, they must hear it resolve all the same."""
    inputs = []
    for key, labels in known.items():
        play, host = labels.get("play", ""), labels.get("host", "")
        name = labels.get("check") or labels.get("slo") or labels.get("alertname") or ""
        if key in present or (play, host) not in ran or play not in defined or name in defined[play]:
            continue
        inputs.append(
            AlertInput(
                key=key,
                labels=dict(labels),
                observation=Observation(active=False, status=0, summary=f"{name} is no longer in play {play!r}"),
                policy=Policy(),
                host=host,
                play=play,
                title=f"{name} on {host}",
                notify=told_firing(key),
            )
        )
    return inputs


def from_slos(evaluated: Sequence[tuple[str, str, Any]], known: Mapping[str, Mapping[str, str]]) -> list[AlertInput]:
    """The burn-rate and budget-policy alerts of evaluated SLOs ((play, host, slo.SLOStatus) triples)."""
    from ce_agent.slo import budget_alert_inputs, burn_alert_inputs

    by_place: dict[tuple[str, str], list[Any]] = {}
    for play, host, status in evaluated:
        by_place.setdefault((play, host), []).append(status)
    inputs = []
    for (play, host), statuses in by_place.items():
        for a in [*burn_alert_inputs(statuses, play, host, known), *budget_alert_inputs(statuses, play, host)]:
            inputs.append(AlertInput(
                key=a.key, labels=dict(a.labels),
                observation=Observation(active=a.active, status=a.status, summary=a.summary, value=a.value),
                policy=Policy(), host=a.host, play=a.play, title=a.title, notify=list(a.notify),
            ))
    return inputs


REGRESSION_BASELINE = "default"  # the baseline `ce-agent baseline save` records without --name


def from_regressions(outcomes: Sequence[Any], store: Any, now: float) -> list[AlertInput]:
    """One alert per check with a `regression:` rule that ran: active while its recent p95 (run time
    or a metric) exceeds the saved baseline's by more than the threshold; nothing without a baseline."""
    ruled = [o for o in outcomes if o.job.kind == "check" and getattr(o.job.task, "regression", None) is not None]
    saved = store.baseline(REGRESSION_BASELINE) if ruled else None
    if saved is None:
        return []
    from ce_agent.baseline import regression_check
    inputs = []
    for o in ruled:
        job, rule = o.job, o.job.task.regression
        recent = [r for r in store.results(now - rule.window_s, check=job.name, host=job.host) if r.play == job.play]
        active, summary, value = regression_check(rule, saved[1], recent, now, play=job.play, host=job.host,
                                                  check=job.name)
        labels = {"alertname": "Regression", "check": job.name, "host": job.host, "play": job.play,
                  "severity": "warning"}
        inputs.append(AlertInput(
            key=f'regression{{check="{job.name}",host="{job.host}",play="{job.play}"}}', labels=labels,
            observation=Observation(active=active, status=1 if active else 0, summary=summary, value=value),
            policy=Policy(), host=job.host, play=job.play, title=f"{job.name} regressed on {job.host}",
            notify=[c.name for c in job.notify],
        ))
    return inputs
