"""The host checks `memory`, `load`, `cpu` and `process`: pure evaluation on fixed numbers, then the real probes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import namedtuple
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from ce_agent.checks.cpu import CpuCheck, CpuSample, cpu_sample, evaluate_cpu
from ce_agent.checks.load import LoadCheck, LoadSample, evaluate_load
from ce_agent.checks.memory import MemoryCheck, MemorySample, evaluate_memory
from ce_agent.checks.process import ProcessCheck, ProcessInfo, evaluate_processes, select_processes
from ce_agent.contracts import Check, Status
from ce_agent.options import convert_options
from ce_agent.thresholds import Range

MakeCheck = Callable[..., Check]
GIB = 2**30


def r(spec: str) -> Range:
    return Range.parse(spec)


# --- memory ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "available", "warning", "critical", "status"),
    [
        pytest.param(100, 50, "90", "95", Status.OK, id="50% used: OK"),
        pytest.param(100, 15, "90", "95", Status.OK, id="85% used: OK with defaults"),
        pytest.param(100, 10, "90", "95", Status.OK, id="90% used: the limit itself is OK"),
        pytest.param(100, 9, "90", "95", Status.WARNING, id="91% used: WARNING"),
        pytest.param(100, 4, "90", "95", Status.CRITICAL, id="96% used: CRITICAL"),
        pytest.param(100, 15, "80", "90", Status.WARNING, id="85% used: WARNING at 80/90"),
        pytest.param(100, 0, "90", "95", Status.CRITICAL, id="nothing available"),
        pytest.param(100, 120, "90", "95", Status.OK, id="available above total counts as 0% used"),
    ],
)
def test_memory_evaluation(total: int, available: int, warning: str, critical: str, status: Status) -> None:
    assert evaluate_memory(MemorySample(total, available), r(warning), r(critical)).status is status


def test_memory_summary_and_metrics() -> None:
    sample = MemorySample(total=8 * GIB, available=2 * GIB, swap_total=4 * GIB, swap_used=1 * GIB)
    result = evaluate_memory(sample, r("90"), r("95"))
    assert result.summary == "memory 75.0% used (2.0 GiB available of 8.0 GiB), swap 25.0% used"
    assert {x.name: (x.value, x.unit) for x in result.metrics} == {
        "memory_used_percent": (75.0, "%"),
        "memory_used_bytes": (6.0 * GIB, "B"),
        "memory_available_bytes": (2.0 * GIB, "B"),
        "memory_total_bytes": (8.0 * GIB, "B"),
        "swap_used_percent": (25.0, "%"),
    }
    assert (result.metrics[0].warn, result.metrics[0].crit) == ("90", "95")


def test_memory_without_swap() -> None:
    result = evaluate_memory(MemorySample(total=GIB, available=GIB), r("90"), r("95"))
    assert result.summary.endswith("swap 0.0% used")


def test_memory_real_probe(make_check: MakeCheck) -> None:
    result = make_check(MemoryCheck, {}).run()
    metrics = {x.name: x.value for x in result.metrics}
    vm = psutil.virtual_memory()
    assert metrics["memory_total_bytes"] == vm.total
    assert 0 < metrics["memory_used_percent"] < 100
    assert metrics["memory_used_bytes"] + metrics["memory_available_bytes"] == vm.total
    shape = r"memory \d+\.\d% used \(\d+\.\d GiB available of \d+\.\d GiB\), swap \d+\.\d% used"
    assert re.fullmatch(shape, result.summary)


def test_memory_thresholds_from_options(make_check: MakeCheck) -> None:
    # any machine running this test uses more than 0.001% of its memory
    result = make_check(MemoryCheck, {"warning": "0.001%", "critical": 100}).run()
    assert result.status is Status.WARNING


# --- load --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "warning", "critical", "per_cpu", "status"),
    [
        pytest.param(LoadSample(1.0, 1, 1, 4), "2", "4", True, Status.OK, id="0.25 per CPU: OK"),
        pytest.param(LoadSample(8.0, 1, 1, 4), "2", "4", True, Status.OK, id="2 per CPU: the limit is OK"),
        pytest.param(LoadSample(9.0, 1, 1, 4), "2", "4", True, Status.WARNING, id="2.25 per CPU: WARNING"),
        pytest.param(LoadSample(17.0, 1, 1, 4), "2", "4", True, Status.CRITICAL, id="4.25 per CPU: CRITICAL"),
        pytest.param(LoadSample(3.0, 50, 50, 1), "2", "4", True, Status.WARNING, id="only the 1-minute load counts"),
        pytest.param(LoadSample(9.0, 1, 1, 4), "2", "4", False, Status.CRITICAL, id="raw load 9 without per_cpu"),
        pytest.param(LoadSample(3.0, 1, 1, 0), "2", "4", True, Status.WARNING, id="0 CPUs counts as 1"),
    ],
)
def test_load_evaluation(sample: LoadSample, warning: str, critical: str, per_cpu: bool, status: Status) -> None:
    assert evaluate_load(sample, r(warning), r(critical), per_cpu).status is status


def test_load_summary_and_metrics() -> None:
    result = evaluate_load(LoadSample(3.0, 2.5, 1.25, 2), r("2"), r("4"))
    assert result.summary == "load average 3.00, 2.50, 1.25 (1.50 per CPU, 2 CPUs)"
    assert [(x.name, x.value, x.warn, x.crit) for x in result.metrics] == [
        ("load1", 3.0, None, None),
        ("load5", 2.5, None, None),
        ("load15", 1.25, None, None),
        ("load1_per_cpu", 1.5, "2", "4"),
    ]


def test_load_raw_puts_the_thresholds_on_load1() -> None:
    result = evaluate_load(LoadSample(3.0, 2.5, 1.25, 1), r("5"), r("10"), per_cpu=False)
    assert result.summary == "load average 3.00, 2.50, 1.25 (1 CPU)"
    load1, *_, per_cpu = result.metrics
    assert [(x.name, x.warn, x.crit) for x in (load1, per_cpu)] == [("load1", "5", "10"), ("load1_per_cpu", None, None)]


def test_load_real_probe(make_check: MakeCheck) -> None:
    result = make_check(LoadCheck, {"critical": "1000000"}).run()
    metrics = {x.name: x.value for x in result.metrics}
    cpus = psutil.cpu_count()
    assert metrics["load1_per_cpu"] == pytest.approx(metrics["load1"] / cpus)
    assert result.summary.endswith(f"CPUs)" if cpus != 1 else "CPU)")
    assert result.status in (Status.OK, Status.WARNING)


# --- cpu ---------------------------------------------------------------------------------------------

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


@pytest.mark.parametrize(
    ("before", "after", "busy"),
    [
        pytest.param(Times(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), Times(10, 0, 10, 80, 0, 0, 0, 0, 0, 0), 20.0, id="20% busy"),
        pytest.param(Times(5, 0, 5, 5, 0, 0, 0, 0, 0, 0), Times(5, 0, 5, 105, 0, 0, 0, 0, 0, 0), 0.0, id="all idle"),
        pytest.param(
            Times(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), Times(0, 0, 0, 50, 50, 0, 0, 0, 0, 0), 0.0, id="iowait is not busy"
        ),
        pytest.param(
            Times(0, 0, 0, 0, 0, 0, 0, 0, 0, 0), Times(40, 0, 0, 50, 0, 0, 0, 10, 30, 0), 50.0,
            id="steal is busy, guest is inside user",
        ),
        pytest.param(Times(*[1] * 10), Times(*[1] * 10), None, id="no time passed"),
    ],
)
def test_cpu_sample_from_two_readings(before: Times, after: Times, busy: float | None) -> None:
    sample = cpu_sample(before, after, 1.0)
    assert sample.busy == (pytest.approx(busy) if busy is not None else None)
    assert "guest" not in sample.modes


@pytest.mark.parametrize(
    ("idle", "warning", "critical", "status"),
    [
        pytest.param(50.0, "90", "95", Status.OK, id="50% busy: OK"),
        pytest.param(10.0, "90", "95", Status.OK, id="90% busy: the limit is OK"),
        pytest.param(8.0, "90", "95", Status.WARNING, id="92% busy: WARNING"),
        pytest.param(1.0, "90", "95", Status.CRITICAL, id="99% busy: CRITICAL"),
        pytest.param(15.0, "80", "90", Status.WARNING, id="85% busy at 80/90: WARNING"),
    ],
)
def test_cpu_evaluation(idle: float, warning: str, critical: str, status: Status) -> None:
    sample = CpuSample({"user": 100 - idle, "system": 0.0, "idle": idle, "iowait": 0.0}, 1.0)
    assert evaluate_cpu(sample, r(warning), r(critical)).status is status


def test_cpu_summary_and_metrics() -> None:
    sample = CpuSample({"user": 30.0, "system": 10.0, "idle": 55.0, "iowait": 5.0, "steal": 0.0}, 2.0)
    result = evaluate_cpu(sample, r("90"), r("95"))
    assert result.summary == "CPU 40.0% busy over 2s (user 30.0%, system 10.0%, iowait 5.0%)"
    busy, *modes = result.metrics
    assert (busy.name, busy.value, busy.unit, busy.warn, busy.crit) == ("cpu_busy_percent", 40.0, "%", "90", "95")
    assert {x.labels["mode"]: x.value for x in modes if x.name == "cpu_mode_percent"} == sample.modes


def test_cpu_no_time_counted_is_unknown() -> None:
    result = evaluate_cpu(CpuSample({}, 0.1), r("90"), r("95"))
    assert (result.status, result.summary) == (Status.UNKNOWN, "no CPU time was counted over 0.1s")


def test_cpu_real_probe(make_check: MakeCheck) -> None:
    result = make_check(CpuCheck, {"interval": "200ms", "critical": "100.1"}).run()
    assert result.status in (Status.OK, Status.WARNING)
    busy = result.metrics[0]
    assert busy.name == "cpu_busy_percent" and 0 <= busy.value <= 100
    assert {"user", "system", "idle"} <= {x.labels["mode"] for x in result.metrics[1:]}
    assert " over 0.2s " in result.summary


def test_cpu_interval_is_cut_to_fit_the_timeout(make_check: MakeCheck) -> None:
    result = make_check(CpuCheck, {"interval": "1h"}, timeout=0.4).run()
    assert " over 0.2s " in result.summary


# --- process -----------------------------------------------------------------------------------------

PROCS = [
    ProcessInfo(10, "nginx", ("nginx: master process /usr/sbin/nginx",), "root"),
    ProcessInfo(11, "nginx", ("nginx: worker process",), "www-data"),
    ProcessInfo(12, "nginx", ("nginx: worker process",), "www-data"),
    ProcessInfo(20, "python3", ("/usr/bin/python3", "-m", "myapp.worker", "--queue", "high"), "app"),
    ProcessInfo(21, "python3", ("/usr/bin/python3", "-m", "myapp.worker", "--queue", "low"), "app"),
    ProcessInfo(30, "kworker/0:1", (), "root"),
]


@pytest.mark.parametrize(
    ("name", "cmdline", "user", "pids"),
    [
        pytest.param("nginx", None, None, [10, 11, 12], id="by name"),
        pytest.param("ngin", None, None, [], id="names match exactly"),
        pytest.param("nginx", None, "www-data", [11, 12], id="by name and user"),
        pytest.param(None, r"myapp\.worker", None, [20, 21], id="by cmdline regex"),
        pytest.param(None, r"--queue high$", None, [20], id="cmdline is the arguments joined by spaces"),
        pytest.param("python3", r"worker", None, [20, 21], id="name and cmdline together"),
        pytest.param(None, "worker", None, [11, 12, 20, 21], id="regex searches anywhere"),
        pytest.param(None, "^$", "root", [30], id="kernel threads have an empty cmdline"),
    ],
)
def test_process_selection(name: str | None, cmdline: str | None, user: str | None, pids: list[int]) -> None:
    pattern = re.compile(cmdline) if cmdline is not None else None
    assert [p.pid for p in select_processes(PROCS, name, pattern, user)] == pids


@pytest.mark.parametrize(
    ("count", "minimum", "maximum", "status", "summary"),
    [
        pytest.param(1, 1, None, Status.OK, "1 process named 'x' (pid 100)", id="one of at least 1"),
        pytest.param(0, 1, None, Status.CRITICAL, "0 processes named 'x', expected at least 1", id="none"),
        pytest.param(
            3, 1, 2, Status.CRITICAL, "3 processes named 'x' (pids 100, 101, 102), expected between 1 and 2",
            id="too many",
        ),
        pytest.param(2, 2, 2, Status.OK, "2 processes named 'x' (pids 100, 101)", id="exactly 2"),
        pytest.param(1, 2, 2, Status.CRITICAL, "1 process named 'x' (pid 100), expected exactly 2", id="not exactly 2"),
        pytest.param(0, 0, 0, Status.OK, "0 processes named 'x'", id="none allowed, none running"),
        pytest.param(1, 0, 0, Status.CRITICAL, "1 process named 'x' (pid 100), expected exactly 0", id="must not run"),
        pytest.param(
            2, 0, 1, Status.CRITICAL, "2 processes named 'x' (pids 100, 101), expected at most 1", id="at most 1"
        ),
        pytest.param(
            7, 1, None, Status.OK, "7 processes named 'x' (pids 100, 101, 102, 103, 104, ...)", id="a few pids shown"
        ),
    ],
)
def test_process_evaluation(count: int, minimum: int, maximum: int | None, status: Status, summary: str) -> None:
    matched = [ProcessInfo(100 + i, "x") for i in range(count)]
    result = evaluate_processes(matched, "named 'x'", minimum, maximum)
    assert (result.status, result.summary) == (status, summary)
    assert result.metrics[0].name == "process_instances" and result.metrics[0].value == count


@pytest.fixture
def sleepers(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """Two processes of a uniquely named copy of `sleep`: (their name, their pids)."""
    name = f"cesleep{os.getpid() % 100000}"  # under 15 characters: the kernel's limit for a process name
    binary = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    procs = [subprocess.Popen([str(binary), f"30{n}"]) for n in range(2)]  # sleep 300, sleep 301
    yield name, [p.pid for p in procs]
    for proc in procs:
        proc.kill()
        proc.wait(timeout=5)


@pytest.mark.parametrize(
    ("options", "count", "status"),
    [
        pytest.param({}, 2, Status.OK, id="by name"),
        pytest.param({"min": 3}, 2, Status.CRITICAL, id="fewer than min"),
        pytest.param({"max": 1}, 2, Status.CRITICAL, id="more than max"),
        pytest.param({"cmdline": " 301$"}, 1, Status.OK, id="name and cmdline"),
        pytest.param({"user": "ce-agent-no-such-user"}, 0, Status.CRITICAL, id="another user"),
    ],
)
def test_process_real_probe(
    make_check: MakeCheck, sleepers: tuple[str, list[int]], options: dict, count: int, status: Status
) -> None:
    name, pids = sleepers
    result = make_check(ProcessCheck, {"name": name, **options}).run()
    assert result.status is status, result.summary
    [metric] = result.metrics
    assert metric.value == count
    assert metric.labels["name"] == name
    if count == 2:
        assert f"pids {min(pids)}, {max(pids)}" in result.summary


def test_process_by_user_of_the_agent(make_check: MakeCheck, sleepers: tuple[str, list[int]]) -> None:
    name, _ = sleepers
    me = psutil.Process().username()
    result = make_check(ProcessCheck, {"cmdline": f"{name} 30[01]$", "user": me}).run()
    assert (result.status, result.metrics[0].value) == (Status.OK, 2)


def test_process_max_zero_alone_means_must_not_run(make_check: MakeCheck, sleepers: tuple[str, list[int]]) -> None:
    name, _ = sleepers
    assert make_check(ProcessCheck, {"name": "ce-agent-absent", "max": 0}).run().status is Status.OK
    assert make_check(ProcessCheck, {"name": name, "max": 0}).run().status is Status.CRITICAL


def test_process_does_not_count_the_agent_itself(make_check: MakeCheck) -> None:
    # the agent's own command line contains the pattern; it must not match itself (anchored, so a
    # wrapper such as `timeout 600 python -m pytest …` around this very process does not count)
    me = " ".join(psutil.Process().cmdline())
    result = make_check(ProcessCheck, {"cmdline": "^" + re.escape(me) + "$", "max": 0}).run()
    assert result.status is Status.OK, result.summary


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({}, "give 'name', 'cmdline' or both to choose the processes", id="neither name nor cmdline"),
        pytest.param(
            {"cmdline": "(("},
            "cmdline: not a valid regular expression: missing ), unterminated subpattern at position 1",
            id="bad regex",
        ),
        pytest.param({"name": "x", "min": 3, "max": 2}, "max: 2 is below min 3", id="max below min"),
        pytest.param({"name": "x", "min": 2, "max": 0}, "max: 0 is below min 2", id="max 0 with a min"),
        pytest.param({"name": "x", "min": -1}, "option 'min': expected int >= 0", id="negative min"),
    ],
)
def test_process_option_problems_are_found_when_loading(options: dict, message: str) -> None:
    # found by `ce-agent validate`, before anything runs
    parsed, errors = convert_options(ProcessCheck.Options, options)
    assert parsed is None
    assert [e.message for e in errors] == [message]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"name": "x", "max": 0}, id="max 0 alone: must not run"),
        pytest.param({"name": "x", "min": 2, "max": 2}, id="exactly 2"),
        pytest.param({"cmdline": r"^/usr/bin/python3? .*\bworker\b"}, id="a cmdline regex"),
    ],
)
def test_process_options_that_are_fine(options: dict) -> None:
    parsed, errors = convert_options(ProcessCheck.Options, options)
    assert errors == [] and parsed is not None
