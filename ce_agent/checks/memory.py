"""The `memory` check: used percent of the virtual memory, against percent thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import msgspec
import psutil

from ce_agent.contracts import Check, Metric, Result
from ce_agent.options import Threshold
from ce_agent.thresholds import Range, evaluate

_GIB = 2**30


@dataclass(frozen=True, slots=True)
class MemorySample:
    """What the probe saw, in bytes; `available` is what can be given to programs without swapping."""

    total: int
    available: int
    swap_total: int = 0
    swap_used: int = 0

    @property
    def used(self) -> int:
        # total - available, not psutil's `used`: that one leaves out buffers/caches differently per OS
        return max(self.total - self.available, 0)

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used / self.total if self.total else 0.0

    @property
    def swap_percent(self) -> float:
        return 100.0 * self.swap_used / self.swap_total if self.swap_total else 0.0


def probe_memory() -> MemorySample:
    """The machine's memory and swap now."""
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return MemorySample(vm.total, vm.available, swap.total, swap.used)


def evaluate_memory(sample: MemorySample, warning: Range, critical: Range) -> Result:
    """The status of used memory in percent, with a summary and the memory metrics."""
    percent = sample.used_percent
    status = evaluate(percent, warning, critical)
    total = float(sample.total)
    return Result(
        status,
        f"memory {percent:.1f}% used ({sample.available / _GIB:.1f} GiB available of {sample.total / _GIB:.1f} GiB),"
        f" swap {sample.swap_percent:.1f}% used",
        [
            Metric("memory_used_percent", percent, "%", {}, warning.text, critical.text, 0, 100),
            Metric("memory_used_bytes", float(sample.used), "B", min=0, max=total),
            Metric("memory_available_bytes", float(sample.available), "B", min=0, max=total),
            Metric("memory_total_bytes", total, "B", min=0),
            Metric("swap_used_percent", sample.swap_percent, "%", min=0, max=100),
        ],
    )


class MemoryCheck(Check):
    """Used virtual memory in percent (total minus available), with swap use as a metric."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        warning: Annotated[
            Threshold, msgspec.Meta(description="WARNING when used percent is above (or outside this range).")
        ] = Threshold("90")
        critical: Annotated[
            Threshold, msgspec.Meta(description="CRITICAL when used percent is above (or outside this range).")
        ] = Threshold("95")

    EXAMPLES = """\
- name: Memory
  memory: {warning: "85%", critical: "95%"}
"""

    def run(self) -> Result:
        return evaluate_memory(probe_memory(), self.options.warning.range, self.options.critical.range)
