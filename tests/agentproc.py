"""A real `ce-agent agent` process for tests: started on a free port, its JSON log lines collected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


class AgentProcess:
    """`python -m ce_agent agent ... --listen 127.0.0.1:0`; the port comes from its "serving" log line."""

    def __init__(self, cwd: Path, args: list[str], env: dict[str, str] | None = None,
                 pythonpath: list[Path] | None = None) -> None:
        full_env = {**os.environ, "CE_AGENT_STATE_DIR": str(cwd / "state"), **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath or [])
        if "NOTIFY_SOCKET" not in (env or {}):  # a test run under systemd must not talk to the real manager
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                full_env.pop(name, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ce_agent", "agent", *args],
            cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.port = 0

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (other lines, if any, are skipped)."""
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; stdout: {self.lines[-20:]}; stderr: {self.errors[-20:]}")
            if self.proc.poll() is not None and not value:
                time.sleep(0.2)  # let the readers catch the last lines
                value = predicate()
                if value:
                    return value
                raise AssertionError(f"the agent exited ({self.proc.returncode}) before {what}; "
                                     f"stdout: {self.lines[-20:]}; stderr: {self.errors[-20:]}")
            with self._changed:
                self._changed.wait(0.1)

    def log(self, text: str) -> dict[str, Any] | None:
        """The first log record whose message contains `text`."""
        return next((r for r in self.records if text in r.get("message", "")), None)

    def started(self, timeout: float = 20.0) -> AgentProcess:
        record = self.wait_for(lambda: self.log("serving /metrics"), timeout, "the agent to listen")
        self.port = int(record["message"].rsplit(":", 1)[1])
        return self

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str, dict[str, str]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as reply:
                return reply.status, reply.read().decode(), dict(reply.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample of /metrics (None when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        _code, text, _ = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        for reader in self._readers:
            reader.join(5)
