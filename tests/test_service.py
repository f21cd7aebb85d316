"""`ce-agent service install`: a hardened systemd unit or a launchd plist that runs `ce-agent agent`."""

from __future__ import annotations

import errno
import os
import plistlib
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ce_agent import service
from tests.conftest import ROOT, Agent, Ran

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



# --- install, uninstall, status: real `ce-agent` processes, every path under $CE_AGENT_SERVICE_ROOT -----------

# Stand-ins for the service managers: they append their name and argv to $FAKE_CALLS, fail (exit 1) when an
# argument equals $FAKE_FAIL, and report the service state in $FAKE_STATE.
FAKE_SYSTEMCTL = """#!/bin/sh
printf '%s\\n' "${0##*/} $*" >> "$FAKE_CALLS"
if [ -n "$FAKE_FAIL" ]; then
    for word in "$@"; do
        if [ "$word" = "$FAKE_FAIL" ]; then echo "Failed to $word: Access denied" >&2; exit 1; fi
    done
fi
case " $* " in
    *" is-active "*) echo "$FAKE_STATE"; [ "$FAKE_STATE" = active ]; exit $?;;
    *" status "*) echo "* ce-agent.service - ce-agent monitoring agent"; echo "     Active: $FAKE_STATE"
                  [ "$FAKE_STATE" = active ] && exit 0; exit 3;;
esac
exit 0
"""
FAKE_LAUNCHCTL = """#!/bin/sh
printf '%s\\n' "${0##*/} $*" >> "$FAKE_CALLS"
if [ -n "$FAKE_FAIL" ] && [ "$1" = "$FAKE_FAIL" ]; then echo "Bootstrap failed: 5: Input/output error" >&2; exit 5; fi
if [ "$1" = print ]; then
    case "$FAKE_STATE" in
        unloaded) echo "Could not find service \\"io.ce-agent.agent\\" in domain" >&2; exit 113;;
        active) printf 'io.ce-agent.agent = {\\n\\tstate = running\\n}\\n';;
        *) printf 'io.ce-agent.agent = {\\n\\tstate = not running\\n}\\n';;
    esac
fi
exit 0
"""
UID = os.getuid()
PLAYBOOK = "- hosts: localhost\n  checks: []\n"


