"""Renders and installs the systemd unit or launchd plist that runs the agent as a service.

The paths come from unit_path (under $CE_AGENT_SERVICE_ROOT when it is set), the service manager is
driven through its command (systemctl, launchctl) found on PATH, and every failure becomes one line:
install, uninstall and status return an Outcome the command line prints.
"""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import shutil
import string
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

# The templates are also in packaging/ (for packagers and readers); copies live here because a wheel
# ships only the package. tests/test_service.py keeps both copies identical.
SYSTEMD_TEMPLATE = """# ce-agent as a systemd service, rendered by `ce-agent service install`.
# ce-agent replaces or removes this file only while the line above says it rendered it.
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
<!-- ce-agent replaces or removes this file only while the line above says it rendered it. -->
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
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
LAUNCH_DAEMONS_DIR = Path("/Library/LaunchDaemons")
SYSTEM_LOG_DIR = Path("/Library/Logs/ce-agent")
# Every file ce-agent renders holds these words; install replaces and uninstall removes only such a file
MARKER = "rendered by `ce-agent service install`"
# A directory prefix for every path the service commands write (like DESTDIR): for packagers and tests
SERVICE_ROOT_ENV = "CE_AGENT_SERVICE_ROOT"
# `systemctl enable --now` waits for READY=1 from a Type=notify service (systemd's own limit is 90 s)
COMMAND_TIMEOUT_S = 120.0

EXIT_FAILED = 1  # a service manager command failed or could not run; the file is written (or removed)
EXIT_INACTIVE = 3  # status: not running or not installed, as `systemctl status` and LSB
EXIT_UNKNOWN = 4  # status: installed, but the service manager could not be asked (LSB "status unknown")


class ServiceError(Exception):
    """A request refused before anything is written: one line, exit 2."""

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
    try:
        plistlib.loads(text.encode())  # proves the XML well-formed; the text itself keeps its comments
    except Exception as exc:  # expat's error for control characters is no ValueError
        raise ValueError(f"the plist would not be valid XML ({exc}): control characters in a path?") from None
    return text.encode()


@dataclass(frozen=True, slots=True)
class Rendered:
    """A service definition and where `service install` puts it."""

    kind: str  # "systemd" or "launchd"
    path: Path
    content: bytes
    directories: tuple[Path, ...] = ()  # made before the service starts (launchd opens its log files there)


def agent_argv(
    argv0: str,
    which: str | None,
    python: str,
    playbooks: Sequence[Path],
    inventories: Sequence[Path],
    listen: str | None = None,
) -> list[str]:
    """The daemon's command line: this `ce-agent` script, else the one on PATH, else `python -m ce_agent`.

    Paths are made absolute: the service manager starts the agent in another directory.
    """
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
    if listen is not None:
        command += ["--listen", listen]
    return command


def reachability_warnings(argv: Sequence[str], kind: str, user_mode: bool) -> list[str]:
    """What the system service could not reach although the unit verifies: files under /tmp (hidden
    by PrivateTmp=yes) and, for DynamicUser=yes, files or an interpreter in directories closed to
    other users (such as /root). One warning per path."""
    if kind != "systemd" or user_mode:
        return []
    paths = [Path(a) for a in argv if a.startswith("/")]
    script = paths[0] if paths else None
    if script is not None and script.is_file():
        try:
            first = script.read_bytes()[:256].split(b"\n", 1)[0]
        except OSError:
            first = b""
        if first.startswith(b"#!/"):
            paths.append(Path(first[2:].decode(errors="replace").split()[0]))
    warnings = []
    for path in paths:
        real = path.resolve()
        if any(str(p).startswith(("/tmp/", "/var/tmp/")) for p in (path, real)):
            warnings.append(f"warning: {path} is under /tmp: the service cannot see it (PrivateTmp=yes); "
                            "install the agent and its files elsewhere, such as /opt or /etc/ce-agent")
            continue
        closed = next((d for d in [*reversed(real.parents)] if d.is_dir() and not d.stat().st_mode & 0o001), None)
        if closed is not None:
            warnings.append(f"warning: {path} is inside {closed}, which other users cannot enter: the service's "
                            "dynamic user cannot reach it; install into /opt or /usr/local")
    return warnings


def listen_address(value: str) -> str:
    """--listen checked by the agent's own parser, written out in full (":9464" is 127.0.0.1:9464).

    "none" (or "off"): the agent serves no endpoints; systemd's watchdog and readiness do not need them.
    """
    from ce_agent.server import format_address, parse_address

    if value.strip().lower() in ("none", "off"):
        return "none"
    return format_address(*parse_address(value))


def default_kind(platform: str) -> str:
    """launchd on macOS, systemd everywhere else."""
    return "launchd" if platform == "darwin" else "systemd"


def service_root(environ: Mapping[str, str]) -> Path | None:
    """$CE_AGENT_SERVICE_ROOT as an absolute directory, or None when unset or empty."""
    value = environ.get(SERVICE_ROOT_ENV, "")
    return Path(os.path.abspath(value)) if value else None


def _under(root: Path | None, path: Path) -> Path:
    return root / path.relative_to(path.anchor) if root is not None else path


def unit_path(kind: str, user_mode: bool, home: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where the unit or plist lives, under $CE_AGENT_SERVICE_ROOT when that is set.

    systemd: /etc/systemd/system, or $XDG_CONFIG_HOME/systemd/user (~/.config when unset or relative, as the
    XDG spec says) for a user. launchd: /Library/LaunchDaemons, or ~/Library/LaunchAgents for a user.
    """
    environ = environ if environ is not None else {}
    if kind == "systemd":
        if user_mode:
            config = environ.get("XDG_CONFIG_HOME", "")
            base = Path(config) if config and Path(config).is_absolute() else home / ".config"
            path = base / "systemd" / "user" / SYSTEMD_UNIT_NAME
        else:
            path = SYSTEM_UNIT_DIR / SYSTEMD_UNIT_NAME
    elif kind == "launchd":
        directory = home / "Library" / "LaunchAgents" if user_mode else LAUNCH_DAEMONS_DIR
        path = directory / f"{LAUNCHD_LABEL}.plist"
    else:
        raise ValueError(f"unknown service kind {kind!r}: systemd or launchd")
    return _under(service_root(environ), path)


