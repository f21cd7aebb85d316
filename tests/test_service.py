"""`ce-agent service install`: a hardened systemd unit or a launchd plist that runs `ce-agent agent`."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ce_agent import service
from tests.conftest import ROOT, Agent

AGENT_ARGV = ["/bin/true", "agent", "/etc/ce-agent/site.yml", "-i", "/etc/ce-agent/inventory.yml"]


def settings(unit: str) -> dict[tuple[str, str], list[str]]:
    """A unit file as {(section, key): [values in order]}, the way systemd reads it (comments skipped)."""
    found: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in unit.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault((section, key), []).append(value)
    return found


def systemd_analyze() -> str | None:
    found = shutil.which("systemd-analyze")
    if found is None and os.environ.get("CE_AGENT_REQUIRE_SYSTEMD") == "1":
        pytest.fail("systemd-analyze is missing and CE_AGENT_REQUIRE_SYSTEMD=1")
    if found is None:
        pytest.skip("systemd-analyze is not installed (set CE_AGENT_REQUIRE_SYSTEMD=1 to make this a failure)")
    return found


@pytest.mark.parametrize(
    "packaged, embedded",
    [
        pytest.param("packaging/systemd/ce-agent.service.in", service.SYSTEMD_TEMPLATE, id="systemd unit"),
        pytest.param("packaging/launchd/io.ce-agent.agent.plist.in", service.LAUNCHD_TEMPLATE, id="launchd plist"),
    ],
)
def test_packaging_templates_are_the_ones_the_package_renders(packaged: str, embedded: str) -> None:
    assert (ROOT / packaged).read_text() == embedded


@pytest.mark.parametrize(
    "word, quoted",
    [
        pytest.param("/usr/bin/ce-agent", "/usr/bin/ce-agent", id="a plain path stays bare"),
        pytest.param("--listen=127.0.0.1:9464", "--listen=127.0.0.1:9464", id="options stay bare"),
        pytest.param("/srv/my playbooks/site.yml", '"/srv/my playbooks/site.yml"', id="blanks are quoted"),
        pytest.param("50%", "50%%", id="a percent is not a specifier"),
        pytest.param("$HOME", "$$HOME", id="a dollar is not a variable"),
        pytest.param("100% $x", '"100%% $$x"', id="specifiers and variables inside quotes"),
        pytest.param('say "hi"', '"say \\"hi\\""', id="double quotes are escaped"),
        pytest.param("a\\b", '"a\\\\b"', id="backslashes are escaped"),
        pytest.param("it's", '"it\'s"', id="a single quote inside double quotes"),
        pytest.param("two\nlines", '"two\\nlines"', id="a line break cannot end the setting"),
        pytest.param("bell\x07", '"bell\\x07"', id="control characters as hex escapes"),
        pytest.param("", '""', id="an empty argument survives"),
        pytest.param(";", '";"', id="a lone semicolon is not a command separator"),
    ],
)
def test_systemd_quoting(word: str, quoted: str) -> None:
    assert service.systemd_quote(word) == quoted


def test_exec_start_needs_an_absolute_executable() -> None:
    with pytest.raises(ValueError, match="absolute"):
        service.systemd_command_line(["ce-agent", "agent"])


SYSTEM_UNIT = settings(service.render_systemd(AGENT_ARGV, False, None, {"smtp": "/etc/ce-agent/smtp-password"}))
USER_UNIT = settings(service.render_systemd(AGENT_ARGV, True, None, {}))


@pytest.mark.parametrize(
    "unit, section, key, values",
    [
        pytest.param(SYSTEM_UNIT, "Service", "Type", ["notify"], id="sd_notify readiness"),
        pytest.param(SYSTEM_UNIT, "Service", "WatchdogSec", ["30s"], id="watchdog"),
        pytest.param(SYSTEM_UNIT, "Service", "NotifyAccess", ["main"], id="only the agent notifies"),
        pytest.param(SYSTEM_UNIT, "Service", "ExecStart", [" ".join(AGENT_ARGV)], id="runs the agent"),
        pytest.param(SYSTEM_UNIT, "Service", "ExecReload", ["/bin/kill -HUP $MAINPID"], id="reload is SIGHUP"),
        pytest.param(SYSTEM_UNIT, "Service", "KillSignal", ["SIGTERM"], id="SIGTERM drains"),
        pytest.param(SYSTEM_UNIT, "Service", "TimeoutStopSec", ["15s"], id="stop timeout"),
        pytest.param(SYSTEM_UNIT, "Service", "Restart", ["on-failure"], id="restart on failure"),
        pytest.param(SYSTEM_UNIT, "Service", "RestartSec", ["5s"], id="restart delay"),
        pytest.param(SYSTEM_UNIT, "Unit", "StartLimitBurst", ["5"], id="gives up after 5 starts"),
        pytest.param(SYSTEM_UNIT, "Service", "DynamicUser", ["yes"], id="system: a dynamic user"),
        pytest.param(SYSTEM_UNIT, "Service", "StateDirectory", ["ce-agent"], id="state directory"),
        pytest.param(SYSTEM_UNIT, "Service", "Environment", ["CE_AGENT_STATE_DIR=%S/ce-agent"], id="state env"),
        pytest.param(SYSTEM_UNIT, "Service", "LoadCredential", ["smtp:/etc/ce-agent/smtp-password"], id="secrets"),
        pytest.param(SYSTEM_UNIT, "Service", "UMask", ["0077"], id="private files"),
        pytest.param(SYSTEM_UNIT, "Service", "ProtectSystem", ["strict"], id="read-only system"),
        pytest.param(SYSTEM_UNIT, "Service", "ProtectHome", ["read-only"], id="read-only homes"),
        pytest.param(SYSTEM_UNIT, "Service", "NoNewPrivileges", ["yes"], id="no new privileges"),
        pytest.param(SYSTEM_UNIT, "Service", "CapabilityBoundingSet", [""], id="no capabilities"),
        pytest.param(SYSTEM_UNIT, "Service", "AmbientCapabilities", [""], id="no ambient capabilities"),
        pytest.param(SYSTEM_UNIT, "Service", "ProtectProc", ["default"], id="process checks see every process"),
        pytest.param(SYSTEM_UNIT, "Service", "ProcSubset", ["all"], id="all of /proc"),
        pytest.param(SYSTEM_UNIT, "Service", "RestrictAddressFamilies", ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
                     id="address families"),
        pytest.param(SYSTEM_UNIT, "Service", "SystemCallFilter", ["@system-service", "~@privileged"], id="syscalls"),
        pytest.param(SYSTEM_UNIT, "Service", "MemoryDenyWriteExecute", ["yes"], id="no W+X memory"),
        pytest.param(SYSTEM_UNIT, "Install", "WantedBy", ["multi-user.target"], id="system: starts at boot"),
        pytest.param(USER_UNIT, "Service", "DynamicUser", None, id="user: no dynamic user"),
        pytest.param(USER_UNIT, "Service", "Environment", ["CE_AGENT_STATE_DIR=%S/ce-agent"], id="user: state env"),
        pytest.param(USER_UNIT, "Service", "LoadCredential", None, id="user: no credentials given"),
        pytest.param(USER_UNIT, "Install", "WantedBy", ["default.target"], id="user: starts at login"),
    ],
)
def test_systemd_unit_settings(
    unit: dict[tuple[str, str], list[str]], section: str, key: str, values: list[str] | None
) -> None:
    assert unit.get((section, key)) == values


def test_hardening_settings_are_all_on() -> None:
    for key in ("PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces", "RestrictRealtime",
                "RestrictSUIDSGID", "LockPersonality"):
        assert SYSTEM_UNIT.get(("Service", key)) == ["yes"], key
    assert SYSTEM_UNIT[("Service", "SystemCallArchitectures")] == ["native"]


def test_an_explicit_state_directory_is_made_writable() -> None:
    unit = settings(service.render_systemd(AGENT_ARGV, False, "/srv/ce-agent", {}))
    assert unit[("Service", "Environment")] == ["CE_AGENT_STATE_DIR=/srv/ce-agent"]
    assert unit[("Service", "ReadWritePaths")] == ["/srv/ce-agent"]


@pytest.mark.parametrize(
    "state_dir, credentials, message",
    [
        pytest.param(None, {"../x": "/etc/x"}, "credential name", id="a credential name with a slash"),
        pytest.param(None, {"smtp": "smtp-password"}, "absolute", id="a relative credential path"),
        pytest.param(None, {"smtp": "/etc/a b"}, "blanks", id="a credential path with a blank"),
        pytest.param("state", {}, "absolute", id="a relative state directory"),
        pytest.param("/srv/x\nExecStartPre=/bin/sh", {}, "line breaks", id="no setting smuggled in"),
    ],
)
def test_unit_inputs_that_are_refused(state_dir: str | None, credentials: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        service.render_systemd(AGENT_ARGV, False, state_dir, credentials)


@pytest.mark.parametrize("user_mode", [pytest.param(False, id="system"), pytest.param(True, id="user")])
def test_systemd_analyze_accepts_the_unit_and_rates_it_safe(tmp_path: Path, user_mode: bool) -> None:
    analyze = systemd_analyze()
    unit = tmp_path / "units" / "ce-agent.service"
    unit.parent.mkdir()
    argv = ["/bin/true", "agent", str(tmp_path / "my playbooks" / "site.yml"), "--listen", "127.0.0.1:9464"]
    unit.write_text(service.render_systemd(argv, user_mode, None, {"smtp": "/etc/hostname"}))
    # a user manager needs a runtime directory, even offline
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path)}
    scope = ["--user"] if user_mode else []
    verify = subprocess.run([analyze, *scope, "verify", str(unit)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30)
    assert (verify.returncode, verify.stderr) == (0, "")  # unknown or misspelled keys are warnings on stderr
    security = subprocess.run([analyze, *scope, "security", "--offline=yes", str(unit)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=30)
    level = re.search(r"Overall exposure level for ce-agent\.service: ([\d.]+)", security.stdout)
    assert level, security.stdout + security.stderr
    assert float(level[1]) <= 2.5, security.stdout


def test_cpython_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes: the agent under the kernel's equivalent (PR_SET_MDWE, Linux 6.3+)."""
    # The child sets the flag, checks that it bites, then execs the agent, which inherits it.
    launcher = tmp_path / "mdwe.py"
    launcher.write_text(
        "import ctypes, mmap, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN\n"
        "    sys.exit(77)\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    sys.exit('W+X memory was allowed')\n"
        "except PermissionError:\n"
        "    pass\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'ce_agent', *sys.argv[1:]])\n"
    )
    (tmp_path / "site.yml").write_text("- hosts: localhost\n  checks:\n    - disk: {path: /}\n")
    for args in (["plugins", "list"], ["run", "site.yml"]):
        ran = subprocess.run([sys.executable, str(launcher), *args], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, env={**os.environ, "CE_AGENT_STATE_DIR": str(tmp_path / "state")})
        if ran.returncode == 77:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
        assert ran.returncode in (0, 1, 2), ran.stderr  # the check's status, not a crash
        assert "Traceback" not in ran.stderr, ran.stderr


