"""Renders and installs the systemd unit or launchd plist that runs the agent as a service."""

from __future__ import annotations

import plistlib
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

# The templates are also in packaging/ (for packagers and readers); copies live here because a wheel
# ships only the package. tests/test_service.py keeps both copies identical.
SYSTEMD_TEMPLATE = """# ce-agent as a systemd service, rendered by `ce-agent service install`.
# The agent reads its secrets from $$CREDENTIALS_DIRECTORY (LoadCredential=), never from this file.
[Unit]
Description=ce-agent monitoring agent
After=network-online.target
Wants=network-online.target
# Restart=on-failure gives up after this many starts in this interval, so a broken config cannot loop forever
StartLimitIntervalSec=300s
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
WatchdogSec=30s
ExecStart=$exec_start
ExecReload=/bin/kill -HUP $$MAINPID
KillSignal=SIGTERM
TimeoutStopSec=15s
Restart=on-failure
RestartSec=5s
$identity
StateDirectory=ce-agent
StateDirectoryMode=0700
Environment=CE_AGENT_STATE_DIR=$state_dir
$extra_lines
UMask=0077

# Hardening: the agent reads the system and talks to the network; it changes nothing outside its state.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# Process checks and collectors must see every process: do not hide /proc entries.
ProtectProc=default
ProcSubset=all
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# CPython needs no writable+executable memory; a plugin using ctypes callbacks or a JIT might.
MemoryDenyWriteExecute=yes
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
SystemCallArchitectures=native

[Install]
WantedBy=$wanted_by
"""

LAUNCHD_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- ce-agent under launchd, rendered by `ce-agent service install`: a LaunchDaemon, or a LaunchAgent for one user. -->
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>$label</string>
	<key>ProgramArguments</key>
	<array>
$program_arguments
	</array>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>10</integer>
	<key>ProcessType</key>
	<string>Background</string>
	<key>Umask</key>
	<integer>63</integer>
	<key>StandardOutPath</key>
	<string>$stdout_path</string>
	<key>StandardErrorPath</key>
	<string>$stderr_path</string>
	<key>EnvironmentVariables</key>
	<dict>
		<key>CE_AGENT_STATE_DIR</key>
		<string>$state_dir</string>
	</dict>
