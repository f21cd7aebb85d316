"""The `cpu` check: the busy percent of all CPUs sampled over an interval, against percent thresholds."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, NamedTuple

import msgspec
import psutil

from ce_agent.contracts import Check, Metric, Result, Status, TaskContext
from ce_agent.durations import format_duration
from ce_agent.options import Duration, Threshold
from ce_agent.thresholds import Range, evaluate

#: the kernel counts CPU time in ticks of 10 ms: a shorter sample is mostly noise
MIN_INTERVAL = 0.1
#: Linux counts guest time inside user and nice too; adding it again would count it twice
_COUNTED_ELSEWHERE = frozenset({"guest", "guest_nice"})
#: the time that is not busy (as `top` and psutil's cpu_percent count it)
_NOT_BUSY = frozenset({"idle", "iowait"})
#: the modes named in the summary (all are metrics)
_SUMMARY_MODES = ("user", "system", "iowait", "steal")


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Percent of the CPU time spent in each mode (`user`, `system`, `idle`, ...) over `interval` seconds."""

    modes: Mapping[str, float] = field(default_factory=dict)
    interval: float = 0.0

    @property
    def busy(self) -> float | None:
        """Percent not idle nor waiting for I/O; None when no CPU time was counted."""
        if not self.modes:
            return None
        return max(0.0, 100.0 - sum(self.modes.get(mode, 0.0) for mode in _NOT_BUSY))


def cpu_sample(before: NamedTuple, after: NamedTuple, interval: float) -> CpuSample:
    """The mode percentages between two readings of psutil.cpu_times()."""
    deltas = {
        mode: max(getattr(after, mode) - getattr(before, mode), 0.0)
        for mode in after._fields
        if mode not in _COUNTED_ELSEWHERE
    }
    total = sum(deltas.values())
    if total <= 0:
        return CpuSample({}, interval)
    return CpuSample({mode: 100.0 * delta / total for mode, delta in deltas.items()}, interval)


def probe_cpu(interval: float, stop: threading.Event | None = None) -> CpuSample:
    """Sample all CPUs for `interval` seconds (less when `stop` is set)."""
    before = psutil.cpu_times()
    (stop or threading.Event()).wait(interval)
    return cpu_sample(before, psutil.cpu_times(), interval)


def evaluate_cpu(sample: CpuSample, warning: Range, critical: Range) -> Result:
    """The status of the busy percent, with a summary and the per-mode metrics."""
    busy = sample.busy
    over = format_duration(sample.interval)
    if busy is None:
        return Result(Status.UNKNOWN, f"no CPU time was counted over {over}")
    status = evaluate(busy, warning, critical)
    modes = ", ".join(
        f"{mode} {sample.modes[mode]:.1f}%"
        for mode in _SUMMARY_MODES
        if mode in sample.modes and (mode != "steal" or sample.modes[mode] > 0)
    )
    metrics = [Metric("cpu_busy_percent", busy, "%", {}, warning.text, critical.text, 0, 100)]
    metrics += [
        Metric("cpu_mode_percent", value, "%", {"mode": mode}, min=0, max=100) for mode, value in sample.modes.items()
    ]
    return Result(status, f"CPU {busy:.1f}% busy over {over} ({modes})", metrics)


class CpuCheck(Check):
    """Busy percent of all CPUs (not idle nor waiting for I/O), sampled over an interval."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        interval: Annotated[
            Duration, msgspec.Meta(description="How long to sample (cut to fit within the task's timeout).")
        ] = Duration(1.0)
        warning: Annotated[
            Threshold, msgspec.Meta(description="WARNING when busy percent is above (or outside this range).")
        ] = Threshold("90")
        critical: Annotated[
            Threshold, msgspec.Meta(description="CRITICAL when busy percent is above (or outside this range).")
        ] = Threshold("95")

    EXAMPLES = """\
- name: CPU
  cpu: {interval: 5s, warning: "90%", critical: "98%"}
"""

    def __init__(self, options: CpuCheck.Options, context: TaskContext) -> None:
        super().__init__(options, context)
        self._stop = threading.Event()

    def run(self) -> Result:
        opts = self.options
        timeout = self.context.timeout
        # leave the end of the timeout for the readings themselves
        interval = max(min(float(opts.interval), max(timeout - 1.0, timeout / 2)), MIN_INTERVAL)
        return evaluate_cpu(probe_cpu(interval, self._stop), opts.warning.range, opts.critical.range)

    def cancel(self) -> None:
        self._stop.set()
