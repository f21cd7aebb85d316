"""The `process` collector: CPU, memory, threads and open files of the processes matching a pattern."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Annotated

import msgspec
import psutil

from ce_agent.contracts import Collector, Metric
from ce_agent.options import Duration


class ProcessCollector(Collector):
    """Per-process CPU, memory, threads and open files for processes matching a name or command line."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        name: Annotated[
            str | None,
            msgspec.Meta(description="A regular expression the whole process name must match, e.g. `nginx`."),
        ] = None
        cmdline: Annotated[
            str | None,
            msgspec.Meta(description="A regular expression searched in the command line (arguments joined by spaces)."),
        ] = None
        interval: Annotated[
            Duration,
            msgspec.Meta(description="How long CPU usage is sampled over (at most half the task's timeout)."),
        ] = Duration(0.2)

        def __post_init__(self) -> None:
            if self.name is None and self.cmdline is None:
                raise ValueError("give 'name', 'cmdline' or both to choose the processes")
            for option, pattern in (("name", self.name), ("cmdline", self.cmdline)):
                if pattern is not None:
                    try:
                        re.compile(pattern)
                    except re.error as exc:
                        raise ValueError(f"{option}: not a valid regular expression: {exc}") from None
            if self.interval <= 0:
                raise ValueError("interval: must be above 0 (CPU usage is a difference between two samples)")

    EXAMPLES = """\
- name: nginx workers
  process: {name: nginx}
- name: The celery workers of the shop
  process: {cmdline: "celery .*worker.*-A shop"}
"""

    def collect(self) -> Iterator[Metric]:
        opts = self.options
        name_re = None if opts.name is None else re.compile(opts.name)
        cmdline_re = None if opts.cmdline is None else re.compile(opts.cmdline)
        matched: list[psutil.Process] = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            name = proc.info["name"] or ""
            cmdline = " ".join(proc.info["cmdline"] or [])
            if name_re is not None and not name_re.fullmatch(name):
                continue
            if cmdline_re is not None and not cmdline_re.search(cmdline):
                continue
            try:
                proc.cpu_percent(interval=None)  # the first sample; the second comes after the interval
            except psutil.Error:
                continue
            matched.append(proc)
        if matched:
            time.sleep(min(float(opts.interval), self.context.timeout / 2))

        count = 0
        for proc in matched:
            samples = _samples(proc)
            if samples is None:
                continue  # exited during the interval
            count += 1
            labels = {"name": proc.info["name"] or "", "pid": str(proc.pid)}
            for metric_name, value, unit in samples:
                yield Metric(metric_name, value, unit, labels, min=0)
        count_labels = {key: value for key, value in (("name", opts.name), ("cmdline", opts.cmdline)) if value}
        yield Metric("process_instances", float(count), "", count_labels, min=0)


def _samples(proc: psutil.Process) -> list[tuple[str, float, str]] | None:
    """(metric, value, unit) of one process; None when it is gone. Denied values are left out."""
    out: list[tuple[str, float, str]] = []
    readers = (
        ("process_cpu_percent", "%", lambda: proc.cpu_percent(interval=None)),
        ("process_memory_rss_bytes", "B", lambda: proc.memory_info().rss),
        ("process_num_threads", "", proc.num_threads),
        # another user's descriptors need privileges: the other metrics are still worth having
        ("process_open_fds", "", proc.num_fds),
    )
    try:
        with proc.oneshot():
            for metric_name, unit, read in readers:
                try:
                    out.append((metric_name, float(read()), unit))
                except psutil.AccessDenied:
                    continue
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    return out
