"""The `disk` check: used space of the filesystem holding a path, against percent thresholds."""

from __future__ import annotations

from typing import Annotated

import msgspec
import psutil

from ce_agent.contracts import Check, Metric, Result
from ce_agent.options import Threshold
from ce_agent.thresholds import evaluate


class DiskCheck(Check):
    """Used space of the filesystem holding `path`, in percent (a bare number is a percent)."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        path: Annotated[str, msgspec.Meta(description="A mount point or any path on the filesystem.")] = "/"
        warning: Annotated[
            Threshold, msgspec.Meta(description="WARNING when used percent is above (or outside this range).")
        ] = Threshold("80")
        critical: Annotated[
            Threshold, msgspec.Meta(description="CRITICAL when used percent is above (or outside this range).")
        ] = Threshold("90")

    EXAMPLES = """\
- name: Root disk
  disk: {path: /, warning: "80%", critical: "90%"}
"""

    def run(self) -> Result:
        opts = self.options
        usage = psutil.disk_usage(opts.path)
        status = evaluate(usage.percent, opts.warning.range, opts.critical.range)
        labels = {"path": opts.path}
        free_gib = usage.free / 2**30
        return Result(
            status,
            f"{opts.path} {usage.percent:.1f}% used ({free_gib:.1f} GiB free of {usage.total / 2**30:.1f} GiB)",
            [
                Metric("disk_used_percent", usage.percent, "%", labels, str(opts.warning), str(opts.critical), 0, 100),
                Metric("disk_used_bytes", float(usage.used), "B", labels, min=0, max=float(usage.total)),
                Metric("disk_free_bytes", float(usage.free), "B", labels, min=0, max=float(usage.total)),
            ],
        )
