"""Issue 7, point 7: a state directory that fills up, turns read-only or stays locked midway — alerting
carries on in memory, nothing partial is written, the daemon's /readyz says so and recovers; a
corrupt database is set aside and a fresh one started, by `ce-agent run` and by the daemon."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ce_agent.store import Store
from tests.agentproc import AgentProcess
from tests.conftest import Agent
from tests.receivers import Webhook

# What a run keeps: counted before and after a failure, to prove the database holds a transaction
# whole or not at all.
TABLES = ("results", "alerts", "alert_history", "outbox", "notification_log")


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=10)


def _root_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=10).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


@dataclass
class Disk:
    """A small filesystem mounted as the state directory; `break_it` is a shell command that makes it
    fail as the issue says (full, or read-only under the open database), `mend` undoes it."""

    state: Path
    break_it: str
    reason: str  # what the error says, lowercase without dashes
    mend: Callable[[], None]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Disk]:
    """A real 2 MiB tmpfs: `break_it` fills it to a real ENOSPC; `mend` deletes the filler."""
    _root_or_skip()
    state = tmp_path / "state"
    state.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=2M,mode=0700", "tmpfs", str(state))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield Disk(state, f"dd if=/dev/zero of={state}/filler bs=64k 2>/dev/null", "full",
                   lambda: (state / "filler").unlink(missing_ok=True))
    finally:
        _unmount(state)


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Disk]:
    """A real 4 MiB ext4 on a loop device, mounted errors=remount-ro: `break_it` triggers a
    filesystem error, and the kernel turns it read-only under the open database — what a failing
    disk does. (`mount -o remount,ro` is refused while a file is open for writing, and `chmod` does
    not stop root.) `mend` unmounts, checks and mounts it again, as an administrator would."""
    _root_or_skip()
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    image, state = tmp_path / "disk.img", tmp_path / "state"
    state.mkdir()
    with open(image, "wb") as out:
        out.truncate(4 << 20)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True, capture_output=True, timeout=30)
    mounted = _mount("-o", "loop,errors=remount-ro", str(image), str(state))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
    device = subprocess.run(["findmnt", "-no", "SOURCE", str(state)], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
    if not trigger.exists():
        _unmount(state)
        pytest.skip(f"this kernel has no {trigger}")

    def mend() -> None:
        _unmount(state)
        subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, timeout=60)
        assert _mount("-o", "loop,errors=remount-ro", str(image), str(state)).returncode == 0

    try:
        yield Disk(state, f"echo 1 > {trigger}", "disk i/o error", mend)  # SQLite says no more than that
    finally:
        _unmount(state)


def _counts(db: Path) -> dict[str, int]:
    store, _ = Store.open(db, time.time(), repair=False)  # raises if the file were damaged
    with store:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
        finally:
            conn.close()


def _fill(path: Path) -> None:
    """Write zeros until the filesystem says ENOSPC."""
    with open(path, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC


def _setup(agent: Agent, webhook: Webhook, command: str) -> None:
    agent.write("inventory.yml", f"""\
        all:
          vars:
            channels:
              hook: "{webhook.url()}"
          hosts:
            web1: {{address: 127.0.0.1}}
        """)
    agent.write("site.yml", f"""\
        - name: Disk
          hosts: web1
          checks:
            - name: Steady
              fixed: {{status: OK}}
            - name: Root disk
              command: {{argv: [sh, -c, {json.dumps(command)}]}}
              notify: [hook]
        """)


def _titles(webhook: Webhook) -> list[str]:
    return [r.json()["title"] for r in webhook.requests]


DISKS = [pytest.param("full_disk", id="disk-full-ENOSPC"), pytest.param("read_only_disk", id="read-only")]


@pytest.mark.parametrize("disk_fixture", DISKS)
def test_run_carries_on_in_memory_when_the_state_fails_midway(agent: Agent, webhook: Webhook, disk_fixture: str,
                                                              request: pytest.FixtureRequest) -> None:
    disk: Disk = request.getfixturevalue(disk_fixture)
    _setup(agent, webhook, "exit 0")
    first = agent("run", "site.yml", "-i", "inventory.yml")
    assert first.code == 0, first.err
    before = _counts(disk.state / "state.db")

    # the run's one failing check breaks the disk: after the database was opened and the earlier
    # outbox flushed, before the results are written — a failure midway
    _setup(agent, webhook, f"{disk.break_it}; echo 'the disk broke'; exit 2")
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")

    # the report, the notification and the exit code are as if nothing had happened
    assert ran.code == 2, ran.err
    report = ran.json()
    assert {c["name"]: c["status"] for c in report["results"]} == {"Steady": "OK", "Root disk": "CRITICAL"}
    assert [n["sent"] for n in report["notifications"]] == [True]
    assert _titles(webhook) == ["[CRITICAL] Root disk on web1"]
    # one warning saying what was not kept, no traceback, no `error:`
    (warning,) = [line for line in ran.err.splitlines() if "the state could not be written" in line] or [ran.err]
    assert warning.startswith("warning: ") and disk.reason in warning.lower().replace("-", ""), ran.err
    assert warning.endswith("its results and alert states were not kept"), warning
    assert "Traceback" not in ran.err and "error:" not in ran.err

    # nothing partial: once mended, the database opens and holds none of the failed run
    disk.mend()
    assert _counts(disk.state / "state.db") == before
    # ... so the next run finds the problem new and tells the channel again: a notification sent
    # from memory may go out once more, it is never lost
    _setup(agent, webhook, "echo broken; exit 2")
    again = agent("run", "site.yml", "-i", "inventory.yml")
    assert again.code == 2 and again.err == "", again.err
    after = _counts(disk.state / "state.db")
    assert after["results"] == before["results"] + 2 and after["outbox"] == 0
    assert after["alert_history"] > before["alert_history"]
    assert _titles(webhook) == ["[CRITICAL] Root disk on web1"] * 2


def test_run_carries_on_when_another_process_holds_the_state_locked(agent: Agent, webhook: Webhook) -> None:
    _setup(agent, webhook, "exit 0")
    assert agent("run", "site.yml", "-i", "inventory.yml").code == 0
    db = agent.cwd / "state" / "state.db"
    before = _counts(db)
    _setup(agent, webhook, "echo broken; exit 2")
    locker = sqlite3.connect(db, isolation_level=None, timeout=1)
    locker.execute("BEGIN EXCLUSIVE")  # past the run's 5 s busy timeout
    try:
        started = time.monotonic()
        ran = agent("run", "site.yml", "-i", "inventory.yml")
        seconds = time.monotonic() - started
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert ran.code == 2, ran.err
    assert "warning: the state could not be written" in ran.err and "locked" in ran.err, ran.err
    assert _titles(webhook) == ["[CRITICAL] Root disk on web1"]
    assert _counts(db) == before
    assert seconds < 15, f"a locked state cost {seconds:.1f} s"  # one busy timeout, not one per write


@pytest.fixture
def start(agent: Agent, test_plugins: Path) -> Iterator:
    started: list[AgentProcess] = []

    def launch() -> AgentProcess:
        proc = AgentProcess(agent.cwd, ["site.yml", "-i", "inventory.yml", "--listen", "127.0.0.1:0",
                                        "--log-format", "json"], pythonpath=[test_plugins])
        started.append(proc)
        return proc.started()

    yield launch
    for proc in started:
        proc.kill()


def _daemon_setup(agent: Agent, webhook: Webhook) -> Path:
    flag = agent.cwd / "status"
    flag.write_text("0")
    agent.write("inventory.yml", f"""\
        all:
          vars:
            channels:
              hook: "{webhook.url()}"
          hosts:
            web1: {{address: 127.0.0.1}}
        """)
    agent.write("site.yml", f"""\
        - name: Disk
          hosts: web1
          checks:
            - name: Root disk
              command: {{argv: [sh, -c, "echo status $(cat {flag}); exit $(cat {flag})"]}}
              interval: 1s
              notify: [hook]
        """)
    return flag


@pytest.mark.parametrize("disk_fixture", DISKS)
def test_the_daemon_alerts_from_memory_says_not_ready_and_recovers(start, agent: Agent, webhook: Webhook,
                                                                  disk_fixture: str,
                                                                  request: pytest.FixtureRequest) -> None:
    disk: Disk = request.getfixturevalue(disk_fixture)
    flag = _daemon_setup(agent, webhook)
    proc = start()
    proc.wait_for(lambda: proc.metric("ce_check_status", check="Root disk") == 0, 15, "a first result")
    subprocess.run(["sh", "-c", disk.break_it], timeout=30)  # dd ends with ENOSPC: its exit code is 1
    flag.write_text("2")

    # alerting carries on: the firing alert reaches the channel while nothing can be written
    proc.wait_for(lambda: _titles(webhook), 20, "the firing notification")
    assert _titles(webhook) == ["[CRITICAL] Root disk on web1"]
    code, body, _ = proc.wait_for(lambda: (r := proc.get("/readyz"))[0] == 503 and r, 10, "/readyz to say 503")
    assert "the state cannot be written" in body and disk.reason in body.lower(), body
    assert proc.log("alerting carries on in memory")["level"] == "ERROR"
    assert proc.get("/livez")[0] == 200  # alive all the same: a restart would not help
    assert "Root disk" in proc.get("/api/v1/alerts")[1]

    if disk_fixture == "full_disk":
        # space again: ready again, and what alerting did meanwhile is in the database
        disk.mend()
        proc.wait_for(lambda: proc.get("/readyz")[0] == 200, 20, "/readyz to recover")
        assert proc.log("the state can be written again")
        assert proc.stop() == 0
    else:
        # a filesystem the kernel made read-only stays so until it is unmounted: stop, mend, look
        assert proc.stop() == 0
        disk.mend()
    counts = _counts(disk.state / "state.db")  # opens: nothing damaged, nothing half-written
    assert counts["outbox"] == 0 and counts["alerts"] == (1 if disk_fixture == "full_disk" else counts["alerts"])
    # a restart from what the database holds sends the firing alert at most once more
    again = start()
    again.wait_for(lambda: (again.metric("ce_check_status", check="Root disk")) == 2, 15, "a run after the restart")
    time.sleep(1.5)  # a notification it would queue goes out at once (no group_wait here)
    assert again.stop() == 0
    expected = 1 if disk_fixture == "full_disk" else 2
    assert _titles(webhook) == ["[CRITICAL] Root disk on web1"] * expected


JUNK = b"this is not a database\n" * 512


# `ce-agent run` with a corrupt database: tests/alerting/test_lifecycle.py::test_a_corrupt_state_database_is_moved_aside


def test_the_daemon_sets_a_corrupt_database_aside_and_starts_afresh(start, agent: Agent, webhook: Webhook) -> None:
    _daemon_setup(agent, webhook).write_text("2")
    (agent.cwd / "state").mkdir()
    (agent.cwd / "state" / "state.db").write_bytes(JUNK)
    proc = start()
    record = proc.wait_for(lambda: proc.log("was damaged"), 10, "the warning")
    assert record["level"] == "WARNING"
    (aside,) = (agent.cwd / "state").glob("state.db.corrupt-*")
    assert aside.name in record["message"] and aside.read_bytes() == JUNK
    proc.wait_for(lambda: _titles(webhook), 20, "the firing notification")
    assert proc.get("/readyz")[0] == 200
    assert proc.stop() == 0
