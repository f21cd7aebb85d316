"""The `system`, `process` and `directory_size` collectors on this machine's real numbers."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from ce_agent.collectors.directory_size import DirectorySizeCollector
from ce_agent.collectors.process import ProcessCollector
from ce_agent.collectors.system import GROUPS, SystemCollector
from ce_agent.contracts import Collector, Metric, TaskContext
from ce_agent.options import convert_options


def make(cls: type[Collector], raw: Mapping[str, Any], timeout: float = 10.0) -> Collector:
    options, errors = convert_options(cls.Options, raw)
    assert not errors, errors
    return cls(options, TaskContext(task="test", host="localhost", timeout=timeout))


def collect(cls: type[Collector], raw: Mapping[str, Any], timeout: float = 10.0) -> list[Metric]:
    return list(make(cls, raw, timeout).collect())


def values(metrics: list[Metric], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of the samples named `name`."""
    return {tuple(sorted(m.labels.items())): m.value for m in metrics if m.name == name}


# --- system --------------------------------------------------------------------------------------


def expected_system_names(groups: tuple[str, ...]) -> set[str]:
    """The metric names each group must produce on this machine, per psutil's own view of it."""
    names: set[str] = set()
    if "cpu" in groups:
        names |= {"system_cpu_percent"}
    if "memory" in groups:
        names |= {"system_memory_used_percent", "system_memory_used_bytes", "system_memory_total_bytes"}
    if "swap" in groups:
        names |= {"system_swap_used_percent"}
    if "disk" in groups and psutil.disk_partitions(all=False):
        names |= {"system_disk_used_percent", "system_disk_used_bytes", "system_disk_total_bytes"}
    devices = psutil.disk_io_counters(perdisk=True) or {}
    if "diskio" in groups and any(not d.startswith(("loop", "ram")) for d in devices):
        names |= {"system_disk_read_bytes_total", "system_disk_written_bytes_total"}
    if "network" in groups and psutil.net_io_counters(pernic=True):
        names |= {"system_network_received_bytes_total", "system_network_sent_bytes_total"}
    if "load" in groups:
        names |= {"system_load1", "system_load5", "system_load15"}
    if "uptime" in groups:
        names |= {"system_uptime_seconds"}
    return names


@pytest.mark.parametrize(
    "include",
    [
        pytest.param(None, id="everything by default"),
        pytest.param(["memory"], id="memory"),
        pytest.param(["load", "uptime"], id="load and uptime"),
        pytest.param(["disk", "diskio"], id="disks"),
        pytest.param(["network", "swap", "cpu"], id="network, swap, cpu"),
    ],
)
def test_system_collects_the_included_groups(include: list[str] | None) -> None:
    raw = {"interval": 0.05} | ({} if include is None else {"include": include})
    metrics = collect(SystemCollector, raw)
    assert {m.name for m in metrics} == expected_system_names(tuple(include or GROUPS))
    for m in metrics:
        assert isinstance(m.value, float) and math.isfinite(m.value), m
        assert m.value >= 0, m
        if m.unit == "%":
            assert m.value <= 100, m


def test_system_values_are_this_machines() -> None:
    metrics = collect(SystemCollector, {"include": ["memory", "disk", "network", "uptime"]})
    memory = psutil.virtual_memory()
    assert values(metrics, "system_memory_total_bytes") == {(): float(memory.total)}
    [used] = values(metrics, "system_memory_used_bytes").values()
    assert 0 < used < memory.total
    mounts = {p.mountpoint for p in psutil.disk_partitions(all=False)}
    assert {dict(k)["mount"] for k in values(metrics, "system_disk_total_bytes")} == mounts
    for labels, total in values(metrics, "system_disk_total_bytes").items():
        assert total == psutil.disk_usage(dict(labels)["mount"]).total
    interfaces = set(psutil.net_io_counters(pernic=True))
    assert {dict(k)["interface"] for k in values(metrics, "system_network_sent_bytes_total")} == interfaces
    [uptime] = values(metrics, "system_uptime_seconds").values()
    assert uptime == pytest.approx(time.time() - psutil.boot_time(), abs=5)


def test_system_cpu_is_sampled_over_the_interval() -> None:
    # cpu_percent(interval=None) would say 0.0 on a first call; a sampled interval sees this busy thread
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        started = time.monotonic()
        metrics = collect(SystemCollector, {"include": ["cpu"], "interval": "100ms"})
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        spinner.join()
    [cpu] = values(metrics, "system_cpu_percent").values()
    assert 0 < cpu <= 100
    assert 0.09 <= elapsed < 1