def test_launchd_plist_round_trips_with_every_key() -> None:
    argv = ["/usr/local/bin/ce-agent", "agent", "/Users/me/R&D <ops>/site.yml"]
    plist = plistlib.loads(service.render_launchd(argv, "io.ce-agent.agent", "/Library/Logs/ce-agent", False))
    assert plist == {
        "Label": "io.ce-agent.agent",
        "ProgramArguments": argv,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "ProcessType": "Background",
        "Umask": 0o077,
        "StandardOutPath": "/Library/Logs/ce-agent/ce-agent.out.log",
        "StandardErrorPath": "/Library/Logs/ce-agent/ce-agent.err.log",
        "EnvironmentVariables": {"CE_AGENT_STATE_DIR": "/var/lib/ce-agent"},
    }


def test_a_launch_agent_is_told_its_users_state_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state directory"):
        service.render_launchd(AGENT_ARGV, "io.ce-agent.agent", "/tmp", True)
    rendered = service.render("launchd", AGENT_ARGV, True, Path("/Users/me"))
    assert rendered.path == Path("/Users/me/Library/LaunchAgents/io.ce-agent.agent.plist")
    plist = plistlib.loads(rendered.content)
    assert plist["EnvironmentVariables"] == {"CE_AGENT_STATE_DIR": "/Users/me/.local/state/ce-agent"}
    assert plist["StandardErrorPath"] == "/Users/me/Library/Logs/ce-agent/ce-agent.err.log"


