"""Misbehaving check plugins: one that ends its process, one that recurses, one that fails every other run."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import msgspec

from ce_agent.contracts import Check, Result, Status


class ExitingCheck(Check):
    """Ends the process it runs in: `os._exit(code)`, or a segmentation fault (a crash in C code)."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        code: int = 3
        segfault: bool = False

    def run(self) -> Result:
        if self.options.segfault:
            ctypes.string_at(0)  # reads address 0: SIGSEGV, which no Python code can catch
        os._exit(self.options.code)


class RecursingCheck(Check):
    """Recurses without end (RecursionError), through a helper as a real bug would."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        depth: int = 0

    def run(self) -> Result:
        return self._walk(0)

    def _walk(self, depth: int) -> Result:
        return self._walk(depth + 1)


class FlakyCheck(Check):
    """Raises on every other run (counted in a file, so it holds across runs and processes), else OK."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        counter: str

    def run(self) -> Result:
        path = Path(self.options.counter)
        runs = int(path.read_text() or 0) + 1 if path.exists() else 1
        path.write_text(str(runs))
        if runs % 2 == 0:
            raise ConnectionError(f"run {runs}: the service dropped the connection")
        return Result(Status.OK, f"run {runs}: fine")


class SleepyCheck(Check):
    """Sleeps, then is OK: with a timeout shorter than its sleep, a plugin that hangs."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        seconds: float = 3600.0

    def run(self) -> Result:
        time.sleep(self.options.seconds)
        return Result(Status.OK, "woke up")
