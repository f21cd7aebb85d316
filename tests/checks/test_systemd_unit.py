"""The `systemd_unit` check: unit names, `systemctl show` outputs mapped to a status, and a real run here."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ce_agent.checks.systemd_unit import SystemdUnitCheck, evaluate_unit, parse_show, unit_name
from ce_agent.contracts import Check, Status

MakeCheck = Callable[..., Check]


@pytest.mark.parametrize(
    ("given", "full"),
    [
        pytest.param("nginx", "nginx.service", id="bare name gets .service"),
        pytest.param("nginx.service", "nginx.service", id="service kept"),
        pytest.param("backup.timer", "backup.timer", id="timer kept"),
        pytest.param("docker.socket", "docker.socket", id="socket kept"),
        pytest.param("multi-user.target", "multi-user.target", id="target kept"),
        pytest.param("home.mount", "home.mount", id="mount kept"),
        pytest.param("user.slice", "user.slice", id="slice kept"),
        pytest.param("getty@tty1", "getty@tty1.service", id="template instance"),
        pytest.param("my.app", "my.app.service", id="a dot that is not a unit type"),
        pytest.param(" sshd ", "sshd.service", id="spaces trimmed"),
    ],
)
def test_unit_name(given: str, full: str) -> None:
    assert unit_name(given) == full


# What `systemctl show UNIT --property=ActiveState,SubState,LoadState,Result --no-pager` prints
# (systemd orders the properties itself, not as asked).
RUNNING = "Result=success\nLoadState=loaded\nActiveState=active\nSubState=running\n"
EXITED = "Result=success\nLoadState=loaded\nActiveState=active\nSubState=exited\n"
FAILED = "Result=exit-code\nLoadState=loaded\nActiveState=failed\nSubState=failed\n"
STOPPED = "Result=success\nLoadState=loaded\nActiveState=inactive\nSubState=dead\n"
NOT_FOUND = "Result=success\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"
MASKED = "Result=success\nLoadState=masked\nActiveState=inactive\nSubState=dead\n"
STARTING = "Result=success\nLoadState=loaded\nActiveState=activating\nSubState=start-pre\n"
STOPPING = "Result=success\nLoadState=loaded\nActiveState=deactivating\nSubState=stop-sigterm\n"
RELOADING = "Result=success\nLoadState=loaded\nActiveState=reloading\nSubState=reload\n"
AUTO_RESTART = "Result=exit-code\nLoadState=loaded\nActiveState=activating\nSubState=auto-restart\n"
TIMER_WAITING = "Result=success\nLoadState=loaded\nActiveState=active\nSubState=waiting\n"
BAD_SETTING = "Result=success\nLoadState=bad-setting\nActiveState=inactive\nSubState=dead\n"
NEW_STATE = "Result=success\nLoadState=loaded\nActiveState=hibernating\nSubState=zzz\n"


@pytest.mark.parametrize(
    ("unit", "expect", "shown", "status", "summary"),
    [
        pytest.param("nginx.service", "active", RUNNING, Status.OK, "nginx.service active (running)", id="running"),
        pytest.param("setup.service", "active", EXITED, Status.OK, "setup.service active (exited)", id="oneshot done"),
        pytest.param("backup.timer", "active", TIMER_WAITING, Status.OK, "backup.timer active (waiting)", id="timer"),
        pytest.param(
            "nginx.service", "active", FAILED, Status.CRITICAL,
            "nginx.service failed (result exit-code), expected active", id="failed",
        ),
        pytest.param(
            "nginx.service", "active", STOPPED, Status.CRITICAL,
            "nginx.service inactive (dead), expected active", id="stopped",
        ),
        pytest.param(
            "nginx.service", "active", MASKED, Status.CRITICAL,
            "nginx.service inactive (dead, load state masked), expected active", id="masked",
        ),
        pytest.param(
            "nginx.service", "active", BAD_SETTING, Status.CRITICAL,
            "nginx.service inactive (dead, load state bad-setting), expected active", id="broken unit file",
        ),
        pytest.param(
            "nginx.service", "active", STARTING, Status.WARNING,
            "nginx.service activating (start-pre), expected active", id="starting",
        ),
        pytest.param(
            "nginx.service", "active", STOPPING, Status.WARNING,
            "nginx.service deactivating (stop-sigterm), expected active", id="stopping",
        ),
        pytest.param(
            "nginx.service", "active", RELOADING, Status.WARNING,
            "nginx.service reloading (reload), expected active", id="reloading",
        ),
        pytest.param(
            "app.service", "active", AUTO_RESTART, Status.WARNING,
            "app.service activating (auto-restart, result exit-code), expected active", id="restart loop",
        ),
        pytest.param(
            "nope.service", "active", NOT_FOUND, Status.UNKNOWN,
            "nope.service: no such unit (LoadState=not-found)", id="not found",
        ),
        pytest.param(
            "cron.service", "inactive", STOPPED, Status.OK, "cron.service inactive (dead)", id="expect inactive"
        ),
        pytest.param(
            "cron.service", "inactive", RUNNING, Status.CRITICAL,
            "cron.service active (running), expected inactive", id="expect inactive but running",
        ),
        pytest.param(
            "job.service", "failed", FAILED, Status.OK, "job.service failed (result exit-code)", id="expect failed",
        ),
        pytest.param(
            "x.service", "active", NEW_STATE, Status.UNKNOWN,
            "x.service hibernating (zzz), expected active", id="a state this agent does not know",
        ),
        pytest.param(
            "x.service", "active", "", Status.UNKNOWN, "x.service: systemctl reported no ActiveState", id="no output",
        ),
    ],
)
def test_status_of_systemctl_show(unit: str, expect: str, shown: str, status: Status, summary: str) -> None:
    result = evaluate_unit(unit, expect, parse_show(shown))
    assert (result.status, result.summary) == (status, summary)


@pytest.mark.parametrize(
    ("shown", "active"),
    [pytest.param(RUNNING, 1.0, id="active is 1"), pytest.param(FAILED, 0.0, id="failed is 0")],
)
def test_metric(shown: str, active: float) -> None:
    [metric] = evaluate_unit("a.service", "active", parse_show(shown)).metrics
    assert (metric.name, metric.value, metric.labels) == ("systemd_unit_active", active, {"unit": "a.service"})


def test_parse_show_ignores_noise() -> None:
    assert parse_show("ActiveState=active\n\nwarning: something\nExecStart={ path=/bin/x ; argv[]=/bin/x }\n") == {
        "ActiveState": "active",
        "ExecStart": "{ path=/bin/x ; argv[]=/bin/x }",
    }


def test_real_run_on_this_machine(make_check: MakeCheck) -> None:
    result = make_check(SystemdUnitCheck, {"unit": "ce-agent-test-no-such-unit"}, timeout=10).run()
    assert result.status is Status.UNKNOWN
    if shutil.which("systemctl") is None:
        assert result.summary == "ce-agent-test-no-such-unit.service: systemctl not found (is this a systemd machine?)"
    elif not os.path.isdir("/run/systemd/system"):
        assert result.summary.startswith("ce-agent-test-no-such-unit.service: systemd is not running on this machine")
    else:
        assert result.summary == "ce-agent-test-no-such-unit.service: no such unit (LoadState=not-found)"


def test_empty_unit_name(make_check: MakeCheck) -> None:
    result = make_check(SystemdUnitCheck, {"unit": " "}).run()
    assert (result.status, result.summary) == (Status.UNKNOWN, "systemd_unit: the unit name is empty")


@pytest.fixture
def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """`fake_systemctl(body)`: a `systemctl` script first on PATH; it records its arguments in the returned file."""
    args = tmp_path / "args"

    def install(body: str) -> Path:
        program = tmp_path / "bin" / "systemctl"
        program.parent.mkdir(exist_ok=True)
        program.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{args}"\n{body}\n')
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{program.parent}:/usr/bin:/bin")
        return args

    return install


def test_systemctl_arguments_and_output(make_check: MakeCheck, fake_systemctl: Callable[[str], Path]) -> None:
    args = fake_systemctl(f"printf '{FAILED}'")
    result = make_check(SystemdUnitCheck, {"unit": "nginx"}).run()
    assert result.status is Status.CRITICAL
    assert result.summary == "nginx.service failed (result exit-code), expected active"
    assert args.read_text().splitlines() == [
        "show",
        "--property=ActiveState,SubState,LoadState,Result",
        "--no-pager",
        "--",
        "nginx.service",
    ]


def test_systemctl_failing(make_check: MakeCheck, fake_systemctl: Callable[[str], Path]) -> None:
    fake_systemctl("echo 'Failed to connect to bus: Permission denied' >&2; exit 1")
    result = make_check(SystemdUnitCheck, {"unit": "nginx"}).run()
    said = "Failed to connect to bus: Permission denied"
    if os.path.isdir("/run/systemd/system"):
        expected = f"nginx.service: systemctl failed: {said}"
    else:
        expected = f"nginx.service: systemd is not running on this machine (systemctl: {said})"
    assert (result.status, result.summary) == (Status.UNKNOWN, expected)


def test_systemctl_hanging(make_check: MakeCheck, fake_systemctl: Callable[[str], Path]) -> None:
    fake_systemctl("exec sleep 30")
    result = make_check(SystemdUnitCheck, {"unit": "nginx"}, timeout=0.5).run()
    assert (result.status, result.summary) == (Status.UNKNOWN, "nginx.service: systemctl timed out after 0.5s")


def test_systemctl_missing(make_check: MakeCheck, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = make_check(SystemdUnitCheck, {"unit": "nginx"}).run()
    assert (result.status, result.summary) == (
        Status.UNKNOWN,
        "nginx.service: systemctl not found (is this a systemd machine?)",
    )