@pytest.mark.parametrize(
    "argv0_name, which, expected_head",
    [
        pytest.param("ce-agent", None, ["{argv0}", "agent"], id="the ce-agent script that runs"),
        pytest.param("__main__.py", "/usr/bin/ce-agent", ["/usr/bin/ce-agent", "agent"], id="else the one on PATH"),
        pytest.param("__main__.py", None, ["/usr/bin/python3", "-m", "ce_agent", "agent"], id="else python -m"),
    ],
)
def test_agent_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv0_name: str, which: str | None,
                            expected_head: list[str]) -> None:
    script = tmp_path / "bin" / argv0_name
    script.parent.mkdir()
    script.write_text("")
    monkeypatch.chdir(tmp_path)
    argv = service.agent_argv(str(script), which, "/usr/bin/python3", [Path("site.yml")], [Path("inv")])
    head = [word.replace("{argv0}", str(script)) for word in expected_head]
    assert argv == [*head, str(tmp_path / "site.yml"), "-i", str(tmp_path / "inv")]


def test_dry_run_prints_the_unit_and_writes_nothing(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.write("site.yml", "- hosts: localhost\n  checks: []\n")
    agent.write("inventory.yml", "all: {hosts: {localhost: {}}}\n")
    home = tmp_path / "home"
    home.mkdir()
    ran = agent("service", "install", "--systemd", "--user", "--playbook", "site.yml", "-i", "inventory.yml",
                "--credential", "smtp=secret", "--dry-run", env={"HOME": str(home)})
    assert ran.code == 0, ran.err
    unit = settings(ran.out)
    exec_start = unit[("Service", "ExecStart")][0].split()
    assert exec_start[-4:] == ["agent", str(tmp_path / "site.yml"), "-i", str(tmp_path / "inventory.yml")]
    assert Path(exec_start[0]).is_absolute()
    assert unit[("Service", "LoadCredential")] == [f"smtp:{tmp_path / 'secret'}"]
    assert unit[("Install", "WantedBy")] == ["default.target"]
    assert list(home.iterdir()) == []


def test_dry_run_picks_the_platforms_service_manager(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.write("site.yml", "- hosts: localhost\n  checks: []\n")
    ran = agent("service", "install", "--playbook", "site.yml", "--dry-run")
    assert ran.code == 0, ran.err
    if sys.platform == "darwin":
        assert plistlib.loads(ran.out.encode())["Label"] == "io.ce-agent.agent"
    else:
        assert settings(ran.out)[("Service", "Type")] == ["notify"]
    ran = agent("service", "install", "--launchd", "--playbook", "site.yml", "--dry-run")
    assert plistlib.loads(ran.out.encode())["ProgramArguments"][-1] == str(tmp_path / "site.yml")


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--playbook", "site.yml"], "error: installing needs `ce-agent agent`, which this version does "
                     "not have yet; use --dry-run to see the unit", id="installing is not there yet"),
        pytest.param(["--systemd", "--launchd", "--playbook", "site.yml", "--dry-run"],
                     "error: give --systemd or --launchd, not both", id="two service managers"),
        pytest.param(["--dry-run"], "error: give at least one --playbook for the agent to run", id="no playbook"),
        pytest.param(["--playbook", "nope.yml", "--dry-run"], "error: nope.yml: no such file or directory",
                     id="a missing playbook"),
        pytest.param(["--playbook", "site.yml", "--credential", "smtp", "--dry-run"],
                     "error: --credential wants NAME=PATH, got 'smtp'", id="a credential without a path"),
        pytest.param(["--launchd", "--playbook", "site.yml", "--credential", "a=b", "--dry-run"],
                     "error: --credential is for systemd's LoadCredential=; launchd has no equivalent",
                     id="credentials with launchd"),
    ],
)
def test_install_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    agent = Agent(tmp_path)
    agent.write("site.yml", "- hosts: localhost\n  checks: []\n")
    ran = agent("service", "install", *args, env={"HOME": str(tmp_path)})
    assert (ran.code, ran.err.strip(), ran.out) == (2, message, "")
