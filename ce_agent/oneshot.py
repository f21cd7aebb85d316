"""One pass of the agent, as `run` and `validate` do it: load and validate, run, notify, report."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_agent.config.templating import Templar
from ce_agent.config.yamlfile import parse_yaml
from ce_agent.contracts import Status, worst
from ce_agent.errors import Problems, UserError
from ce_agent.notify import Delivery, plan_notifications, send_all
from ce_agent.plan import Plan, Selection, build_plan
from ce_agent.redact import Redactor
from ce_agent.registry import Registry
from ce_agent.runner import Outcome, execute


class InvalidConfig(Exception):
    """The playbooks or inventory have errors; `problems` lists every one of them."""

    def __init__(self, problems: Problems) -> None:
        super().__init__(f"{len(problems.errors)} error(s)")
        self.problems = problems


@dataclass
class Report:
    """What one pass produced."""

    outcomes: list[Outcome]
    deliveries: list[Delivery] = field(default_factory=list)

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


def run(plan: Plan, redactor: Redactor, forks: int = 10, check_mode: bool = False) -> Report:
    """Run every job once, then send (or, in check mode, only render) the notifications."""
    outcomes = execute(plan.jobs, forks=forks, scrub=redactor.scrub)
    deliveries = plan_notifications(outcomes, redactor.scrub)
    if not check_mode:
        send_all(deliveries, redactor.scrub, parallel=forks)
    return Report(outcomes, deliveries)
