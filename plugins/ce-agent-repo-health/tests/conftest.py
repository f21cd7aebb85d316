"""Fixtures for the repository-health checks: real git repositories in tmp_path, and running a check."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ce_agent.contracts import Check, Result, TaskContext
from ce_agent.options import convert_options


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """git sees only a config of the test's own: no user, system or hook-run settings leak in."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    config = tmp_path / "gitconfig"
    config.write_text(
        "[user]\n\tname = Test\n\temail = test@example.com\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_CEILING_DIRECTORIES"):
        monkeypatch.delenv(name, raising=False)
    # tmp_path may sit inside some repository: stop git from walking up out of the test's tree.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


@pytest.fixture
def git() -> Callable[..., str]:
    """Run git in a directory: git(cwd, "commit", "-m", "x") -> stdout; fails the test when git fails."""

    def run(cwd: Path, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout

    return run


@pytest.fixture
def repo(tmp_path: Path, git: Callable[..., str]) -> Path:
    """A work tree on branch main with one commit holding README.md."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "README.md").write_text("hello\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "first")
    return path


def _option_errors(cls: type[Check], **raw: Any) -> list[str]:
    options, errors = convert_options(cls.Options, raw)
    assert options is None, "expected the options to be rejected"
    return [e.message for e in errors]


def _run_check(cls: type[Check], timeout: float = 10.0, **raw: Any) -> Result:
    options, errors = convert_options(cls.Options, raw)
    assert not errors, errors
    return cls(options, TaskContext(task="test", host="localhost", timeout=timeout)).run()


@pytest.fixture
def run_check() -> Callable[..., Result]:
    """Validate options as a playbook would, then run the check: run_check(Cls, timeout=10, **options)."""
    return _run_check


@pytest.fixture
def option_errors() -> Callable[..., list[str]]:
    """The messages of options the model rejects: option_errors(Cls, **options)."""
    return _option_errors


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], Path]:
    """Put a shell script named NAME first on PATH: fake_bin("git", "sleep 30")."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")

    def make(name: str, script: str) -> Path:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
        return path

    return make