def render(
    kind: str,
    exec_argv: list[str],
    user_mode: bool,
    home: Path,
    state_dir: str | None = None,
    credentials: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Rendered:
    """The unit or plist for this kind, with the path where it belongs (see unit_path)."""
    path = unit_path(kind, user_mode, home, environ)
    if kind == "systemd":
        return Rendered(kind, path, render_systemd(exec_argv, user_mode, state_dir, credentials or {}).encode())
    if credentials:
        raise ValueError("--credential is for systemd's LoadCredential=; launchd has no equivalent")
    if user_mode:
        log_dir = home / "Library" / "Logs" / "ce-agent"
        state_dir = state_dir or str(home / ".local" / "state" / "ce-agent")
    else:
        log_dir = SYSTEM_LOG_DIR
    content = render_launchd(exec_argv, LAUNCHD_LABEL, str(log_dir), user_mode, state_dir)
    # the plist names the real log directory; install makes it where the files go
    return Rendered(kind, path, content, (_under(service_root(environ or {}), log_dir),))


def parse_credentials(values: Sequence[str]) -> dict[str, str]:
    """NAME=PATH pairs (from --credential) as a mapping; the path made absolute."""
    credentials = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--credential wants NAME=PATH, got {value!r}")
        credentials[name] = str(Path(path).resolve())
    return credentials


# --- installing, removing and asking the service manager ---------------------------------------------


@dataclass
class Outcome:
    """What a service command prints (stdout, stderr lines) and its exit status."""

    code: int = 0
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Ran:
    """One service manager command; code None when it could not run at all (not on PATH, timed out)."""

    argv: tuple[str, ...]
    code: int | None
    out: str = ""
    err: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    def problem(self) -> str:
        """One line naming the command and its error."""
        command = shlex.join(self.argv)
        if self.code is None:
            return f"error: {command}: {self.err}"
        detail = "; ".join(line.strip() for line in (self.err or self.out).splitlines() if line.strip())
        return f"error: {command} failed (exit {self.code}): {detail or 'no message'}"


def run_command(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> Ran:
    """Run a service manager command found on PATH; never raises for a missing or failing command."""
    found = shutil.which(argv[0])
    if found is None:
        return Ran(tuple(argv), None, err=f"{argv[0]} is not on PATH")
    try:
        proc = subprocess.run([found, *argv[1:]], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return Ran(tuple(argv), None, err=f"no answer after {timeout:g} s")
    except OSError as exc:
        return Ran(tuple(argv), None, err=exc.strerror or str(exc))
    return Ran(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


def require_root(user_mode: bool, euid: int, environ: Mapping[str, str], doing: str) -> None:
    """The system service's files and manager need root; a --user one or a $CE_AGENT_SERVICE_ROOT tree do not."""
    if not user_mode and euid != 0 and service_root(environ) is None:
        raise ServiceError(f"{doing} the system service needs root: run it with sudo, or give --user")


def written_by_ce_agent(content: bytes) -> bool:
    return MARKER.encode() in content


def write_atomically(path: Path, content: bytes, mode: int = 0o644) -> None:
    """A temporary file in the same directory, flushed to disk, then renamed over path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fchmod(file.fileno(), mode)  # mkstemp makes 0600; the manager and readers need 0644
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    with suppress(OSError):  # the rename itself survives a crash once the directory is on disk
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _read(path: Path) -> bytes | None:
    """The file's content, None when there is none; a path that cannot be read is refused."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ServiceError(f"{path}: {exc.strerror or exc}") from None


def _systemctl(user_mode: bool, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if user_mode else []), *args]


def _launchd_domain(user_mode: bool) -> str:
    return f"gui/{os.getuid()}" if user_mode else "system"


def _start_commands(kind: str, path: Path, user_mode: bool, replaced: bool) -> list[list[str]]:
    """What starts the service now and at every boot (or login), after the definition is written."""
    if kind == "systemd":
        commands = [_systemctl(user_mode, "daemon-reload"), _systemctl(user_mode, "enable", "--now", SYSTEMD_UNIT_NAME)]
        if replaced:  # enable --now leaves a running agent alone: restart it on the new unit
            commands.append(_systemctl(user_mode, "try-restart", SYSTEMD_UNIT_NAME))
        return commands
    domain = _launchd_domain(user_mode)
    # enable clears a "disabled" override (what `load -w` did), bootstrap loads and, with RunAtLoad, starts
    return [["launchctl", "enable", f"{domain}/{LAUNCHD_LABEL}"], ["launchctl", "bootstrap", domain, str(path)]]


def _run_in_turn(commands: list[list[str]], outcome: Outcome, path: Path) -> bool:
    """Run until one fails; then one line for the failure and one with what is left to run."""
    for index, argv in enumerate(commands):
        ran = run_command(argv)
        if not ran.ok:
            outcome.code = EXIT_FAILED
            outcome.err.append(ran.problem())
            left = " && ".join(shlex.join(c) for c in commands[index:])
            outcome.err.append(f"{path} is written; to finish, run: {left}")
            return False
    return True


def install(rendered: Rendered, user_mode: bool, start: bool = True, force: bool = False) -> Outcome:
    """Write the unit or plist (atomically, 0644), then have the service manager load, enable and start it.

    Refuses (ServiceError) to replace a file ce-agent did not write unless force. start False (--no-start):
    systemd's daemon-reload only, and a failing manager is a note, not an error; launchd runs nothing.
    """
    path = rendered.path
    before = _read(path)
    if before is not None and not written_by_ce_agent(before) and not force:
        raise ServiceError(f"{path} exists and was not written by ce-agent; give --force to replace it")
    outcome = Outcome()
    try:
        write_atomically(path, rendered.content)
        for directory in rendered.directories:
            directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        outcome.code = EXIT_FAILED
        outcome.err.append(f"error: cannot write {exc.filename or path}: {exc.strerror or exc}")
        return outcome
    outcome.out.append(f"wrote {path}")
    replaced = before is not None and before != rendered.content
    commands = _start_commands(rendered.kind, path, user_mode, replaced)
    if rendered.kind == "launchd" and before is not None and start:
        # bootstrap refuses a label that is loaded: unload the old definition (it may well not be loaded)
        run_command(["launchctl", "bootout", f"{_launchd_domain(user_mode)}/{LAUNCHD_LABEL}"])
    if not start:
        if rendered.kind == "systemd":
            reload = run_command(commands[0])
            if reload.ok:
                commands = commands[1:]
            else:
                outcome.err.append("note: " + reload.problem().removeprefix("error: "))
        outcome.out.append("not started (--no-start); to start it now and at every "
                           f"{'login' if user_mode else 'boot'}: {' && '.join(shlex.join(c) for c in commands)}")
        return outcome
    if _run_in_turn(commands, outcome, path):
        if rendered.kind == "systemd":
            see = shlex.join(_systemctl(user_mode, "status", SYSTEMD_UNIT_NAME))
        else:
            see = shlex.join(["launchctl", "print", f"{_launchd_domain(user_mode)}/{LAUNCHD_LABEL}"])
        outcome.out.append(f"{'restarted' if replaced else 'started'} and enabled at every "
                           f"{'login' if user_mode else 'boot'}; see: {see}")
    return outcome


def uninstall(kind: str, path: Path, user_mode: bool, force: bool = False) -> Outcome:
    """Stop and disable the service (best effort: failures are reported, exit 1), remove the file, reload."""
    before = _read(path)
    outcome = Outcome()
    if before is None:
        outcome.out.append(f"not installed: there is no {path}")
        return outcome
    if not written_by_ce_agent(before) and not force:
        raise ServiceError(f"{path} was not written by ce-agent; give --force to remove it")
    manager_found = True
    if kind == "systemd":
        stopped = run_command(_systemctl(user_mode, "disable", "--now", SYSTEMD_UNIT_NAME))
        if not stopped.ok:
            outcome.err.append(stopped.problem())
            manager_found = stopped.code is not None
    else:
        target = f"{_launchd_domain(user_mode)}/{LAUNCHD_LABEL}"
        loaded = run_command(["launchctl", "print", target])
        if loaded.code is None:
            outcome.err.append(loaded.problem())
        elif loaded.ok:  # a label that is not loaded has nothing to boot out
            stopped = run_command(["launchctl", "bootout", target])
            if not stopped.ok:
                outcome.err.append(stopped.problem())
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        outcome.err.append(f"error: cannot remove {path}: {exc.strerror or exc}")
        outcome.code = EXIT_FAILED
        return outcome
    outcome.out.append(f"removed {path}")
    if kind == "systemd" and outcome.err:
        # what `disable` would have removed: the [Install] link, else it dangles and systemd warns at boot
        link = path.parent / f"{'default' if user_mode else 'multi-user'}.target.wants" / SYSTEMD_UNIT_NAME
        if link.is_symlink():
            with suppress(OSError):
                link.unlink()
    if kind == "systemd" and manager_found:
        reload = run_command(_systemctl(user_mode, "daemon-reload"))
        if not reload.ok:
            outcome.err.append(reload.problem())
    if outcome.err:
        outcome.code = EXIT_FAILED
        if kind == "systemd":
            todo = " && ".join(shlex.join(_systemctl(user_mode, *a)) for a in
                               (("stop", SYSTEMD_UNIT_NAME), ("daemon-reload",)))
        else:
            todo = shlex.join(["launchctl", "bootout", f"{_launchd_domain(user_mode)}/{LAUNCHD_LABEL}"])
        outcome.err.append(f"the file is removed; if the agent still runs, do: {todo}")
    return outcome


def status(kind: str, path: Path, user_mode: bool) -> Outcome:
    """Where the definition is, whether it is installed, and what the service manager says.

    Exit 0 when the service runs; 3 when it does not or is not installed; 4 when it is installed but the
    service manager cannot be asked (the codes of `systemctl status` and LSB init scripts).
    """
    before = _read(path)
    outcome = Outcome()
    outcome.out.append(f"{'unit' if kind == 'systemd' else 'plist'}: {path}")
    if before is None:
        outcome.out.append("installed: no")
    else:
        outcome.out.append(f"installed: yes{'' if written_by_ce_agent(before) else ' (not written by ce-agent)'}")
    details = ""
    if kind == "systemd":
        active = run_command(_systemctl(user_mode, "is-active", SYSTEMD_UNIT_NAME))
        # is-active prints the state whenever it reaches the manager, even for an unknown unit ("inactive")
        state = active.out.split()[0] if active.code is not None and active.out.split() else None
        if state is None:
            outcome.err.append(active.problem())
        else:
            shown = run_command(_systemctl(user_mode, "status", "--no-pager", SYSTEMD_UNIT_NAME))
            details = shown.out or shown.err  # exits 3 when inactive: that is an answer, not a failure
        running = active.ok
    else:
        shown = run_command(["launchctl", "print", f"{_launchd_domain(user_mode)}/{LAUNCHD_LABEL}"])
        if shown.code is None:
            state = None
            outcome.err.append(shown.problem())
        elif shown.ok:
            found = re.search(r"^\s*state = (\S+)", shown.out, re.MULTILINE)
            state = found[1] if found else "loaded"
            details = shown.out
        else:
            state = "not loaded"
        running = state == "running"
    outcome.out.append(f"state: {state or 'unknown'}")
    if details.strip():
        outcome.out += ["", details.rstrip("\n")]
    if running:
        outcome.code = 0
    elif state is None and before is not None:
        outcome.code = EXIT_UNKNOWN
    else:
        outcome.code = EXIT_INACTIVE
    return outcome