class Box:
    """A tmp_path with a playbook, an inventory, a home, $CE_AGENT_SERVICE_ROOT and fake service managers."""

    def __init__(self, tmp_path: Path, tools: tuple[str, ...] = ("systemctl", "launchctl")) -> None:
        self.cwd = tmp_path
        self.root = tmp_path / "root"
        self.home = tmp_path / "home"
        self.bin = tmp_path / "bin"
        self.calls_file = tmp_path / "calls.log"
        for directory in (self.home, self.bin, tmp_path / "run"):
            directory.mkdir()
        (tmp_path / "site.yml").write_text(PLAYBOOK)
        (tmp_path / "inventory.yml").write_text("all: {hosts: {localhost: {}}}\n")
        for name in tools:
            script = self.bin / name
            script.write_text(FAKE_SYSTEMCTL if name == "systemctl" else FAKE_LAUNCHCTL)
            script.chmod(0o755)
        self.env = {
            # nothing outside tmp_path: files under the root, no session bus, no runtime directory of the user's
            **{k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "DBUS_SESSION_BUS_ADDRESS")},
            "CE_AGENT_SERVICE_ROOT": str(self.root),
            "CE_AGENT_STATE_DIR": str(tmp_path / "state"),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(tmp_path / "run"),
            "PATH": str(self.bin),
            "FAKE_CALLS": str(self.calls_file),
            "FAKE_STATE": "active",
            "FAKE_FAIL": "",
        }

    def __call__(self, *args: str, **env: str) -> Ran:
        proc = subprocess.run([sys.executable, "-m", "ce_agent", "service", *args], cwd=self.cwd,
                              env={**self.env, **env}, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    def path(self, kind: str, user: bool) -> Path:
        return service.unit_path(kind, user, self.home, self.env)

    def calls(self) -> list[str]:
        calls = self.calls_file.read_text().splitlines() if self.calls_file.exists() else []
        self.calls_file.unlink(missing_ok=True)
        return calls


def scope(kind: str, user: bool) -> list[str]:
    return [f"--{kind}", *(["--user"] if user else [])]


def launchd_domain(user: bool) -> str:
    return f"gui/{UID}" if user else "system"


def start_calls(kind: str, user: bool, path: Path) -> list[str]:
    if kind == "systemd":
        systemctl = "systemctl --user" if user else "systemctl"
        return [f"{systemctl} daemon-reload", f"{systemctl} enable --now ce-agent.service"]
    domain = launchd_domain(user)
    return [f"launchctl enable {domain}/io.ce-agent.agent", f"launchctl bootstrap {domain} {path}"]


KINDS = [
    pytest.param("systemd", False, id="systemd system"),
    pytest.param("systemd", True, id="systemd user"),
    pytest.param("launchd", False, id="launchd daemon"),
    pytest.param("launchd", True, id="launchd agent"),
]


@pytest.mark.parametrize(
    "kind, user, environ, expected",
    [
        pytest.param("systemd", False, {}, "/etc/systemd/system/ce-agent.service", id="systemd system"),
        pytest.param("systemd", True, {}, "/home/me/.config/systemd/user/ce-agent.service", id="systemd user"),
        pytest.param("systemd", True, {"XDG_CONFIG_HOME": "/cfg"}, "/cfg/systemd/user/ce-agent.service",
                     id="systemd user with XDG_CONFIG_HOME"),
        pytest.param("systemd", True, {"XDG_CONFIG_HOME": "cfg"}, "/home/me/.config/systemd/user/ce-agent.service",
                     id="a relative XDG_CONFIG_HOME is ignored"),
        pytest.param("launchd", False, {}, "/Library/LaunchDaemons/io.ce-agent.agent.plist", id="launchd daemon"),
        pytest.param("launchd", True, {}, "/home/me/Library/LaunchAgents/io.ce-agent.agent.plist", id="launch agent"),
        pytest.param("systemd", False, {"CE_AGENT_SERVICE_ROOT": "/stage"}, "/stage/etc/systemd/system/ce-agent.service",
                     id="under CE_AGENT_SERVICE_ROOT"),
        pytest.param("systemd", True, {"CE_AGENT_SERVICE_ROOT": "/stage", "XDG_CONFIG_HOME": "/cfg"},
                     "/stage/cfg/systemd/user/ce-agent.service", id="the user's path under CE_AGENT_SERVICE_ROOT"),
        pytest.param("launchd", False, {"CE_AGENT_SERVICE_ROOT": ""}, "/Library/LaunchDaemons/io.ce-agent.agent.plist",
                     id="an empty CE_AGENT_SERVICE_ROOT is unset"),
    ],
)
def test_where_the_service_definition_goes(kind: str, user: bool, environ: dict[str, str], expected: str) -> None:
    assert service.unit_path(kind, user, Path("/home/me"), environ) == Path(expected)


@pytest.mark.parametrize("kind", [pytest.param("systemd", id="systemd"), pytest.param("launchd", id="launchd")])
def test_rendered_files_carry_the_marker_and_a_plist_lints(tmp_path: Path, kind: str) -> None:
    rendered = service.render(kind, AGENT_ARGV, False, tmp_path)
    assert service.written_by_ce_agent(rendered.content)
    if kind == "launchd":
        assert plistlib.loads(rendered.content)["Label"] == "io.ce-agent.agent"
        plutil = shutil.which("plutil")
        if plutil:  # macOS only
            (tmp_path / "ce-agent.plist").write_bytes(rendered.content)
            lint = subprocess.run([plutil, "-lint", str(tmp_path / "ce-agent.plist")], capture_output=True, text=True)
            assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("kind, user", KINDS)
def test_install_writes_the_file_and_starts_the_service(tmp_path: Path, kind: str, user: bool) -> None:
    box = Box(tmp_path)
    args = [*scope(kind, user), "-p", "site.yml", "-i", "inventory.yml", "--listen", "127.0.0.1:9464"]
    dry = box("install", *args, "--dry-run")
    assert dry.code == 0 and not box.root.exists() and box.calls() == []
    ran = box("install", *args)
    path = box.path(kind, user)
    assert (ran.code, ran.err) == (0, "")
    assert ran.out.splitlines()[0] == f"wrote {path}"
    assert path.read_text() == dry.out
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert box.calls() == start_calls(kind, user, path)
    if kind == "systemd":
        exec_start = shlex.split(settings(dry.out)[("Service", "ExecStart")][0])
    else:
        plist = plistlib.loads(dry.out.encode())
        exec_start = plist["ProgramArguments"]
        log_dir = Path(plist["StandardErrorPath"]).parent
        assert (box.root / log_dir.relative_to("/")).is_dir()  # launchd does not make it
    assert exec_start[-6:] == ["agent", str(tmp_path / "site.yml"), "-i", str(tmp_path / "inventory.yml"),
                               "--listen", "127.0.0.1:9464"]


@pytest.mark.parametrize(
    "listen, expected",
    [
        pytest.param(None, None, id="no --listen: the agent's default"),
        pytest.param("127.0.0.1:9464", "127.0.0.1:9464", id="host and port"),
        pytest.param(":9000", "127.0.0.1:9000", id="no host means loopback, written out"),
        pytest.param("0.0.0.0:80", "0.0.0.0:80", id="every interface, deliberately"),
        pytest.param("[::1]:9464", "[::1]:9464", id="IPv6 in brackets"),
        pytest.param("OFF", "none", id="no endpoints at all"),
    ],
)
@pytest.mark.parametrize("kind", [pytest.param("systemd", id="systemd"), pytest.param("launchd", id="launchd")])
def test_listen_ends_up_on_the_agents_command_line(tmp_path: Path, kind: str, listen: str | None,
                                                   expected: str | None) -> None:
    box = Box(tmp_path)
    ran = box("install", f"--{kind}", "-p", "site.yml", *(["--listen", listen] if listen else []), "--dry-run")
    assert ran.code == 0, ran.err
    if kind == "systemd":  # systemd's quoting of these words is the shell's
        argv = shlex.split(settings(ran.out)[("Service", "ExecStart")][0])
    else:
        argv = plistlib.loads(ran.out.encode())["ProgramArguments"]
    assert argv[argv.index("agent"):] == ["agent", str(tmp_path / "site.yml"),
                                          *(["--listen", expected] if expected else [])]


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--systemd", "--launchd", "--playbook", "site.yml"],
                     "error: give --systemd or --launchd, not both", id="two service managers"),
        pytest.param([], "error: give at least one --playbook for the agent to run", id="no playbook"),
        pytest.param(["--playbook", "nope.yml"], "error: nope.yml: no such file or directory", id="a missing playbook"),
        pytest.param(["--playbook", "site.yml", "-i", "nope.yml"], "error: nope.yml: no such file or directory",
                     id="a missing inventory"),
        pytest.param(["--playbook", "site.yml", "--listen", "localhost"],
                     "error: invalid listen address 'localhost': expected HOST:PORT", id="a listen address without port"),
        pytest.param(["--playbook", "site.yml", "--listen", "127.0.0.1:99999"],
                     "error: invalid listen address '127.0.0.1:99999': the port must be a number from 0 to 65535",
                     id="a port out of range"),
        pytest.param(["--playbook", "site.yml", "--listen", "::1:9464"],
                     "error: invalid listen address '::1:9464': write an IPv6 address as [ADDRESS]:PORT",
                     id="IPv6 without brackets"),
        pytest.param(["--playbook", "site.yml", "--credential", "smtp"],
                     "error: --credential wants NAME=PATH, got 'smtp'", id="a credential without a path"),
        pytest.param(["--launchd", "--playbook", "site.yml", "--credential", "a=b"],
                     "error: --credential is for systemd's LoadCredential=; launchd has no equivalent",
                     id="credentials with launchd"),
    ],
)
@pytest.mark.parametrize("dry_run", [pytest.param([], id="install"), pytest.param(["--dry-run"], id="dry run")])
def test_install_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str,
                                                dry_run: list[str]) -> None:
    box = Box(tmp_path)
    ran = box("install", *args, *dry_run)
    assert (ran.code, ran.err.strip(), ran.out) == (2, message, "")
    assert not box.root.exists() and box.calls() == []


