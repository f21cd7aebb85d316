"""The `system` collector: CPU, memory, swap, disks, disk I/O, network, load and uptime via psutil."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Literal

import msgspec
import psutil

from ce_agent.contracts import Collector, Metric
from ce_agent.options import Duration

Group = Literal["cpu", "memory", "swap", "disk", "diskio", "network", "load", "uptime"]
GROUPS: tuple[Group, ...] = ("cpu", "memory", "swap", "disk", "diskio", "network", "load", "uptime")
#: block devices that only mirror others or hold nothing: loop mounts (snaps, images) and RAM disks
_SKIPPED_DEVICE_PREFIXES = ("loop", "ram")


class SystemCollector(Collector):
    """Host metrics: CPU, memory, swap, disk usage and I/O, network traffic, load and uptime."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        include: Annotated[
            list[Group],
            msgspec.Meta(description="The groups to collect: " + ", ".join(GROUPS) + "; default: all."),
        ] = msgspec.field(default_factory=lambda: list(GROUPS))
        interval: Annotated[
            Duration,
            msgspec.Meta(description="How long CPU usage is sampled over (at most half the task's timeout)."),
        ] = Duration(0.2)

        def __post_init__(self) -> None:
            if self.interval <= 0:
                raise ValueError("interval must be above 0 (CPU usage is a difference between two samples)")

    EXAMPLES = """\
- name: Host metrics
  system: {}
- name: Just memory and load
  system: {include: [memory, load]}
"""

    def collect(self) -> Iterator[Metric]:
        include = set(self.options.include)
        collectors = {
            "cpu": self._cpu,
            "memory": _memory,
            "swap": _swap,
            "disk": _disk,
            "diskio": _diskio,
            "network": _network,
            "load": _load,
            "uptime": _uptime,
        }
        for group in GROUPS:
            if group in include:
                yield from collectors[group]()

    def _cpu(self) -> Iterator[Metric]:
        # cpu_percent(interval=None) compares with the previous call in this process, and the first call
        # says 0.0; sampling over an interval gives a real value on every collection
        interval = min(float(self.options.interval), self.context.timeout / 2)
        yield Metric("system_cpu_percent", psutil.cpu_percent(interval=interval), "%", min=0, max=100)


def _memory() -> Iterator[Metric]:
    memory = psutil.virtual_memory()
    # "used" as total minus available, the quantity psutil's percent is computed from, so the two agree
    used = memory.total - memory.available
    yield Metric("system_memory_used_percent", memory.percent, "%", min=0, max=100)
    yield Metric("system_memory_used_bytes", float(used), "B", min=0, max=float(memory.total))
    yield Metric("system_memory_total_bytes", float(memory.total), "B", min=0)


def _swap() -> Iterator[Metric]:
    yield Metric("system_swap_used_percent", psutil.swap_memory().percent, "%", min=0, max=100)


def _disk() -> Iterator[Metric]:
    seen: set[str] = set()
    # all=False: only physical devices, not proc, sysfs, tmpfs and the like
    for partition in psutil.disk_partitions(all=False):
        if partition.mountpoint in seen:
            continue
        seen.add(partition.mountpoint)
        try:
            usage = psutil.disk_usage(partition.mountpoint)
        except OSError:
            # unreadable or vanished mount (permissions, a removed USB stick): skip it, keep the others
            continue
        labels = {"mount": partition.mountpoint}
        yield Metric("system_disk_used_percent", usage.percent, "%", labels, min=0, max=100)
        yield Metric("system_disk_used_bytes", float(usage.used), "B", labels, min=0, max=float(usage.total))
        yield Metric("system_disk_total_bytes", float(usage.total), "B", labels, min=0)


def _diskio() -> Iterator[Metric]:
    counters = psutil.disk_io_counters(perdisk=True) or {}
    for device, io in sorted(counters.items()):
        if device.startswith(_SKIPPED_DEVICE_PREFIXES):
            continue
        labels = {"device": device}
        yield Metric("system_disk_read_bytes_total", float(io.read_bytes), "B", labels, min=0)
        yield Metric("system_disk_written_bytes_total", float(io.write_bytes), "B", labels, min=0)


def _network() -> Iterator[Metric]:
    counters = psutil.net_io_counters(pernic=True) or {}
    for interface, io in sorted(counters.items()):
        labels = {"interface": interface}
        yield Metric("system_network_received_bytes_total", float(io.bytes_recv), "B", labels, min=0)
        yield Metric("system_network_sent_bytes_total", float(io.bytes_sent), "B", labels, min=0)


def _load() -> Iterator[Metric]:
    for minutes, value in zip((1, 5, 15), psutil.getloadavg()):
        yield Metric(f"system_load{minutes}", float(value), "", min=0)


def _uptime() -> Iterator[Metric]:
    yield Metric("system_uptime_seconds", max(0.0, time.time() - psutil.boot_time()), "s", min=0)
