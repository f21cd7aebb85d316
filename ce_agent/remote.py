"""Remote `command` checks over the system's OpenSSH client: a host's Ansible connection variables as an ssh command line, shared connections and their private socket directory."""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import re
import shlex
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ce_agent.config.templating import has_template
from ce_agent.contracts import Result, Status, TaskContext

#: seconds an idle shared connection stays open after its last check: longer than a cron minute, so
#: `ce-agent run` every minute keeps reusing one connection
CONTROL_PERSIST = 120
#: the exit code of the ssh client when it failed itself (connection, authentication, host key)
SSH_FAILED = 255
CONNECTIONS = ("local", "ssh")

# Ansible's names, then its older aliases; the first one set wins.
CONNECTION_KEYS = ("ansible_connection", "connection")
HOST_KEYS = ("ansible_host", "ansible_ssh_host")
USER_KEYS = ("ansible_user", "ansible_ssh_user")
PORT_KEYS = ("ansible_port", "ansible_ssh_port")
KEY_FILE_KEYS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
ARGS_KEYS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
EXECUTABLE_KEYS = ("ansible_ssh_executable",)
VARIABLE_KEYS = (*CONNECTION_KEYS, *HOST_KEYS, *USER_KEYS, *PORT_KEYS, *KEY_FILE_KEYS, *ARGS_KEYS, *EXECUTABLE_KEYS)

#: sun_path is 108 bytes on Linux, 104 on the BSDs; ssh binds "PATH.<16 random characters>" first
_SOCKET_PATH_MAX = 104 - 17
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,20}$")
#: how often waiting for the connection lock or for ssh looks at the deadline and at cancel()
_POLL = 0.05
#: what ssh says when it fails, as the short reason put in the summary
_FAILURES = (
    ("connection refused", "connection refused"),
    ("connection timed out", "connection timed out"),
    ("operation timed out", "connection timed out"),
    ("could not resolve hostname", "cannot resolve the host name"),
    ("name or service not known", "cannot resolve the host name"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network is unreachable"),
    ("host key verification failed", "host key verification failed"),
    ("permission denied (", "authentication failed"),
    ("too many authentication failures", "authentication failed"),
    ("connection closed by", "connection closed by the server"),
    ("connection reset", "connection reset by the server"),
    ("kex_exchange_identification", "connection closed by the server"),
)


class RemoteError(ValueError):
    """A connection variable that cannot be used; the message names the variable, never a secret."""


def variable_problems(variables: Mapping[str, Any], *, rendered: bool = False) -> list[tuple[str, str]]:
    """(variable, message) for each connection variable with a value ce-agent cannot use.

    Unless `rendered`, values that are templates are skipped: they are checked when the check runs."""
    found: list[tuple[str, str]] = []

    def given(key: str) -> Any:
        value = variables[key]
        return None if not rendered and has_template(value) else value

    for key in (k for k in VARIABLE_KEYS if k in variables):
        value = given(key)
        if value is None:
            continue
        if key in CONNECTION_KEYS:
            if value not in CONNECTIONS:
                # a variable named `connection` may hold something else (a DSN with a password): shown
                # only when it is a plain word
                plain = isinstance(value, str) and _PLAIN_WORD.match(value)
                found.append((key, f"{value!r} is not supported; use local or ssh" if plain else "must be local or ssh"))
        elif key in PORT_KEYS:
            if _port(value) is None:
                shown = repr(value) if isinstance(value, (int, str)) and len(str(value)) <= 20 else type(value).__name__
                found.append((key, f"must be a port number from 1 to 65535, got {shown}"))
        elif key in ARGS_KEYS:
            if not isinstance(value, str):
                found.append((key, "must be a string of ssh options (split like a shell does)"))
            else:
                try:
                    shlex.split(value)
                except ValueError as exc:
                    found.append((key, f"cannot split it like a shell would: {exc}"))
        elif not isinstance(value, str) or not value.strip():
            found.append((key, "must be a non-empty string"))
        elif key in (*HOST_KEYS, *USER_KEYS) and (value.startswith("-") or any(c.isspace() for c in value)):
            found.append((key, f"{value!r} is not a valid {'user' if key in USER_KEYS else 'host'} name"))
    return found


def _port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())  # INI [group:vars] values are strings
    return value if isinstance(value, int) and 1 <= value <= 65535 else None


