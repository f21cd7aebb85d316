"""Issue 7, point 3: checks that misbehave never take the agent or the other checks' schedules with them.

Everything runs through the real daemon (`ce-agent agent` on a free port, tests/agentproc.py) with
real misbehaving plugins, pip-installed from tests/plugins/ce-agent-misbehaving (os._exit, a
segmentation fault, endless recursion, a plugin failing every other run) and
tests/fixtures/plugins/ce-agent-testplugins (raises, hangs).

A Python plugin runs in the agent's process: an exception, a recursion or a hang is caught or
abandoned there, but `os._exit()` or a crash in C code ends the whole process. A task marked
`isolate: true` runs its plugin in a forked child instead, which the agent survives, and which it can
kill at the timeout (see docs/reliability.md, section 3).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentproc import AgentProcess
from tests.conftest import ROOT, Agent, pip_install_target
from tests.reliability.conftest import record

INVENTORY = "all:\n  hosts:\n    localhost: {}\n"
MISBEHAVING = ROOT / "tests" / "plugins" / "ce-agent-misbehaving"


@pytest.fixture(scope="session")
def misbehaving_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ce-agent-misbehaving (exits, recurses, flaky, sleepy), pip-installed."""
    return pip_install_target(tmp_path_factory.mktemp("site-misbehaving"), MISBEHAVING)


@pytest.fixture
def daemon(agent: Agent, test_plugins: Path, misbehaving_plugins: Path) -> Iterator:
    """Starts `ce-agent agent` on a playbook; every agent started is killed at the end of the test."""
    started: list[AgentProcess] = []

    def start(playbook: str, *args: str, wait: bool = True) -> AgentProcess:
        agent.write("pb.yml", playbook)
        agent.write("inv.yml", INVENTORY)
        proc = AgentProcess(agent.cwd, ["pb.yml", "-i", "inv.yml", "--listen", "127.0.0.1:0", *args],
                            env={"PYTHONUNBUFFERED": "1"}, pythonpath=[test_plugins, misbehaving_plugins])
        started.append(proc)
        return proc.started() if wait else proc

    yield start
    for proc in started:
        proc.kill()


