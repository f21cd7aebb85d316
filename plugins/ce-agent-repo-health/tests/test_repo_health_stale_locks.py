"""`stale_locks`: lock files older than max_age whose owner (when they name a pid) is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ce_agent.contracts import Status
from ce_agent_repo_health.stale_locks import StaleLocksCheck

HOUR = 3600


def dead_pid() -> int:
    """The pid of a process that has just exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def lock(directory: Path, name: str, content: bytes | str, age: float) -> None:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    then = time.time() - age
    os.utime(path, (then, then))


@pytest.mark.parametrize(
    ("files", "options", "status", "summary"),
    [
        pytest.param([], {}, Status.OK, "no stale lock files in", id="nothing-locked"),
        pytest.param([("app.lock", "", 2 * HOUR)], {}, Status.WARNING, "app.lock (2h old)", id="old-empty-lock"),
        pytest.param([("app.lock", "", 10)], {}, Status.OK, "1 lock files checked", id="young-lock"),
        pytest.param(
            [("app.pid", "{alive}\n", 2 * HOUR)], {}, Status.OK, "1 lock files checked", id="old-but-owner-alive"
        ),
        pytest.param(
            [("app.pid", "{dead}\n", 2 * HOUR)], {}, Status.WARNING, "app.pid (2h old, pid {dead} not running)",
            id="old-and-owner-gone",
        ),
        pytest.param(
            [("app.pid", "{dead} host.example.com\n", 2 * HOUR)], {}, Status.WARNING, "pid {dead} not running",
            id="pid-then-more-text",
        ),
        pytest.param([("app.pid", "{dead}", 60)], {}, Status.OK, "no stale", id="owner-gone-but-young"),
        pytest.param(
            [("index.lock", b"DIRC\x00\x00\x00\x02", 2 * HOUR)], {}, Status.WARNING, "index.lock (2h old)",
            id="binary-lock-judged-by-age",
        ),
        pytest.param([("LOCK", "", 2 * HOUR)], {}, Status.WARNING, "LOCK (2h old)", id="LOCK-by-default"),
        pytest.param([("notes.txt", "", 2 * HOUR)], {}, Status.OK, "0 lock files checked", id="other-files-ignored"),
        pytest.param(
            [("app.lock", "", 20 * 60)], {"max_age": "10m"}, Status.WARNING, "app.lock (20m old)", id="max-age-option"
        ),
        pytest.param(
            [("sub/deep/x.lock", "", 2 * HOUR), ("top.lock", "", 2 * HOUR)],
            {"patterns": ["**/*.lock"]}, Status.WARNING, "2 stale lock files", id="recursive-pattern",
        ),
        pytest.param(
            [("sub/deep/x.lock", "", 2 * HOUR)], {}, Status.OK, "0 lock files checked", id="default-not-recursive"
        ),
        pytest.param(
            [(f"{n}.lock", "", 2 * HOUR) for n in range(7)], {}, Status.WARNING, "4.lock (2h old) and 2 more",
            id="long-list-shortened",
        ),
    ],
)
def test_stale_locks(tmp_path, run_check, files, options, status, summary) -> None:
    pids = {"alive": os.getpid(), "dead": dead_pid()}
    for name, content, age in files:
        lock(tmp_path, name, content.format(**pids) if isinstance(content, str) else content, age)

    result = run_check(StaleLocksCheck, path=str(tmp_path), **options)

    assert result.status is status, result.summary
    assert summary.format(**pids) in result.summary


def test_metrics(tmp_path, run_check) -> None:
    lock(tmp_path, "a.lock", "", 3 * HOUR)
    lock(tmp_path, "b.lock", "", 60)

    result = run_check(StaleLocksCheck, path=str(tmp_path))

    metrics = {m.name: m.value for m in result.metrics}
    assert metrics["stale_locks_stale_files"] == 1
    assert metrics["stale_locks_files"] == 2
    assert 3 * HOUR - 5 < metrics["stale_locks_oldest_age_seconds"] < 3 * HOUR + 60


def test_missing_directory_is_unknown(tmp_path, run_check) -> None:
    result = run_check(StaleLocksCheck, path=str(tmp_path / "nowhere"))

    assert result.status is Status.UNKNOWN
    assert "no such directory" in result.summary


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'path'", id="path-required"),
        pytest.param({"path": "/run", "max_age": "soon"}, "duration", id="max-age-is-a-duration"),
        pytest.param({"path": "/run", "patterns": []}, "length >= 1", id="patterns-not-empty"),
    ],
)
def test_invalid_options(option_errors, raw, error) -> None:
    assert error in option_errors(StaleLocksCheck, **raw)[0]
