"""The `command` check: real Nagios plugins and real scripts, their exit codes, output and perfdata."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from ce_agent.checks.command import MAX_OUTPUT, CommandCheck
from ce_agent.contracts import Check, Status

MakeCheck = Callable[..., Check]


def run(make_check: MakeCheck, raw: dict, timeout: float = 10.0):
    return make_check(CommandCheck, raw, timeout=timeout).run()


def live_group_members(pgid: int) -> list[psutil.Process]:
    """Processes of a process group that are still alive (zombies wait for a reaper, they run nothing)."""
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return alive


def wait_until_gone(pgid: int, deadline: float) -> list[psutil.Process]:
    while (left := live_group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# --- real Nagios plugins -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "summary"),
    [
        pytest.param("0", Status.OK, "OK: all good", id="0 is OK"),
        pytest.param("1", Status.WARNING, "WARNING: all good", id="1 is WARNING"),
        pytest.param("2", Status.CRITICAL, "CRITICAL: all good", id="2 is CRITICAL"),
        pytest.param("3", Status.UNKNOWN, "UNKNOWN: all good", id="3 is UNKNOWN"),
    ],
)
def test_check_dummy_exit_codes(
    make_check: MakeCheck, nagios_plugins: Path, code: str, status: Status, summary: str
) -> None:
    result = run(make_check, {"argv": [str(nagios_plugins / "check_dummy"), code, "all good"]})
    assert (result.status, result.summary, result.metrics) == (status, summary, [])


def test_check_load_free_form_command_line(make_check: MakeCheck, nagios_plugins: Path) -> None:
    assert CommandCheck.FREE_FORM == "cmd"
    result = run(make_check, {"cmd": f"{nagios_plugins}/check_load -w 1000,1000,1000 -c 2000,2000,2000"})
    assert result.status is Status.OK
    assert result.summary.startswith("LOAD OK - total load average:")
    assert "|" not in result.summary
    assert [(x.name, x.warn, x.crit, x.min) for x in result.metrics] == [
        ("load1", "1000.000", "2000.000", 0),
        ("load5", "1000.000", "2000.000", 0),
        ("load15", "1000.000", "2000.000", 0),
    ]
    assert all(isinstance(x.value, float) and x.value >= 0 for x in result.metrics)


def test_check_disk_bytes_perfdata(make_check: MakeCheck, nagios_plugins: Path) -> None:
    result = run(make_check, {"argv": [f"{nagios_plugins}/check_disk", "-w", "0%", "-c", "0%", "-p", "/"]})
    assert result.status is Status.OK, result.summary
    [root] = result.metrics
    assert (root.name, root.unit, root.min) == ("/", "B", 0)
    assert root.max is not None and 0 < root.value <= root.max


def test_check_procs_counts_processes(make_check: MakeCheck, nagios_plugins: Path) -> None:
    result = run(make_check, {"cmd": f"{nagios_plugins}/check_procs -w 100000 -c 200000"})
    assert result.status is Status.OK, result.summary
    [procs] = result.metrics
    assert procs.name == "procs" and procs.value >= 1


def test_check_file_age_critical_on_an_old_file(make_check: MakeCheck, nagios_plugins: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.txt"
    old.write_text("hello")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    result = run(make_check, {"argv": [f"{nagios_plugins}/check_file_age", "-f", str(old), "-w", "60", "-c", "120"]})
    assert result.status is Status.CRITICAL
    assert "FILE_AGE CRITICAL" in result.summary
    age, size = result.metrics
    assert (age.name, age.unit, age.warn, age.crit) == ("age", "s", "60", "120")
    assert age.value >= 3600
    assert (size.name, size.value, size.unit) == ("size", 5, "B")


def test_check_dummy_with_a_worse_threshold(make_check: MakeCheck, nagios_plugins: Path, script: Callable) -> None:
    # check_dummy has no perfdata: thresholds have nothing to judge, which is itself a problem
    result = run(make_check, {"argv": [f"{nagios_plugins}/check_dummy", "0", "fine"], "critical": "10"})
    assert result.status is Status.UNKNOWN
    assert result.summary == "OK: fine (no perfdata for warning/critical)"


# --- scripts: exit codes, output, perfdata ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "summary"),
    [
        pytest.param("echo fine; exit 0", Status.OK, "fine", id="exit 0"),
        pytest.param("echo meh; exit 1", Status.WARNING, "meh", id="exit 1"),
        pytest.param("echo bad; exit 2", Status.CRITICAL, "bad", id="exit 2"),
        pytest.param("echo dunno; exit 3", Status.UNKNOWN, "dunno", id="exit 3"),
        pytest.param("echo odd; exit 4", Status.UNKNOWN, "exit code 4: odd", id="exit 4 is UNKNOWN"),
        pytest.param("echo not found >&2; exit 127", Status.UNKNOWN, "exit code 127: not found", id="exit 127"),
        pytest.param("echo max; exit 255", Status.UNKNOWN, "exit code 255: max", id="exit 255"),
        pytest.param("exit 0", Status.OK, "(no output) exit 0", id="no output, exit 0"),
        pytest.param("exit 2", Status.CRITICAL, "(no output) exit 2", id="no output, exit 2"),
        pytest.param("exit 42", Status.UNKNOWN, "(no output) exit 42", id="no output, exit 42"),
        pytest.param("echo '   '; exit 1", Status.WARNING, "(no output) exit 1", id="blank output"),
        pytest.param("echo only stderr >&2; exit 2", Status.CRITICAL, "only stderr", id="stderr is output too"),
        pytest.param("echo '| a=1'; exit 0", Status.OK, "(no summary) exit 0", id="perfdata but no summary"),
        pytest.param("kill -KILL $$", Status.UNKNOWN, "killed by SIGKILL", id="killed by a signal"),
        pytest.param("echo '  padded  | x=1'", Status.OK, "padded", id="summary is stripped"),
    ],
)
def test_script_exit_codes_and_summary(
    make_check: MakeCheck, script: Callable, body: str, status: Status, summary: str
) -> None:
    result = run(make_check, {"argv": [script(body)]})
    assert (result.status, result.summary) == (status, summary)


def test_long_output_and_perfdata_on_later_lines(make_check: MakeCheck, script: Callable) -> None:
    body = """\
