"""Running the short commands the checks need: bounded by the task's timeout, stoppable from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ce_agent.contracts import Check, Result, Status, TaskContext


class CommandTimeout(Exception):
    """A command ran out of the check's time and was killed."""


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def first_error_line(self) -> str:
        """The first non-blank line of stderr (else stdout): what a command says when it fails."""
        for line in (self.stderr + "\n" + self.stdout).splitlines():
            if line.strip():
                return line.strip()
        return f"exit code {self.returncode}"


class Commands:
    """The commands of one check run: all share one deadline, and `cancel()` kills the one running."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._lock = threading.Lock()
        self._running: subprocess.Popen[str] | None = None
        self._cancelled = False

    def run(self, argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None) -> Completed:
        """Run `argv` to completion; FileNotFoundError if it does not exist, CommandTimeout when out of time."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or self._cancelled:
            raise CommandTimeout(f"out of time after {self.timeout:g}s")
        with self._lock:
            # Its own session: a timeout kills whatever the command started, too.
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            self._running = proc
        try:
            stdout, stderr = proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            proc.communicate()
            raise CommandTimeout(f"{argv[0]} timed out after {self.timeout:g}s") from None
        finally:
            with self._lock:
                self._running = None
        if self._cancelled:
            raise CommandTimeout(f"{argv[0]} cancelled")
        return Completed(proc.returncode, stdout, stderr)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._running is not None:
                self._kill(self._running)

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def git_env() -> dict[str, str]:
    """The environment git runs in: English messages, no prompts, and no locks taken on the repo."""
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock while a person commits.
    return {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}


class CommandsCheck(Check):
    """A check that runs commands: they share the task's deadline, and `cancel()` kills the one running."""

    def __init__(self, options: Any, context: TaskContext) -> None:
        super().__init__(options, context)
        self._commands: Commands | None = None

    def start_commands(self) -> Commands:
        self._commands = Commands(self.context.timeout)
        return self._commands

    def cancel(self) -> None:
        if self._commands is not None:
            self._commands.cancel()


class GitCheck(CommandsCheck):
    """A check of a git repository at `options.path`: the directory, git and the deadline are handled
    here; subclasses implement `inspect(path)` with `self.git(...)`."""

    def run(self) -> Result:
        path = self.options.path
        if not os.path.isdir(path):
            return Result(Status.CRITICAL, f"{path}: no such directory")
        self.start_commands()
        try:
            return self.inspect(path)
        except FileNotFoundError:
            return Result(Status.UNKNOWN, "git is not installed (not found on PATH)")
        except CommandTimeout as exc:
            return Result(Status.UNKNOWN, f"{path}: {exc}")

    def git(self, *args: str) -> Completed:
        assert self._commands is not None
        return self._commands.run(["git", "-C", self.options.path, *args], env=git_env())

    def inspect(self, path: str) -> Result:
        raise NotImplementedError