def test_system_cpu_interval_is_bounded_by_the_timeout() -> None:
    started = time.monotonic()
    collect(SystemCollector, {"include": ["cpu"], "interval": "10s"}, timeout=0.2)
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({"include": ["cpu", "gpu"]}, "option 'include[1]'", id="unknown group"),
        pytest.param({"interval": 0}, "interval must be above 0", id="zero interval"),
    ],
)
def test_system_invalid_options(raw: dict, error: str) -> None:
    _, errors = convert_options(SystemCollector.Options, raw)
    assert errors and error in errors[0].message, errors


# --- process -------------------------------------------------------------------------------------

# a child that runs `threads` busy (or idle) threads and holds `files` open, then waits to be killed
CHILD = """
import sys, threading, time
threads, files, busy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "busy"
def work():
    while busy:
        pass
    time.sleep(60)
for _ in range(threads):
    threading.Thread(target=work, daemon=True).start()
held = [open(sys.executable, "rb") for _ in range(files)]
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def children() -> Iterator[tuple[str, dict[str, psutil.Process]]]:
    """Two tagged python processes: `busy` (2 spinning threads, 10 files) and `idle` (no threads, 0 files)."""
    tag = f"ce-agent-test-{uuid.uuid4().hex}"
    procs = {
        "busy": subprocess.Popen([sys.executable, "-c", CHILD, "2", "10", "busy", tag], stdout=subprocess.PIPE),
        "idle": subprocess.Popen([sys.executable, "-c", CHILD, "0", "0", "idle", tag], stdout=subprocess.PIPE),
    }
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield tag, {role: psutil.Process(proc.pid) for role, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(5)
            if proc.stdout:
                proc.stdout.close()


def test_process_finds_its_own_test_process() -> None:
    me = psutil.Process()
    metrics = collect(ProcessCollector, {"name": me.name(), "cmdline": "pytest|py\\.test", "interval": 0.05})
    pids = {dict(labels)["pid"] for labels in values(metrics, "process_memory_rss_bytes")}
    assert str(os.getpid()) in pids
    rss = values(metrics, "process_memory_rss_bytes")[(("name", me.name()), ("pid", str(os.getpid())))]
    assert rss == pytest.approx(me.memory_info().rss, rel=0.2)


@pytest.mark.parametrize(
    ("role", "threads", "min_fds", "cpu_range"),
    [
        pytest.param("busy", 3, 13, (20, 400), id="busy: main + 2 threads, 10 more files, spinning"),
        pytest.param("idle", 1, 3, (0, 5), id="idle: one thread, stdio only, asleep"),
    ],
)
def test_process_metrics_of_each_match(
    children: tuple[str, dict[str, psutil.Process]],
    role: str,
    threads: int,
    min_fds: int,
    cpu_range: tuple[float, float],
) -> None:
    tag, procs = children
    metrics = collect(ProcessCollector, {"cmdline": tag, "interval": 0.2})
    labels = (("name", procs[role].name()), ("pid", str(procs[role].pid)))
    assert values(metrics, "process_num_threads")[labels] == threads
    assert values(metrics, "process_open_fds")[labels] >= min_fds
    assert values(metrics, "process_open_fds")[labels] == procs[role].num_fds()
    assert cpu_range[0] <= values(metrics, "process_cpu_percent")[labels] <= cpu_range[1]
    assert values(metrics, "process_memory_rss_bytes")[labels] > 1_000_000


@pytest.mark.parametrize(
    ("raw", "count", "count_labels"),
    [
        pytest.param({"cmdline": "{tag}"}, 2, {"cmdline": "{tag}"}, id="by command line"),
        pytest.param({"name": "python.*", "cmdline": "{tag} *$"}, 2, {"name": "python.*", "cmdline": "{tag} *$"},
                     id="by name and command line"),
        pytest.param({"name": "nginx", "cmdline": "{tag}"}, 0, {"name": "nginx", "cmdline": "{tag}"},
                     id="both must match"),
        pytest.param({"name": "no-such-process-name"}, 0, {"name": "no-such-process-name"}, id="no match"),
    ],
)  # fmt: skip
def test_process_instances(
    children: tuple[str, dict[str, psutil.Process]], raw: dict, count: int, count_labels: dict
) -> None:
    tag, procs = children
    raw = {key: value.format(tag=tag) for key, value in raw.items()}
    metrics = collect(ProcessCollector, {**raw, "interval": 0.05})
    expected_labels = {key: value.format(tag=tag) for key, value in count_labels.items()}
    assert values(metrics, "process_instances") == {tuple(sorted(expected_labels.items())): float(count)}
    found = {dict(labels)["pid"] for labels in values(metrics, "process_num_threads")}
    assert found == ({str(p.pid) for p in procs.values()} if count else set())


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "give 'name', 'cmdline' or both to choose the processes", id="something to match is required"),
        pytest.param({"name": "(("},
                     "name: not a valid regular expression: missing ), unterminated subpattern at position 1",
                     id="bad name regex"),
        pytest.param({"cmdline": "[a"},
                     "cmdline: not a valid regular expression: unterminated character set at position 0",
                     id="bad cmdline regex"),
        pytest.param({"name": "x", "interval": 0},
                     "interval: must be above 0 (CPU usage is a difference between two samples)", id="zero interval"),
    ],
)  # fmt: skip
def test_process_invalid_options(raw: dict, error: str) -> None:
    # found by `ce-agent validate`, before anything runs
    options, errors = convert_options(ProcessCollector.Options, raw)
    assert options is None
    assert [e.message for e in errors] == [error]


# --- directory_size ------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """
    root/a.txt (100 B), root/b.bin (1000 B), root/hard (a hard link to b.bin), root/empty/,
    root/sub/c.txt (10 B), root/sub/deeper/d.txt (1 B), root/sub/up -> .. (a loop),
    root/link-a -> a.txt, root/outside -> ../outside/ (e: 5 B, f: 7 B), root/to-f -> ../outside/f
    """
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    outside.mkdir()
    for path, size in {"root/a.txt": 100, "root/b.bin": 1000, "root/sub/c.txt": 10, "root/sub/deeper/d.txt": 1,
                       "outside/e": 5, "outside/f": 7}.items():  # fmt: skip
        (tmp_path / path).write_bytes(b"x" * size)
    os.link(root / "b.bin", root / "hard")
    (root / "sub" / "up").symlink_to("..")
    (root / "link-a").symlink_to("a.txt")
    (root / "outside").symlink_to(outside)
    (root / "to-f").symlink_to(outside / "f")
    return root


@pytest.mark.parametrize(
    ("options", "size", "files"),
    [
        pytest.param({}, 1111, 4, id="regular files, a hard link counted once, symlinks not followed"),
        pytest.param({"max_depth": 0}, 1100, 2, id="max_depth 0: only the files in path"),
        pytest.param({"max_depth": 1}, 1110, 3, id="max_depth 1: one level down"),
        pytest.param({"max_depth": 5}, 1111, 4, id="a max_depth deeper than the tree"),
        pytest.param({"follow_symlinks": True}, 1123, 6,
                     id="following symlinks: what they point to, once, and no loop"),
    ],
)  # fmt: skip
def test_directory_size(tree: Path, options: dict, size: int, files: int) -> None:
    metrics = collect(DirectorySizeCollector, {"path": str(tree), **options})
    labels = (("path", str(tree)),)
    assert [(m.name, m.value, m.unit) for m in metrics] == [
        ("directory_size_bytes", float(size), "B"),
        ("directory_files", float(files), ""),
        ("directory_size_complete", 1.0, ""),
    ]
    assert all(tuple(m.labels.items()) == labels for m in metrics)


def test_directory_size_stops_at_the_deadline_and_says_so(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    # with no time at all the walk stops before the first directory: still a report, marked incomplete
    with caplog.at_level(logging.WARNING, logger="ce_agent.collectors.directory_size"):
        metrics = collect(DirectorySizeCollector, {"path": str(tree)}, timeout=0)
    assert [(m.name, m.value) for m in metrics] == [
        ("directory_size_bytes", 0.0),
        ("directory_files", 0.0),
        ("directory_size_complete", 0.0),
    ]
    assert f"directory_size {tree}: stopped after 0.0s with the walk unfinished" in caplog.text


def test_directory_size_cancelled(tree: Path) -> None:
    collector = make(DirectorySizeCollector, {"path": str(tree)})
    collector.cancel()
    assert [m.value for m in collector.collect()][-1] == 0.0


def test_directory_size_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="not a directory"):
        collect(DirectorySizeCollector, {"path": str(tmp_path / "nope")})


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'path'", id="path is required"),
        pytest.param({"path": "/", "max_depth": -1}, "max_depth must be 0 or more, got -1", id="negative depth"),
    ],
)
def test_directory_size_invalid_options(raw: dict, error: str) -> None:
    _, errors = convert_options(DirectorySizeCollector.Options, raw)
    assert errors and error in errors[0].message, errors


# --- all three -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "key"),
    [
        pytest.param(SystemCollector, "system", id="system"),
        pytest.param(ProcessCollector, "process", id="process"),
        pytest.param(DirectorySizeCollector, "directory_size", id="directory_size"),
    ],
)
def test_examples_are_valid_playbook_tasks(cls: type[Collector], key: str) -> None:
    tasks = yaml.safe_load(cls.EXAMPLES)
    assert tasks
    for task in tasks:
        _, errors = convert_options(cls.Options, task[key])
        assert not errors, (task["name"], errors)