def _first(variables: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if variables.get(key) not in (None, ""):
            return variables[key]
    return None


@dataclass(frozen=True, slots=True)
class SSHTarget:
    """Where and how to log in: from a host's Ansible connection variables."""

    host: str
    user: str | None = None
    port: int | None = None
    key_file: str | None = None
    args: tuple[str, ...] = ()  # ansible_ssh_common_args, then ansible_ssh_extra_args
    executable: str = "ssh"

    @classmethod
    def from_variables(cls, variables: Mapping[str, Any], inventory_name: str) -> SSHTarget | None:
        """The ssh target of a host whose connection is ssh; None for a local one. Raises RemoteError."""
        # only the variables that matter are read: reading renders them, and an unused one may not render
        wanted = {k: variables[k] for k in CONNECTION_KEYS if k in variables}
        for key, message in variable_problems(wanted, rendered=True):
            raise RemoteError(f"{key}: {message}")
        if (_first(wanted, CONNECTION_KEYS) or "local") == "local":
            return None  # the ssh variables are not used, so not a reason to fail
        wanted = {k: variables[k] for k in VARIABLE_KEYS if k in variables}
        for key, message in variable_problems(wanted, rendered=True):
            raise RemoteError(f"{key}: {message}")
        host = _first(wanted, HOST_KEYS) or variables.get("address") or inventory_name
        port = _first(wanted, PORT_KEYS)
        key_file = _first(wanted, KEY_FILE_KEYS)
        args: list[str] = []
        for key in ARGS_KEYS:
            if wanted.get(key):
                args += shlex.split(wanted[key])
        return cls(
            host=str(host),
            user=_first(wanted, USER_KEYS),
            port=None if port is None else _port(port),
            key_file=None if key_file is None else os.path.expanduser(key_file),
            args=tuple(args),
            executable=_first(wanted, EXECUTABLE_KEYS) or "ssh",
        )

    @property
    def name(self) -> str:
        """`user@host port N`, as the summary of a failure names it."""
        who = f"{self.user}@{self.host}" if self.user else self.host
        return who + (f" port {self.port}" if self.port else "")

    def identity(self) -> str:
        """Names the shared connection: different credentials or options never share one."""
        text = repr((self.executable, self.user, self.host, self.port, self.key_file, self.args))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def control_dir(state_dir: Path | None, create: bool = True) -> Path:
    """The private (0700) directory of the control sockets of one state directory's connections.

    Short, because a socket path must fit in about 100 bytes: $XDG_RUNTIME_DIR or the temporary
    directory, then `ce-agent-ssh-UID/`, then a hash of the state directory (a cron `ce-agent run` and
    the daemon with the same state share their connections; two test runs do not)."""
    uid = os.geteuid()
    candidates = [os.environ.get("XDG_RUNTIME_DIR", ""), tempfile.gettempdir(), "/tmp"]
    state = str(state_dir.resolve()) if state_dir is not None else ""
    tag = hashlib.sha256(state.encode()).hexdigest()[:10]
    for base in candidates:
        if not base or not os.path.isabs(base) or not _config_safe(base):
            continue
        top = Path(base) / f"ce-agent-ssh-{uid}"
        if len(str(top / tag / ("x" * 16))) <= _SOCKET_PATH_MAX:
            break
    else:
        raise RemoteError("no directory with a short enough path for ssh's control sockets")
    if not create:
        return top / tag
    for directory in (top, top / tag):
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            info = directory.lstat()
        except OSError as exc:
            raise RemoteError(f"cannot create {directory}: {exc.strerror or exc}") from None
        # a directory someone else made (or a symlink) in /tmp would let them take over the connections
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
            raise RemoteError(f"{directory} is not a private directory of user {uid} (mode 0700); remove it")
    return top / tag


def _config_safe(path: str) -> bool:
    # paths go into ssh options (-o Name="value"); a quote or a newline there cannot be written
    return not any(c in path for c in '"\n\r')


def _config_path(path: Path) -> str:
    """A path as the value of an ssh option: quoted, its %s escaped (ssh expands %h and the like)."""
    if not _config_safe(str(path)):
        raise RemoteError(f"cannot give ssh the path {str(path)!r} (it holds a quote or a newline)")
    return '"' + str(path).replace("%", "%%") + '"'


class SSHSession:
    """One check's ssh command lines to one target, through the shared connection of that target."""

    def __init__(self, target: SSHTarget, state_dir: Path | None, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        directory = control_dir(state_dir)
        self.control_path = directory / target.identity()
        self.known_hosts: Path | None = None
        if state_dir is not None:
            self.known_hosts = state_dir / "ssh" / "known_hosts"

    @classmethod
    def for_context(cls, context: TaskContext) -> SSHSession | None:
        """The session of a task whose host's connection is ssh; None for local. Raises RemoteError."""
        target = SSHTarget.from_variables(context.hostvars, context.host)
        if target is None:
            return None
        return cls(target, context.state_dir, context.timeout)

    def options(self) -> list[str]:
        """ssh and its options, up to the host. The user's own options come before the defaults,
        because ssh keeps the first value it is given for an option: they override them."""
        t = self.target
        argv = [t.executable]
        if t.user:
            argv += ["-l", t.user]
        if t.port:
            argv += ["-p", str(t.port)]
        if t.key_file:
            argv += ["-i", t.key_file]
        argv += t.args
        # ssh's own warnings must not mix with the plugin's output (stderr is part of it)
        argv += ["-T", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        argv += ["-o", f"ConnectTimeout={max(1, int(self.timeout * 0.8))}"]
        if self.known_hosts is not None:
            argv += ["-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={_config_path(self.known_hosts)}"]
        argv += ["-o", f"ControlPath={_config_path(self.control_path)}", "-o", f"ControlPersist={CONTROL_PERSIST}"]
        # a master whose server went away is noticed and ends instead of hanging the next checks
        argv += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
        return argv

    def command(self, argv: Sequence[str] | str, env: Mapping[str, str], cwd: str | None) -> list[str]:
        """The local command line running `argv` on the target, killed there at the timeout: a list is
        quoted word by word; a string is a shell command line, given to the remote `sh -c` as it is.

        ssh does not pass a kill on to the remote command, so `timeout` (coreutils or BusyBox) runs it
        there, in a process group of its own that it kills with all it started."""
        words = [*(f"{k}={v}" for k, v in env.items())]
        inner = ["env", *words] if words else []
        if isinstance(argv, str):
            inner += ["sh", "-c", argv]
        else:
            inner += list(argv)
        remote = shlex.join(["timeout", "-s", "KILL", str(max(1, math.ceil(self.timeout))), *inner])
        if cwd is not None:
            # the shell's own message says why; exit 3 makes it UNKNOWN, not CRITICAL
            remote = f"cd {shlex.quote(cwd)} || exit 3; exec {remote}"
        # the check's own connection only uses the shared one: it never becomes a master itself, since
        # a second master for the same socket would print a warning into the plugin's output
        return [*self.options(), "-o", "ControlMaster=no", "--", self.target.host, remote]

    def connect(self, deadline: float, cancelled: threading.Event) -> Result | None:
        """Make sure the shared connection is up; checks started together then open one connection,
        not one each. A Result when it cannot be opened (ssh's failure, the deadline, cancel())."""
        if self.known_hosts is not None:
            try:
                self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                return Result(Status.UNKNOWN, f"ssh: cannot create {self.known_hosts.parent}: {exc.strerror or exc}")
        try:
            return self._connect(deadline, cancelled)
        except OSError as exc:
            return Result(Status.UNKNOWN, f"ssh: cannot run {self.target.executable}: {exc.strerror or exc}")

    def _connect(self, deadline: float, cancelled: threading.Event) -> Result | None:
        with _locked(Path(f"{self.control_path}.lock"), deadline, cancelled) as got:
            if not got:
                return None  # the check then times out (or is cancelled) as any other
            options, host = self.options(), ["--", self.target.host]
            if self.control_path.exists():
                ran = _run([*options, "-O", "check", *host], deadline, cancelled)
                if ran is None:
                    return None
                if ran[0] == 0:
                    return None
                self.control_path.unlink(missing_ok=True)  # the master is gone; its socket is stale
            # `true` through a new master: ControlPersist keeps it in the background afterwards
            ran = _run([*options, "-o", "ControlMaster=yes", *host, "true"], deadline, cancelled)
            if ran is None:
                return None
            code, output = ran
            if code == SSH_FAILED:
                return self.failure(output)
            return None

    def failure(self, output: str) -> Result:
        """ssh's exit 255 as UNKNOWN, with what went wrong in the summary (it is not a Nagios status)."""
        text = output.strip()
        # ssh's error is the last thing it prints; a remote command's own words earlier must not match
        last = text.splitlines()[-1].lower() if text else ""
        reason = next((short for needle, short in _FAILURES if needle in last), None)
        if reason is None:
            # a remote command may exit 255 itself: both are UNKNOWN, said without guessing which
            first = text.splitlines()[0] if text else "(no output)"
            return Result(Status.UNKNOWN, f"exit code 255 (ssh or the remote command): {first}", [], text)
        return Result(Status.UNKNOWN, f"ssh: {reason} ({self.target.name})", [], text)


class _locked:
    """An exclusive lock on a file, waited for until a deadline or cancel(); `as` gives whether it was got.

    flock() locks belong to an open file, so it excludes other threads as well as other processes."""

    def __init__(self, path: Path, deadline: float, cancelled: threading.Event) -> None:
        self.path, self.deadline, self.cancelled = path, deadline, cancelled
        self.fd: int | None = None

    def __enter__(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= self.deadline or self.cancelled.is_set():
                    os.close(fd)
                    return False
                time.sleep(_POLL)
                continue
            self.fd = fd
            return True

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _run(argv: list[str], deadline: float, cancelled: threading.Event) -> tuple[int, str] | None:
    """Run ssh to its end: (exit code, output); None when the deadline passed or cancel() came first.
    Raises OSError when ssh cannot be started."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    while True:
        try:
            output, _ = proc.communicate(timeout=max(0.0, min(_POLL, deadline - time.monotonic())))
            return proc.returncode, output.decode("utf-8", errors="replace")
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline or cancelled.is_set():
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.communicate()
                return None


def masters(state_dir: Path | None) -> list[Path]:
    """The control sockets of a state directory's shared connections (none when it never used ssh)."""
    directory = control_dir(state_dir, create=False)
    try:
        return sorted(path for path in directory.iterdir() if path.is_socket())
    except OSError:
        return []


def close_masters(state_dir: Path | None, executable: str = "ssh") -> int:
    """Ask every shared connection of a state directory to exit now; how many did. For the daemon
    when it stops; best effort, never raises (a master left over ends after ControlPersist anyway)."""
    closed = 0
    try:
        sockets = masters(state_dir)
    except RemoteError:
        return 0
    for path in sockets:
        try:
            ran = subprocess.run(
                [executable, "-o", f"ControlPath={_config_path(path)}", "-O", "exit", "ce-agent"],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False,
            )
        except (OSError, RemoteError, subprocess.TimeoutExpired):
            continue
        closed += ran.returncode == 0
    return closed
