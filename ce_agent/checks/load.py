"""The `load` check: the 1-minute load average per CPU, against thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec
import psutil

from ce_agent.contracts import Check, Metric, Result
from ce_agent.options import Threshold
from ce_agent.thresholds import Range, evaluate


@dataclass(frozen=True, slots=True)
class LoadSample:
    """The 1, 5 and 15-minute load averages and the number of logical CPUs."""

    load1: float
    load5: float
    load15: float
    cpus: int

    @property
    def load1_per_cpu(self) -> float:
        return self.load1 / max(self.cpus, 1)


def probe_load() -> LoadSample:
    """The load averages now."""
    load1, load5, load15 = psutil.getloadavg()
    return LoadSample(load1, load5, load15, psutil.cpu_count() or 1)


def evaluate_load(sample: LoadSample, warning: Range, critical: Range, per_cpu: bool = True) -> Result:
    """The status of the 1-minute load (per CPU unless `per_cpu` is false), with the load metrics."""
    judged = sample.load1_per_cpu if per_cpu else sample.load1
    status = evaluate(judged, warning, critical)
    per = f"{sample.load1_per_cpu:.2f} per CPU, " if per_cpu else ""
    cpus = f"{sample.cpus} CPU{'s' if sample.cpus != 1 else ''}"
    # the thresholds go on the metric they were compared with
    judged_bounds = {"warn": warning.text, "crit": critical.text}
    return Result(
        status,
        f"load average {sample.load1:.2f}, {sample.load5:.2f}, {sample.load15:.2f} ({per}{cpus})",
        [
            Metric("load1", sample.load1, "", min=0, **({} if per_cpu else judged_bounds)),
            Metric("load5", sample.load5, "", min=0),
            Metric("load15", sample.load15, "", min=0),
            Metric("load1_per_cpu", sample.load1_per_cpu, "", min=0, **(judged_bounds if per_cpu else {})),
        ],
    )


class LoadCheck(Check):
    """The 1-minute load average divided by the number of CPUs, against thresholds."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        warning: Annotated[
            Threshold,
            msgspec.Meta(description="WARNING when the 1-minute load (per CPU) is above (or outside this range)."),
        ] = Threshold("2")
        critical: Annotated[
            Threshold,
            msgspec.Meta(description="CRITICAL when the 1-minute load (per CPU) is above (or outside this range)."),
        ] = Threshold("4")
        per_cpu: Annotated[
            bool, msgspec.Meta(description="Divide the load by the number of CPUs before comparing (false: raw load).")
        ] = True

    EXAMPLES = """\
- name: Load per CPU
  load: {warning: 1.5, critical: 3}
"""

    def run(self) -> Result:
        opts = self.options
        return evaluate_load(probe_load(), opts.warning.range, opts.critical.range, opts.per_cpu)