@pytest.mark.parametrize(
    "command, args, doing",
    [
        pytest.param("install", ["--playbook", "site.yml"], "installing", id="install"),
        pytest.param("uninstall", [], "removing", id="uninstall"),
    ],
)
@pytest.mark.parametrize("kind", [pytest.param("--systemd", id="systemd"), pytest.param("--launchd", id="launchd")])
def test_the_system_service_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, command: str,
                                       args: list[str], doing: str) -> None:
    """In process, as a user that is not root, with no CE_AGENT_SERVICE_ROOT: nothing may be written or run."""
    from ce_agent.cli import app

    def refuse(*_: object, **__: object) -> None:
        pytest.fail("a refused command wrote a file or ran the service manager")

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(service, "write_atomically", refuse)
    monkeypatch.setattr(service, "run_command", refuse)
    monkeypatch.setattr(Path, "unlink", refuse)
    monkeypatch.delenv("CE_AGENT_SERVICE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    ran = CliRunner().invoke(app, ["service", command, kind, *args])
    assert (ran.exit_code, ran.stderr.strip(), ran.stdout) == (
        2, f"error: {doing} the system service needs root: run it with sudo, or give --user", "")
    if command == "install":  # printing the unit needs no root
        ran = CliRunner().invoke(app, ["service", command, kind, *args, "--dry-run"])
        assert ran.exit_code == 0, ran.stderr


@pytest.mark.parametrize(
    "user, euid, environ, refused",
    [
        pytest.param(False, 1000, {}, True, id="system service as a user"),
        pytest.param(False, 0, {}, False, id="system service as root"),
        pytest.param(True, 1000, {}, False, id="user service as a user"),
        pytest.param(False, 1000, {"CE_AGENT_SERVICE_ROOT": "/tmp/stage"}, False, id="a staging tree needs no root"),
    ],
)
def test_who_may_touch_the_system_service(user: bool, euid: int, environ: dict[str, str], refused: bool) -> None:
    if refused:
        with pytest.raises(service.ServiceError, match="needs root"):
            service.require_root(user, euid, environ, "installing")
    else:
        service.require_root(user, euid, environ, "installing")


@pytest.mark.parametrize("kind, user", KINDS)
def test_a_file_ce_agent_did_not_write_is_kept_unless_forced(tmp_path: Path, kind: str, user: bool) -> None:
    box = Box(tmp_path)
    path = box.path(kind, user)
    path.parent.mkdir(parents=True)
    path.write_text("# the admin's own\n")
    ran = box("install", *scope(kind, user), "-p", "site.yml")
    assert (ran.code, ran.err.strip(), ran.out) == (
        2, f"error: {path} exists and was not written by ce-agent; give --force to replace it", "")
    ran = box("uninstall", *scope(kind, user))
    assert (ran.code, ran.err.strip(), ran.out) == (
        2, f"error: {path} was not written by ce-agent; give --force to remove it", "")
    assert path.read_text() == "# the admin's own\n" and box.calls() == []
    ran = box("install", *scope(kind, user), "-p", "site.yml", "--force")
    assert ran.code == 0, ran.err
    assert service.written_by_ce_agent(path.read_bytes())
    box.calls()
    path.write_text("# the admin's own\n")
    ran = box("uninstall", *scope(kind, user), "--force")
    assert ran.code == 0, ran.err
    assert not path.exists()


@pytest.mark.parametrize(
    "kind, second, extra_calls",
    [
        pytest.param("systemd", ["--listen", ":9999"], ["systemctl --user try-restart ce-agent.service"],
                     id="systemd: a changed unit restarts a running agent"),
        pytest.param("systemd", [], [], id="systemd: the same unit again changes nothing"),
            pytest.param("launchd", ["--listen", ":9999"], [], id="launchd: the old plist is booted out first"),
    ],
)
def test_installing_again(tmp_path: Path, kind: str, second: list[str], extra_calls: list[str]) -> None:
    box = Box(tmp_path)
    assert box("install", *scope(kind, True), "-p", "site.yml").code == 0
    path = box.path(kind, True)
    box.calls()
    ran = box("install", *scope(kind, True), "-p", "site.yml", *second)
    assert ran.code == 0, ran.err
    expected = start_calls(kind, True, path) + extra_calls
    if kind == "launchd":
        expected.insert(0, f"launchctl bootout gui/{UID}/io.ce-agent.agent")
    assert box.calls() == expected
    assert ran.out.splitlines()[-1].startswith("restarted" if second else "started")


@pytest.mark.parametrize(
    "kind, tools, env, calls, err, next_step",
    [
        pytest.param("systemd", ("systemctl",), {}, ["systemctl --user daemon-reload"], "",
                     "systemctl --user enable --now ce-agent.service", id="systemd: daemon-reload only"),
        pytest.param("systemd", ("systemctl",), {"FAKE_FAIL": "daemon-reload"}, ["systemctl --user daemon-reload"],
                     "note: systemctl --user daemon-reload failed (exit 1): Failed to daemon-reload: Access denied\n",
                     "systemctl --user daemon-reload && systemctl --user enable --now ce-agent.service",
                     id="systemd: a failing daemon-reload is a note"),
        pytest.param("systemd", (), {}, [], "note: systemctl --user daemon-reload: systemctl is not on PATH\n",
                     "systemctl --user daemon-reload && systemctl --user enable --now ce-agent.service",
                     id="systemd: no systemctl is a note"),
        pytest.param("launchd", ("launchctl",), {}, [], "",
                     "launchctl enable gui/{uid}/io.ce-agent.agent && launchctl bootstrap gui/{uid} {path}",
                     id="launchd: nothing runs"),
    ],
)
def test_no_start_writes_the_file_and_says_what_to_run(tmp_path: Path, kind: str, tools: tuple[str, ...],
                                                       env: dict[str, str], calls: list[str], err: str,
                                                       next_step: str) -> None:
    box = Box(tmp_path, tools)
    ran = box("install", *scope(kind, True), "-p", "site.yml", "--no-start", **env)
    path = box.path(kind, True)
    assert (ran.code, ran.err) == (0, err)
    next_step = next_step.format(uid=UID, path=path)
    assert ran.out.splitlines() == [f"wrote {path}",
                                    f"not started (--no-start); to start it now and at every login: {next_step}"]
    assert box.calls() == calls
    assert path.is_file()


@pytest.mark.parametrize(
    "kind, user, tools, env, err",
    [
        pytest.param("systemd", True, (), {}, [
            "error: systemctl --user daemon-reload: systemctl is not on PATH",
            "{path} is written; to finish, run: systemctl --user daemon-reload && "
            "systemctl --user enable --now ce-agent.service"], id="systemd: no systemctl on PATH"),
        pytest.param("systemd", False, ("systemctl",), {"FAKE_FAIL": "enable"}, [
            "error: systemctl enable --now ce-agent.service failed (exit 1): Failed to enable: Access denied",
            "{path} is written; to finish, run: systemctl enable --now ce-agent.service"],
            id="systemd: enable fails"),
        pytest.param("launchd", True, (), {}, [
            "error: launchctl enable gui/{uid}/io.ce-agent.agent: launchctl is not on PATH",
            "{path} is written; to finish, run: launchctl enable gui/{uid}/io.ce-agent.agent && "
            "launchctl bootstrap gui/{uid} {path}"], id="launchd: no launchctl on PATH"),
        pytest.param("launchd", False, ("launchctl",), {"FAKE_FAIL": "bootstrap"}, [
            "error: launchctl bootstrap system {path} failed (exit 5): Bootstrap failed: 5: Input/output error",
            "{path} is written; to finish, run: launchctl bootstrap system {path}"], id="launchd: bootstrap fails"),
    ],
)
def test_a_failing_service_manager_leaves_the_file_and_exits_1(tmp_path: Path, kind: str, user: bool,
                                                               tools: tuple[str, ...], env: dict[str, str],
                                                               err: list[str]) -> None:
    box = Box(tmp_path, tools)
    ran = box("install", *scope(kind, user), "-p", "site.yml", **env)
    path = box.path(kind, user)
    assert ran.code == 1
    assert ran.err.splitlines() == [line.format(path=path, uid=UID) for line in err]
    assert ran.out == f"wrote {path}\n"
    assert service.written_by_ce_agent(path.read_bytes())


def test_a_path_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    box = Box(tmp_path)
    box.root.write_text("not a directory")
    ran = box("install", "--systemd", "-p", "site.yml")
    assert (ran.code, ran.err, box.calls()) == (2, f"error: {box.path('systemd', False)}: Not a directory\n", [])


def test_a_file_that_cannot_be_written_is_one_line_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(src: str, dst: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system", dst)

    monkeypatch.setattr(os, "replace", read_only)
    monkeypatch.setattr(service, "run_command", lambda *_: pytest.fail("ran the service manager"))
    rendered = service.render("systemd", AGENT_ARGV, True, tmp_path)
    outcome = service.install(rendered, True)
    assert (outcome.code, outcome.out, outcome.err) == (
        1, [], [f"error: cannot write {rendered.path}: Read-only file system"])
    assert list(rendered.path.parent.iterdir()) == []


def real_systemctl_box(tmp_path: Path) -> Box:
    """The real systemctl, unable to reach any manager: no systemd as PID 1 here, an empty runtime directory."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        pytest.skip("systemctl is not installed")
    box = Box(tmp_path, ())
    box.env["PATH"] = f"{Path(systemctl).parent}{os.pathsep}/bin"
    return box


def test_install_with_the_real_systemctl_and_no_manager(tmp_path: Path) -> None:
    box = real_systemctl_box(tmp_path)
    path = box.path("systemd", True)
    ran = box("install", "--user", "-p", "site.yml", "-i", "inventory.yml", "--listen", ":9464")
    assert ran.code == 1
    assert ran.out == f"wrote {path}\n"
    problem, todo = ran.err.splitlines()
    assert problem.startswith("error: systemctl --user daemon-reload failed (exit 1): "), problem
    assert todo == (f"{path} is written; to finish, run: systemctl --user daemon-reload && "
                    "systemctl --user enable --now ce-agent.service")
    assert settings(path.read_text())[("Service", "ExecStart")][0].endswith(" --listen 127.0.0.1:9464")
    ran = box("status", "--user")
    assert ran.code == 4 and ran.out.splitlines() == [f"unit: {path}", "installed: yes", "state: unknown"]
    assert ran.err.startswith("error: systemctl --user is-active ce-agent.service failed (exit 1): ")
    ran = box("uninstall", "--user")
    assert ran.code == 1 and ran.out == f"removed {path}\n" and not path.exists()
    assert ran.err.startswith("error: systemctl --user disable --now ce-agent.service failed (exit 1): ")


@pytest.mark.parametrize(
    "kind, user, tools, env, code, calls, err_lines",
    [
        pytest.param("systemd", True, ("systemctl",), {}, 0,
                     ["systemctl --user disable --now ce-agent.service", "systemctl --user daemon-reload"], 0,
                     id="systemd: disable, remove, reload"),
        pytest.param("systemd", False, ("systemctl",), {"FAKE_FAIL": "disable"}, 1,
                     ["systemctl disable --now ce-agent.service", "systemctl daemon-reload"], 2,
                     id="systemd: a failing disable is reported, the file still goes"),
        pytest.param("systemd", False, (), {}, 1, [], 2, id="systemd: no systemctl on PATH"),
        pytest.param("launchd", True, ("launchctl",), {}, 0,
                     ["launchctl print gui/{uid}/io.ce-agent.agent", "launchctl bootout gui/{uid}/io.ce-agent.agent"],
                     0, id="launchd: a loaded agent is booted out"),
        pytest.param("launchd", False, ("launchctl",), {"FAKE_STATE": "unloaded"}, 0,
                     ["launchctl print system/io.ce-agent.agent"], 0, id="launchd: nothing loaded, nothing to stop"),
        pytest.param("launchd", False, (), {}, 1, [], 2, id="launchd: no launchctl on PATH"),
    ],
)
def test_uninstall(tmp_path: Path, kind: str, user: bool, tools: tuple[str, ...], env: dict[str, str], code: int,
                   calls: list[str], err_lines: int) -> None:
    box = Box(tmp_path, tools)
    path = box.path(kind, user)
    service.write_atomically(path, service.render(kind, AGENT_ARGV, user, box.home).content)
    # what `systemctl enable` made; `disable` removes it, and so does uninstall when disable cannot
    link = path.parent / f"{'default' if user else 'multi-user'}.target.wants" / path.name
    if kind == "systemd":
        link.parent.mkdir()
        link.symlink_to(path)
    ran = box("uninstall", *scope(kind, user), **env)
    assert (ran.code, ran.out) == (code, f"removed {path}\n"), ran.err
    assert len(ran.err.splitlines()) == err_lines, ran.err
    assert not path.exists()
    assert link.is_symlink() == (kind == "systemd" and code == 0)  # the fake systemctl removes nothing
    assert box.calls() == [call.format(uid=UID) for call in calls]
    ran = box("uninstall", *scope(kind, user), **env)
    assert (ran.code, ran.out, ran.err) == (0, f"not installed: there is no {path}\n", "")
    assert box.calls() == []


@pytest.mark.parametrize(
    "kind, installed, tools, state, code, shown, err_lines",
    [
        pytest.param("systemd", True, ("systemctl",), "active", 0, "active", 0, id="systemd: running"),
        pytest.param("systemd", True, ("systemctl",), "failed", 3, "failed", 0, id="systemd: failed"),
        pytest.param("systemd", False, ("systemctl",), "inactive", 3, "inactive", 0, id="systemd: not installed"),
        pytest.param("systemd", True, (), "", 4, "unknown", 1, id="systemd: installed, no systemctl"),
        pytest.param("systemd", False, (), "", 3, "unknown", 1, id="systemd: not installed, no systemctl"),
        pytest.param("launchd", True, ("launchctl",), "active", 0, "running", 0, id="launchd: running"),
        pytest.param("launchd", True, ("launchctl",), "stopped", 3, "not", 0, id="launchd: loaded, not running"),
        pytest.param("launchd", True, ("launchctl",), "unloaded", 3, "not loaded", 0, id="launchd: not loaded"),
        pytest.param("launchd", True, (), "", 4, "unknown", 1, id="launchd: installed, no launchctl"),
    ],
)
def test_status(tmp_path: Path, kind: str, installed: bool, tools: tuple[str, ...], state: str, code: int,
                shown: str, err_lines: int) -> None:
    box = Box(tmp_path, tools)
    path = box.path(kind, True)
    if installed:
        service.write_atomically(path, service.render(kind, AGENT_ARGV, True, box.home).content)
    ran = box("status", *scope(kind, True), FAKE_STATE=state)
    assert ran.code == code, ran.out + ran.err
    lines = ran.out.splitlines()
    assert lines[:3] == [f"{'unit' if kind == 'systemd' else 'plist'}: {path}",
                         f"installed: {'yes' if installed else 'no'}", f"state: {shown}"]
    assert len(ran.err.splitlines()) == err_lines, ran.err
    if kind == "systemd" and tools:
        assert box.calls() == ["systemctl --user is-active ce-agent.service",
                               "systemctl --user status --no-pager ce-agent.service"]
        assert f"Active: {state}" in ran.out  # systemctl's own status, as it printed it


def test_a_system_unit_warns_about_files_the_service_could_not_reach(tmp_path: Path) -> None:
    import subprocess
    import sys

    playbook = tmp_path / "site.yml"  # pytest's tmp_path lies under /tmp, which PrivateTmp=yes hides
    playbook.write_text("[]\n")
    ran = subprocess.run([sys.executable, "-m", "ce_agent", "service", "install", "--dry-run", "-p", str(playbook)],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert f"warning: {playbook} is under /tmp: the service cannot see it (PrivateTmp=yes)" in ran.stderr
    user = subprocess.run([sys.executable, "-m", "ce_agent", "service", "install", "--dry-run", "--user", "-p",
                           str(playbook)], capture_output=True, text=True, timeout=60)
    assert "warning:" not in user.stderr  # a user unit runs as the user, who can reach them