def _tasks(proc: AgentProcess) -> dict[str, dict]:
    return {t["name"]: t for t in json.loads(proc.get("/api/v1/status")[1])["tasks"]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# ---- a Python plugin that raises, hangs, recurses or ends its process -------------------------------

BAD_PLUGINS = """\
- name: Bad
  hosts: localhost
  checks:
    - name: fast
      fixed: {status: OK, summary: on time}
      interval: 1s
    - name: raises
      raises: {message: database is locked}
      interval: 1s
    - name: hangs
      sleepy: {seconds: 3600}
      interval: 1s
      timeout: 1s
    - name: recurses
      recurses: {}
      interval: 1s
    - name: exits
      exits: {code: 3}
      isolate: true
      interval: 1s
    - name: segfaults
      exits: {segfault: true}
      isolate: true
      interval: 1s
    - name: hangs isolated
      sleepy: {seconds: 3600}
      isolate: true
      interval: 1s
      timeout: 1s
"""

EXPECTED = [
    pytest.param("raises", "RuntimeError: database is locked", id="raises"),
    pytest.param("hangs", "timed out after 1s", id="hangs"),  # or "still running after its timeout ..."
    pytest.param("recurses", "RecursionError: maximum recursion depth exceeded", id="recurses"),
    pytest.param("exits", "PluginProcessDied: the plugin's process exited with code 3 without a result", id="os-exit"),
    pytest.param("segfaults", "PluginProcessDied: the plugin's process was killed by SIGSEGV", id="segfault"),
    pytest.param("hangs isolated", "timed out after 1s", id="hangs-isolated"),
]


def test_plugins_that_raise_hang_recurse_or_exit_leave_the_agent_and_other_schedules_alone(daemon, agent: Agent) -> None:
    proc = daemon(BAD_PLUGINS)
    fast = {"check": "fast", "host": "localhost", "play": "Bad"}
    proc.wait_for(lambda: (proc.metric("ce_check_runs_total", status="ok", **fast) or 0) >= 3, 20, "3 runs of fast")
    began, runs_before = time.monotonic(), proc.metric("ce_check_runs_total", status="ok", **fast) or 0
    time.sleep(6)
    seconds, runs = time.monotonic() - began, (proc.metric("ce_check_runs_total", status="ok", **fast) or 0) - runs_before
    assert proc.proc.poll() is None, "the agent survived every plugin"
    tasks = _tasks(proc)
    for param in EXPECTED:
        name, summary = param.values
        assert tasks[name]["status"] == "UNKNOWN", tasks[name]
        if name == "hangs":  # the thread cannot be killed: later due runs are skipped while it is stuck
            assert tasks[name]["summary"] in (summary, ) or tasks[name]["summary"].startswith(
                "still running after its timeout"), tasks[name]
        else:
            assert tasks[name]["summary"] == summary, tasks[name]
    # an isolated plugin that hangs is killed at its timeout (its child process), so it keeps running
    # into its timeout instead of being "still running after its timeout" for good
    isolated = {"check": "hangs isolated", "host": "localhost", "play": "Bad"}
    assert (proc.metric("ce_check_timeouts_total", **isolated) or 0) >= 3
    # every start of every task within 1 s of its due time: the +Inf bucket equals the le=1 one
    total = proc.metric("ce_scheduler_lateness_seconds_count")
    within_1s = proc.metric("ce_scheduler_lateness_seconds_bucket", le="1.0")
    within_100ms = proc.metric("ce_scheduler_lateness_seconds_bucket", le="0.1")
    assert total and within_1s == total, (within_1s, total)
    # and `fast` ran once a second throughout
    assert runs >= int(seconds) - 1, (runs, seconds)
    assert proc.stop() == 0
    with sqlite3.connect(agent.cwd / "state" / "state.db") as db:
        stamps = [ts for (ts,) in db.execute("SELECT ts FROM results WHERE check_name = 'fast' ORDER BY ts")]
    drift = max(abs((b - a) - 1.0) for a, b in zip(stamps, stamps[1:]))
    assert drift < 1.0, drift
    record("3. misbehaving checks", f"a 1 s check beside 6 misbehaving plugins: {runs} runs in {seconds:.1f} s, "
           f"{within_100ms:.0f} of {total:.0f} starts within 0.1 s of due, all within 1 s; "
           f"worst gap between its recorded results {1 + drift:.2f} s")


def test_os_exit_without_isolate_ends_the_agent_with_the_plugins_code_and_a_restart_carries_on(
        daemon, agent: Agent) -> None:
    """Not isolated, `os._exit(3)` ends the agent at once (no Python code can stop it). The honest
    guarantee is then the service manager's: the exit is a failure (code 3), which the unit that
    `ce-agent service install` writes restarts (Restart=on-failure), and the state survives it."""
    playbook = BAD_PLUGINS.split("    - name: raises")[0] + "    - name: exits\n      exits: {code: 3}\n      interval: 1s\n"
    proc = daemon(playbook)
    proc.wait_for(lambda: proc.proc.poll() is not None, 15, "the agent to end")
    assert proc.proc.returncode == 3
    unit = agent("service", "install", "--playbook", "pb.yml", "--dry-run")
    assert unit.code == 0 and "Restart=on-failure" in unit.out, unit.out
    with sqlite3.connect(agent.cwd / "state" / "state.db") as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
    # restarted with the task isolated, the same state: it runs and reports, the agent stays up
    proc = daemon(playbook.replace("      exits: {code: 3}\n", "      exits: {code: 3}\n      isolate: true\n"))
    proc.wait_for(lambda: _tasks(proc)["exits"]["status"] == "UNKNOWN", 15, "exits to be UNKNOWN")
    assert proc.proc.poll() is None
    assert proc.stop() == 0


# ---- a command that ignores SIGTERM and forks a sleeping child --------------------------------------

STUBBORN = """\
- name: Stubborn
  hosts: localhost
  checks:
    - name: stubborn command
      command:
        argv: [sh, -c, "trap '' TERM; sleep 293 & echo $$ $! > {{ pidfile }}; sleep 293; echo never"]
      interval: 1s
      timeout: 2s
"""


@pytest.mark.parametrize("isolate", [
    pytest.param(False, id="in-process"),
    pytest.param(True, id="isolated"),
])
def test_a_command_ignoring_sigterm_and_its_sleeping_child_are_gone_within_timeout_plus_5s(
        daemon, agent: Agent, isolate: bool) -> None:
    pidfile = agent.cwd / "pids"
    playbook = STUBBORN + ("      isolate: true\n" if isolate else "")
    proc = daemon(playbook, "-e", f"pidfile={pidfile}")
    proc.wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2, 15, "the command to start")
    started = time.monotonic()
    shell, child = map(int, pidfile.read_text().split())
    deadline = started + 2 + 5
    while (_alive(shell) or _alive(child)) and time.monotonic() < deadline + 1:
        time.sleep(0.02)
    gone = time.monotonic() - started
    assert not _alive(shell) and not _alive(child), "the command or its child outlived timeout + 5 s"
    assert gone < 2 + 5, gone
    proc.wait_for(lambda: _tasks(proc)["stubborn command"]["summary"] == "timed out after 2s", 5, "the timeout")
    assert proc.stop() == 0
    record("3. misbehaving checks", f"a command ignoring SIGTERM with a sleeping child ({'isolated' if isolate else 'in-process'}), "
           f"timeout 2 s: the whole group gone {gone:.2f} s after it started")