</dict>
</plist>
"""

SYSTEMD_UNIT_NAME = "ce-agent.service"
LAUNCHD_LABEL = "io.ce-agent.agent"
SYSTEM_STATE_DIR = "/var/lib/ce-agent"  # the agent's own default for root (ce_agent.store.default_state_dir)

# A word systemd takes as it is, once % and $ are doubled: no quotes, blanks, backslashes or controls.
_BARE_WORD = re.compile(r"[A-Za-z0-9_@%$+=:,./-]+")
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def systemd_quote(word: str) -> str:
    """One argument as systemd's command-line parser reads it back unchanged (systemd.service, "Command lines")."""
    # % starts a specifier and $ a variable in ExecStart=, whether quoted or not
    word = word.replace("%", "%%").replace("$", "$$")
    if _BARE_WORD.fullmatch(word) and word != ";":
        return word
    quoted = "".join(_C_ESCAPES.get(c, f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in word)
    return f'"{quoted}"'


def systemd_command_line(argv: Sequence[str]) -> str:
    """An ExecStart= value: an absolute executable, then its arguments, each quoted as systemd needs."""
    if not argv or not Path(argv[0]).is_absolute():
        raise ValueError(f"the executable must be an absolute path, got {argv[0] if argv else 'nothing'!r}")
    return " ".join(systemd_quote(word) for word in argv)


def _unit_value(value: str) -> str:
    """A path in a unit setting: specifiers escaped, and no line breaks that would start a new setting."""
    if any(c in value for c in "\n\r") or any(c.isspace() for c in value):
        raise ValueError(f"a path in a unit file cannot hold blanks or line breaks: {value!r}")
    return value.replace("%", "%%")


def render_systemd(
    exec_argv: list[str], user_mode: bool, state_dir: str | None, credentials: Mapping[str, str]
) -> str:
    """The unit file: a hardened Type=notify service; DynamicUser for the system, the user's manager with user_mode.

    state_dir None: systemd's StateDirectory (%S/ce-agent: /var/lib/ce-agent, or ~/.local/state/ce-agent
    for a user). credentials: NAME -> absolute path of a secret, passed with LoadCredential=.
    """
    extra = []
    for name, path in sorted(credentials.items()):
        if not _CREDENTIAL_NAME.fullmatch(name):
            raise ValueError(f"a credential name is letters, digits, '_', '.' and '-', got {name!r}")
        if not Path(path).is_absolute():
            raise ValueError(f"credential {name}: the path must be absolute, got {path!r}")
        extra.append(f"LoadCredential={name}:{_unit_value(path)}")
    if state_dir is not None:
        if not Path(state_dir).is_absolute():
            raise ValueError(f"the state directory must be an absolute path, got {state_dir!r}")
        # ProtectSystem=strict makes everything else read-only
        extra.append(f"ReadWritePaths={_unit_value(state_dir)}")
    if user_mode:
        identity = "# A user service runs as the user whose manager starts it."
    else:
        # a transient user and group, made when the service starts: no account to create or to leak
        identity = "DynamicUser=yes"
    return string.Template(SYSTEMD_TEMPLATE).substitute(
        exec_start=systemd_command_line(exec_argv),
        identity=identity,
        state_dir="%S/ce-agent" if state_dir is None else _unit_value(state_dir),
        extra_lines="\n".join(extra) if extra else "# no credentials (LoadCredential=)",
        wanted_by="default.target" if user_mode else "multi-user.target",
    )


def render_launchd(
    exec_argv: list[str], label: str, log_dir: str, user_mode: bool, state_dir: str | None = None
) -> bytes:
    """The plist: restarted when it fails (KeepAlive SuccessfulExit=false), at most every 10 s.

    state_dir None means /var/lib/ce-agent, the agent's default for root; a LaunchAgent (user_mode)
    runs as its user, so it must be told where that user's state lives.
    """
    if state_dir is None:
        if user_mode:
            raise ValueError("a LaunchAgent needs the user's state directory")
        state_dir = SYSTEM_STATE_DIR
    arguments = "\n".join(f"\t\t<string>{escape(word)}</string>" for word in exec_argv)
    text = string.Template(LAUNCHD_TEMPLATE).substitute(
        label=escape(label),
        program_arguments=arguments,
        stdout_path=escape(str(Path(log_dir) / "ce-agent.out.log")),
        stderr_path=escape(str(Path(log_dir) / "ce-agent.err.log")),
        state_dir=escape(state_dir),
    )
    # a round trip through plistlib proves the XML well-formed and gives the canonical layout
    return plistlib.dumps(plistlib.loads(text.encode()), sort_keys=False)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A service definition and where `service install` puts it."""

    kind: str  # "systemd" or "launchd"
    path: Path
    content: bytes


def agent_argv(
    argv0: str, which: str | None, python: str, playbooks: Sequence[Path], inventories: Sequence[Path]
) -> list[str]:
    """The daemon's command line: this `ce-agent` script, else the one on PATH, else `python -m ce_agent`."""
    script = Path(argv0)
    if script.name == "ce-agent" and script.is_file():
        command = [str(script.resolve())]
    elif which:
        command = [str(Path(which).resolve())]
    else:
        command = [python, "-m", "ce_agent"]
    command.append("agent")
    command += [str(p.resolve()) for p in playbooks]
    for inventory in inventories:
        command += ["-i", str(inventory.resolve())]
    return command


def default_kind(platform: str) -> str:
    """launchd on macOS, systemd everywhere else."""
    return "launchd" if platform == "darwin" else "systemd"


def render(
    kind: str,
    exec_argv: list[str],
    user_mode: bool,
    home: Path,
    state_dir: str | None = None,
    credentials: Mapping[str, str] | None = None,
) -> Rendered:
    """The unit or plist for this kind, with the path where it belongs."""
    if kind == "systemd":
        if user_mode:
            path = home / ".config" / "systemd" / "user" / SYSTEMD_UNIT_NAME
        else:
            path = Path("/etc/systemd/system") / SYSTEMD_UNIT_NAME
        return Rendered(kind, path, render_systemd(exec_argv, user_mode, state_dir, credentials or {}).encode())
    if kind == "launchd":
        if credentials:
            raise ValueError("--credential is for systemd's LoadCredential=; launchd has no equivalent")
        if user_mode:
            log_dir = home / "Library" / "Logs" / "ce-agent"
            state_dir = state_dir or str(home / ".local" / "state" / "ce-agent")
            path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        else:
            log_dir = Path("/Library/Logs/ce-agent")
            path = Path("/Library/LaunchDaemons") / f"{LAUNCHD_LABEL}.plist"
        return Rendered(kind, path, render_launchd(exec_argv, LAUNCHD_LABEL, str(log_dir), user_mode, state_dir))
    raise ValueError(f"unknown service kind {kind!r}: systemd or launchd")


def parse_credentials(values: Sequence[str]) -> dict[str, str]:
    """NAME=PATH pairs (from --credential) as a mapping; the path made absolute."""
    credentials = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--credential wants NAME=PATH, got {value!r}")
        credentials[name] = str(Path(path).resolve())
    return credentials
