"""The fault-injection suite's tools: a measured `ce-agent` process, and the figures it reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Runs the command it is given and writes its exit code, wall time and peak RSS to a file. Measured
# in a process of its own: RUSAGE_CHILDREN of the pytest process is a maximum over every child it
# ever had (pip installs included), so a delta there proves nothing.
_WRAPPER = """\
import json, resource, subprocess, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
code = subprocess.call(command)
seconds = time.perf_counter() - started
with open(report, "w") as fh:
    json.dump({"code": code, "seconds": seconds, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, fh)
"""

#: what every refused input must cost at most, start-up of the interpreter left out (issue 7, point 4)
TIME_BUDGET_S = 1.0
MEMORY_BUDGET_MIB = 100.0

FIGURES: dict[str, list[str]] = {}


@dataclass
class Measured:
    """A finished `python -m ce_agent ...` with what it cost."""

    code: int
    out: str
    err: str
    seconds: float
    peak_mib: float


def measure(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30,
            prefix: list[str] | None = None) -> Measured:
    """`python -m ce_agent ARGS` in `cwd` with a state directory of its own, timed and its peak RSS read.

    The process group is killed on timeout, so a command that blocks (a FIFO nobody writes) fails
    the test instead of outliving it. `prefix` runs ce-agent through another command (setpriv)."""
    report = cwd / ".measured.json"
    report.unlink(missing_ok=True)
    full_env = {**os.environ, "CE_AGENT_STATE_DIR": str(cwd / "state"), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, str(report), *(prefix or []), sys.executable, "-m", "ce_agent", *args],
        cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"ce-agent {' '.join(args)} did not finish within {timeout} s") from None
    figures = json.loads(report.read_text())
    return Measured(figures["code"], out, err, figures["seconds"], figures["maxrss_kib"] / 1024)


@pytest.fixture
def startup(tmp_path: Path) -> float:
    """Seconds `python -m ce_agent --version` takes here and now: the cost of starting, not of the input."""
    return min(measure(tmp_path, "--version").seconds for _ in range(2))


def record(section: str, line: str) -> None:
    """A figure for the end-of-run summary (and for docs/reliability.md)."""
    FIGURES.setdefault(section, []).append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for section, lines in FIGURES.items():
        terminalreporter.write_line(f"{section}:")
        for line in lines:
            terminalreporter.write_line(f"  {line}")