echo "WARNING - 1 of 3 queues is slow | queue_a=3;10;20;0"
echo "queue_a: 3 jobs"
echo "queue_b: unreachable" >&2
echo "queue_c: 15 jobs | queue_b=U;10;20;0"
echo "'queue c'=15;10;20;0;"
exit 1"""
    result = run(make_check, {"argv": [script(body)]})
    assert result.status is Status.WARNING
    assert result.summary == "WARNING - 1 of 3 queues is slow"
    assert result.details == "queue_a: 3 jobs\nqueue_b: unreachable\nqueue_c: 15 jobs"
    assert [(x.name, x.value, x.warn, x.crit) for x in result.metrics] == [
        ("queue_a", 3, "10", "20"),
        ("queue_b", None, "10", "20"),
        ("queue c", 15, "10", "20"),
    ]


def test_huge_output_is_cut_not_blocking(make_check: MakeCheck, script: Callable) -> None:
    result = run(make_check, {"argv": [script(f"head -c {3 * MAX_OUTPUT} /dev/zero | tr '\\0' x; exit 0")]})
    assert result.status is Status.OK
    assert result.summary.endswith(" (output truncated)")
    assert len(result.summary) < MAX_OUTPUT + 100


# --- how the command is given and run --------------------------------------------------------------


def test_cmd_is_split_like_a_shell_but_never_run_by_one(make_check: MakeCheck) -> None:
    result = run(make_check, {"cmd": "echo 'two  spaces' \"$HOME\" ; ls > /dev/null"})
    assert result.summary == "two  spaces $HOME ; ls > /dev/null"


def test_argv_is_passed_as_is(make_check: MakeCheck) -> None:
    result = run(make_check, {"argv": ["echo", "a  b", "*", "$HOME"]})
    assert result.summary == "a  b * $HOME"


def test_env_is_merged_over_the_agents_environment(make_check: MakeCheck, script: Callable) -> None:
    path = script('echo "var=$CE_TEST_VAR home=${HOME:+set}"')
    result = run(make_check, {"argv": [path], "env": {"CE_TEST_VAR": "hello world"}})
    assert result.summary == "var=hello world home=set"


def test_cwd(make_check: MakeCheck, tmp_path: Path) -> None:
    result = run(make_check, {"argv": ["pwd"], "cwd": str(tmp_path)})
    assert result.summary == str(tmp_path)


def test_stdin_is_empty(make_check: MakeCheck) -> None:
    result = run(make_check, {"cmd": "wc -c"}, timeout=5)
    assert result.summary == "0"


@pytest.mark.parametrize(
    ("raw", "summary"),
    [
        pytest.param({"cmd": "/nonexistent/check_foo -w 1"}, "no such program: /nonexistent/check_foo", id="missing"),
        pytest.param({"cmd": "ce-agent-no-such-xyz"}, "no such program: ce-agent-no-such-xyz", id="not on PATH"),
        pytest.param({"argv": ["/etc/passwd"]}, "permission denied: /etc/passwd", id="not executable"),
        pytest.param({"argv": ["/etc"]}, "permission denied: /etc", id="a directory"),
        pytest.param(
            {"argv": ["true"], "cwd": "/nonexistent-dir"},
            "cannot use directory '/nonexistent-dir': No such file or directory",
            id="missing cwd",
        ),
    ],
)
def test_cannot_run(make_check: MakeCheck, raw: dict, summary: str) -> None:
    result = run(make_check, raw)
    assert (result.status, result.summary) == (Status.UNKNOWN, summary)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"argv": ["true"], "cmd": "true"}, "give exactly one of 'argv' (a list) or 'cmd' (a command line)",
                     id="both argv and cmd"),
        pytest.param({}, "give exactly one of 'argv' (a list) or 'cmd' (a command line)", id="neither argv nor cmd"),
        pytest.param({"cmd": "   "}, "cmd: the command is empty", id="blank cmd"),
        pytest.param({"argv": []}, "argv: the command is empty", id="empty argv"),
        pytest.param({"cmd": "echo 'unclosed"}, "cmd: cannot split it like a shell would: No closing quotation",
                     id="bad quoting"),
    ],
)
def test_options_refused_when_the_playbook_loads(raw: dict, message: str) -> None:
    from ce_agent.options import convert_options

    options, errors = convert_options(CommandCheck.Options, raw)
    assert options is None
    assert [e.message for e in errors] == [message]


def test_script_without_shebang_is_unknown(make_check: MakeCheck, tmp_path: Path) -> None:
    path = tmp_path / "noshebang"
    path.write_bytes(b"\x00\x01binary garbage")
    path.chmod(0o755)
    result = run(make_check, {"argv": [str(path)]})
    assert result.status is Status.UNKNOWN
    assert result.summary == f"cannot run {path}: Exec format error"


# --- warning/critical on the first perfdata value ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "thresholds", "status", "summary_end"),
    [
        pytest.param("echo 'OK | t=5s;;;0 u=99'", {"warning": "10", "critical": "20"}, Status.OK, "OK", id="within"),
        pytest.param(
            "echo 'OK | t=15s;;;0 u=0'", {"warning": "10", "critical": "20"}, Status.WARNING,
            "OK (t=15s alerts on warning 10)", id="above warning",
        ),
        pytest.param(
            "echo 'OK | t=25s'", {"warning": "10", "critical": "20"}, Status.CRITICAL,
            "OK (t=25s alerts on critical 20)", id="above critical",
        ),
        pytest.param(
            "echo 'OK | t=15'", {"critical": "@10:20"}, Status.CRITICAL, "OK (t=15 alerts on critical @10:20)",
            id="inside range",
        ),
        pytest.param(
            "echo 'OK | free=3'", {"warning": "5:"}, Status.WARNING, "OK (free=3 alerts on warning 5:)",
            id="low-side range",
        ),
        pytest.param(
            "echo 'CRIT | t=1'; exit 2", {"warning": "10", "critical": "20"}, Status.CRITICAL, "CRIT",
            id="never better than the exit code",
        ),
        pytest.param(
            "echo 'WARN | t=25'; exit 1", {"critical": "20"}, Status.CRITICAL,
            "WARN (t=25 alerts on critical 20)", id="worse than the exit code",
        ),
        pytest.param(
            "echo 'OK | t=U'", {"critical": "20"}, Status.UNKNOWN, "OK (t=U: no value for warning/critical)",
            id="unknown value",
        ),
        pytest.param(
            "echo 'OK'", {"critical": "20"}, Status.UNKNOWN, "OK (no perfdata for warning/critical)",
            id="no perfdata",
        ),
    ],
)
def test_thresholds_on_the_first_metric(
    make_check: MakeCheck, script: Callable, body: str, thresholds: dict, status: Status, summary_end: str
) -> None:
    result = run(make_check, {"argv": [script(body)], **thresholds})
    assert (result.status, result.summary) == (status, summary_end)


def test_thresholds_replace_the_first_metrics_ranges(make_check: MakeCheck, script: Callable) -> None:
    result = run(make_check, {"argv": [script("echo 'OK | a=1;5;6 b=2;7;8'")], "critical": "3"})
    assert [(x.name, x.warn, x.crit) for x in result.metrics] == [("a", "5", "3"), ("b", "7", "8")]


# --- timeouts kill the whole process group ------------------------------------------------------------

STUBBORN = """\
trap '' TERM
echo $$ > "{pidfile}"
echo "starting | a=1"
sleep 300 &
sleep 300
"""


def test_timeout_kills_the_whole_process_group(make_check: MakeCheck, script: Callable, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    check = make_check(CommandCheck, {"argv": [script(STUBBORN.format(pidfile=pidfile))]}, timeout=1)
    started = time.monotonic()
    result = check.run()
    elapsed = time.monotonic() - started
    assert (result.status, result.summary) == (Status.UNKNOWN, "timed out after 1s")
    assert result.details == "starting"
    assert elapsed < 3, f"took {elapsed:.1f}s with a 1s timeout"
    assert wait_until_gone(int(pidfile.read_text()), started + 1 + 5) == []


def test_cancel_from_another_thread_kills_the_group(make_check: MakeCheck, script: Callable, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    check = make_check(CommandCheck, {"argv": [script(STUBBORN.format(pidfile=pidfile))]}, timeout=30)
    results = []
    worker = threading.Thread(target=lambda: results.append(check.run()))
    started = time.monotonic()
    worker.start()
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() - started < 5, "the script did not start"
        time.sleep(0.02)
    check.cancel()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert results[0].status is Status.UNKNOWN and results[0].summary == "timed out after 30s"
    assert wait_until_gone(int(pidfile.read_text()), time.monotonic() + 5) == []


def test_children_holding_the_output_do_not_hold_the_check(
    make_check: MakeCheck, script: Callable, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    body = f'echo $$ > "{pidfile}"; sleep 300 & echo "OK - started a straggler"; exit 0'
    started = time.monotonic()
    result = run(make_check, {"argv": [script(body)]}, timeout=20)
    assert (result.status, result.summary) == (Status.OK, "OK - started a straggler")
    assert time.monotonic() - started < 3
    assert wait_until_gone(int(pidfile.read_text()), time.monotonic() + 5) == []