# ---- a plugin that fails 5 times in 10 runs ---------------------------------------------------------

FLAKY = """\
- name: Flaky
  hosts: localhost
  checks:
    - name: reported
      flaky: {{counter: "{reported}"}}
      interval: 1s
    - name: disabled
      flaky: {{counter: "{disabled}"}}
      interval: 1s
      disable_after_errors: 5
"""


def test_a_plugin_failing_5_of_10_runs_is_reported_and_disabled_by_config_until_a_reload(daemon, agent: Agent) -> None:
    counters = {name: agent.cwd / f"{name}.count" for name in ("reported", "disabled")}
    proc = daemon(FLAKY.format(**counters))
    labels = {name: {"check": name, "host": "localhost", "play": "Flaky"} for name in counters}
    # run 10 is the 5th error (every other run raises): one warning, the metric, the status
    proc.wait_for(lambda: proc.log("reported is failing"), 25, "the warning about 'reported'")
    assert proc.log("reported is failing")["message"].startswith(
        "reported is failing: 5 plugin errors in its last 10 runs (the last: ConnectionError: run 10:")
    proc.wait_for(lambda: proc.metric("ce_check_disabled", **labels["disabled"]) == 1, 10, "'disabled' disabled")
    stopped_at = int(counters["disabled"].read_text())
    assert stopped_at == 10
    # the status follows once the results thread has recorded both results (the error, then "disabled")
    tasks = proc.wait_for(lambda: (t := _tasks(proc))["disabled"]["summary"].startswith("disabled") and t, 5, "status")
    assert tasks["reported"]["broken"] and tasks["reported"]["plugin_errors"] == 5 and not tasks["reported"]["disabled"]
    assert tasks["disabled"]["status"] == "UNKNOWN"
    assert tasks["disabled"]["summary"].startswith("disabled after 5 plugin errors in the last 10 runs (the last: "
                                                   "ConnectionError: run 10: the service dropped the connection)")
    assert tasks["disabled"]["next_run"] is None and tasks["disabled"]["disabled"] == tasks["disabled"]["summary"]
    assert proc.metric("ce_check_plugin_errors", **labels["reported"]) == 5
    assert proc.metric("ce_check_disabled", **labels["reported"]) == 0
    time.sleep(2.5)
    assert int(counters["disabled"].read_text()) == stopped_at, "a disabled task is not run"
    assert int(counters["reported"].read_text()) >= 12, "a task that is only reported keeps running"
    assert len([r for r in proc.records if "is failing" in r.get("message", "")]) == 1, "warned once"
    # a reload is the operator's "try again"
    proc.signal(signal.SIGHUP)
    proc.wait_for(lambda: int(counters["disabled"].read_text()) > stopped_at, 10, "'disabled' to run again")
    assert proc.metric("ce_check_disabled", **labels["disabled"]) in (None, 0)
    assert proc.stop() == 0


@pytest.mark.parametrize("task, message", [
    pytest.param("isolate: yes please", "'isolate' must be true or false, got 'yes please'", id="isolate-not-bool"),
    pytest.param("disable_after_errors: 0", "'disable_after_errors' must be a whole number from 1 to 10", id="zero"),
    pytest.param("disable_after_errors: 11", "'disable_after_errors' must be a whole number from 1 to 10", id="over-window"),
    pytest.param("disable_after_errors: true", "got True", id="bool"),
    pytest.param("disable_after_erors: 5", "did you mean 'disable_after_errors'", id="typo"),
])
def test_the_new_task_keys_are_validated_with_their_place(agent: Agent, task: str, message: str) -> None:
    agent.write("pb.yml", f"- hosts: localhost\n  checks:\n    - fixed: {{}}\n      {task}\n")
    agent.write("inv.yml", INVENTORY)
    ran = agent("validate", "pb.yml", "-i", "inv.yml")
    assert ran.code == 2, ran
    assert "pb.yml:4:" in ran.err and message in ran.err, ran.err
