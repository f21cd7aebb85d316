"""Shared fixtures: run the real `ce-agent` command, and plugin packages installed with pip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.receivers import dead_port, smtp_server, webhook  # noqa: F401 - fixtures for every test

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PLUGINS = ROOT / "tests" / "fixtures" / "plugins"


@dataclass
class Ran:
    """A finished `ce-agent` process."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Agent:
    """Runs `python -m ce_agent ...` in a directory, with optional extra plugin packages on the path."""

    def __init__(self, cwd: Path, pythonpath: list[Path] | None = None) -> None:
        self.cwd = cwd
        self.pythonpath = pythonpath or []

    def write(self, name: str, text: str) -> Path:
        path = self.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Ran:
        # every test has a state directory of its own, never the user's
        full_env = {**os.environ, "CE_AGENT_STATE_DIR": str(self.cwd / "state"), **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in self.pythonpath)
        proc = subprocess.run(
            [sys.executable, "-m", "ce_agent", *args],
            cwd=self.cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
        )
        return Ran(proc.returncode, proc.stdout, proc.stderr)


def pip_install_target(target: Path, *projects: Path) -> Path:
    """A real `pip install` of plugin distributions into a folder that goes on PYTHONPATH."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    try:
        import setuptools  # noqa: F401

        cmd.append("--no-build-isolation")  # the venv's setuptools: no download per test session
    except ImportError:
        pass
    subprocess.run([*cmd, *map(str, projects)], check=True, timeout=300, capture_output=True)
    return target


@pytest.fixture(scope="session")
def test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ce-agent-testplugins (fixed, raises, hangs, constant) and ce-agent-broken, pip-installed."""
    target = tmp_path_factory.mktemp("site-testplugins")
    return pip_install_target(target, FIXTURE_PLUGINS / "ce-agent-testplugins", FIXTURE_PLUGINS / "ce-agent-broken")


@pytest.fixture
def agent(tmp_path: Path, test_plugins: Path) -> Agent:
    return Agent(tmp_path, [test_plugins])


SSHD = Path("/usr/sbin/sshd")


@pytest.fixture(scope="session")
def sshd_binary() -> Path:
    """OpenSSH's server; skipped when missing unless CE_AGENT_REQUIRE_SSHD=1 (then a failure)."""
    if not SSHD.exists():
        if os.environ.get("CE_AGENT_REQUIRE_SSHD") == "1":
            pytest.fail(f"{SSHD} is missing and CE_AGENT_REQUIRE_SSHD=1")
        pytest.skip(f"OpenSSH's server is not installed ({SSHD} is missing; set CE_AGENT_REQUIRE_SSHD=1 to fail)")
    return SSHD


@pytest.fixture(scope="session")
def alertmanager_binary() -> Path:
    """Prometheus' Alertmanager (Debian's prometheus-alertmanager); skipped when missing unless
    CE_AGENT_REQUIRE_ALERTMANAGER=1 (then a failure)."""
    import shutil

    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        if os.environ.get("CE_AGENT_REQUIRE_ALERTMANAGER") == "1":
            pytest.fail("prometheus-alertmanager is missing and CE_AGENT_REQUIRE_ALERTMANAGER=1")
        pytest.skip("Alertmanager is not installed (no prometheus-alertmanager on PATH; "
                    "set CE_AGENT_REQUIRE_ALERTMANAGER=1 to fail)")
    return Path(found)
