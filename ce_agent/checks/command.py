"""The `command` check: run any Nagios-compatible plugin; its exit code is the status, its perfdata the metrics."""

from __future__ import annotations

import dataclasses
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from typing import Annotated

import msgspec

from ce_agent import remote
from ce_agent.contracts import Check, Metric, Result, Status, TaskContext, worst
from ce_agent.durations import format_duration
from ce_agent.options import Threshold
from ce_agent.perfdata import PluginOutput
from ce_agent.thresholds import evaluate, optional_range

#: output kept from a plugin; the rest is read and dropped so that the plugin never blocks on a full pipe
MAX_OUTPUT = 1 << 20
#: once the plugin exited, how long what it left behind may keep its output open before being killed
EXIT_GRACE = 0.5
#: how often the read loop looks whether the plugin exited (output and EOF wake it at once)
_POLL = 0.1


class CommandCheck(Check):
    """Run a Nagios-compatible plugin: exit code 0-3 is the status, its perfdata become metrics."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        cmd: Annotated[
            str | None,
            msgspec.Meta(description="The command line, split like a shell does (quotes work) but run without one."),
        ] = None
        argv: Annotated[
            list[str] | None,
            msgspec.Meta(description="The program and its arguments as a list (instead of cmd)."),
        ] = None
        env: Annotated[
            dict[str, str],
            msgspec.Meta(description="Extra environment variables, set over the agent's environment."),
        ] = msgspec.field(default_factory=dict)
        cwd: Annotated[str | None, msgspec.Meta(description="The working directory to run in.")] = None
        warning: Annotated[
            Threshold | None,
            msgspec.Meta(description="WARNING when the first perfdata value is above (or outside this range)."),
        ] = None
        critical: Annotated[
            Threshold | None,
            msgspec.Meta(description="CRITICAL when the first perfdata value is above (or outside this range)."),
        ] = None

        def __post_init__(self) -> None:
            # checked when the playbook loads, so `validate` reports it with the file and line
            if (self.argv is None) == (self.cmd is None):
                raise ValueError("give exactly one of 'argv' (a list) or 'cmd' (a command line)")
            if self.cmd is not None:
                try:
                    words = shlex.split(self.cmd)
                except ValueError as exc:
                    raise ValueError(f"cmd: cannot split it like a shell would: {exc}") from None
            else:
                words = list(self.argv or [])
            if not words or not words[0]:
                raise ValueError(f"{'cmd' if self.cmd is not None else 'argv'}: the command is empty")

    EXAMPLES = """\
- name: Load average
  command: "/usr/lib/nagios/plugins/check_load -w 5,4,3 -c 10,8,6"
- name: Backup script
  command:
    argv: [/usr/local/bin/check_backup, --max-age, 1d]
    env: {LC_ALL: C}
    critical: "1:"
"""
    FREE_FORM = "cmd"

    def __init__(self, options: CommandCheck.Options, context: TaskContext) -> None:
        super().__init__(options, context)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._cancelled = threading.Event()
        self._ssh: remote.SSHSession | None = None  # set when the host's connection is ssh

    def run(self) -> Result:
        opts = self.options
        argv, problem = self._argv()
        if problem:
            return Result(Status.UNKNOWN, problem)
        deadline = time.monotonic() + self.context.timeout
        env = {**os.environ, **opts.env} if opts.env else None
        cwd = opts.cwd
        try:
            self._ssh = remote.SSHSession.for_context(self.context)
        except remote.RemoteError as exc:
            return Result(Status.UNKNOWN, str(exc))
        if self._ssh is not None:
            failed = self._ssh.connect(deadline, self._cancelled)
            if failed is not None:
                return failed
            if self._cancelled.is_set() or time.monotonic() >= deadline:
                return self._timed_out(b"")
            # env and cwd apply on the remote host, not to the local ssh
            argv, env, cwd = self._ssh.command(argv, opts.env, opts.cwd), None, None
        with self._lock:
            if self._cancelled.is_set():
                return self._timed_out(b"")
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=env,
                    # its own process group, so that a timeout kills the plugin and all it started
                    start_new_session=True,
                )
            except OSError as exc:
                return Result(Status.UNKNOWN, _start_error(exc, argv[0], cwd))
        proc = self._proc
        try:
            output, finished = self._read(proc, deadline)
            if finished:
                # EOF can come before the exit: coreutils close stdout in an atexit handler
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0))
                except subprocess.TimeoutExpired:
                    finished = False
        finally:
            # nothing the plugin started outlives the check: a plugin that leaves children behind
            # would otherwise leak one more process group on every scheduled run
            self._kill_group()
            proc.stdout.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel (D state); Popen reaps it later
        if not finished or self._cancelled.is_set():
            return self._timed_out(output)
        return self._result(proc.returncode, output)

    def cancel(self) -> None:
        self._cancelled.set()
        self._kill_group()

    def _argv(self) -> tuple[list[str], str]:
        opts = self.options
        if (opts.argv is None) == (opts.cmd is None):
            return [], "command: give exactly one of 'argv' (a list) or 'cmd' (a command line)"
        if opts.cmd is not None:
            try:
                argv = shlex.split(opts.cmd)
            except ValueError as exc:
                return [], f"command: cannot split cmd {opts.cmd!r}: {exc}"
        else:
            argv = list(opts.argv)
        if not argv or not argv[0]:
            return [], "command: the command is empty"
        return argv, ""

    def _read(self, proc: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, bool]:
        """Output until EOF: (output, True); or what came before the deadline: (output, False)."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        chunks: list[bytes] = []
        kept = 0
        exited_at: float | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and now >= exited_at + EXIT_GRACE:
                    # the plugin is done; something it started holds the pipe open: it gets killed
                    return b"".join(chunks), True
                if now >= deadline or self._cancelled.is_set():
                    return b"".join(chunks), False
                if not selector.select(min(deadline - now, _POLL)):
                    continue
                data = os.read(fd, 65536)
                if not data:
                    return b"".join(chunks), True
                if kept < MAX_OUTPUT:
                    chunks.append(data[: MAX_OUTPUT - kept])
                    kept += len(chunks[-1])

    def _kill_group(self) -> None:
        with self._lock:
            if self._proc is None:
                return
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is gone already

    def _timed_out(self, output: bytes) -> Result:
        parsed = PluginOutput.parse(_text(output))
        details = "\n".join(x for x in (parsed.summary, parsed.details) if x)
        return Result(Status.UNKNOWN, f"timed out after {format_duration(self.context.timeout)}", [], details)

    def _result(self, code: int, output: bytes) -> Result:
        text = _text(output)
        if self._ssh is not None and code == remote.SSH_FAILED:
            return self._ssh.failure(text)
        parsed = PluginOutput.parse(text)
        summary = parsed.summary
        if code < 0:
            status = Status.UNKNOWN
            summary = f"killed by {_signal_name(-code)}" + (f": {summary}" if summary else "")
        elif not text.strip():
            status = Status.from_code(code)
            summary = f"(no output) exit {code}"
        elif code > 3:
            status = Status.UNKNOWN
            summary = f"exit code {code}: {summary or '(no summary)'}"
        else:
            status = Status(code)
            summary = summary or f"(no summary) exit {code}"
        if len(output) >= MAX_OUTPUT:
            summary += " (output truncated)"
        metrics = parsed.metrics
        if code >= 0 and (self.options.warning is not None or self.options.critical is not None):
            status, summary, metrics = self._apply_thresholds(status, summary, metrics)
        return Result(status, summary, metrics, parsed.details)

    def _apply_thresholds(
        self, status: Status, summary: str, metrics: list[Metric]
    ) -> tuple[Status, str, list[Metric]]:
        opts = self.options
        if not metrics:
            return worst([status, Status.UNKNOWN]), f"{summary} (no perfdata for warning/critical)", metrics
        first = metrics[0]
        judged = evaluate(first.value, optional_range(opts.warning), optional_range(opts.critical))
        warn = str(opts.warning) if opts.warning is not None else first.warn
        crit = str(opts.critical) if opts.critical is not None else first.crit
        metrics = [dataclasses.replace(first, warn=warn, crit=crit), *metrics[1:]]
        # thresholds only make a result worse: the plugin's own verdict stands otherwise
        if worst([status, judged]) is status:
            return status, summary, metrics
        if first.value is None:
            return judged, f"{summary} ({first.name}=U: no value for warning/critical)", metrics
        which = f"critical {crit}" if judged is Status.CRITICAL else f"warning {warn}"
        return judged, f"{summary} ({first.name}={first.value:g}{first.unit} alerts on {which})", metrics


def _start_error(exc: OSError, program: str, cwd: str | None) -> str:
    if cwd is not None and exc.filename == cwd:
        return f"cannot use directory {cwd!r}: {exc.strerror}"
    if isinstance(exc, FileNotFoundError):
        return f"no such program: {program}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {program}"
    return f"cannot run {program}: {exc.strerror or exc}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _text(output: bytes) -> str:
    return output.decode("utf-8", errors="replace")
