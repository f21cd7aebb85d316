"""`git_hooks`: the named hooks exist and are executable where git looks for them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ce_agent.contracts import Status
from ce_agent_repo_health.git_hooks import GitHooksCheck

Git = Callable[..., str]


def install(directory: Path, *hooks: str, mode: int = 0o755) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for hook in hooks:
        (directory / hook).write_text("#!/bin/sh\nexit 0\n")
        (directory / hook).chmod(mode)


def default_dir_both(repo: Path, git: Git) -> tuple[Path, str]:
    install(repo / ".git" / "hooks", "pre-commit", "pre-push")
    return repo, ".git/hooks"


def default_dir_one_missing(repo: Path, git: Git) -> tuple[Path, str]:
    install(repo / ".git" / "hooks", "pre-commit")
    return repo, ".git/hooks"


def default_dir_not_executable(repo: Path, git: Git) -> tuple[Path, str]:
    install(repo / ".git" / "hooks", "pre-push")
    install(repo / ".git" / "hooks", "pre-commit", mode=0o644)
    return repo, ".git/hooks"


def samples_only(repo: Path, git: Git) -> tuple[Path, str]:
    # What `git init` leaves: pre-commit.sample and friends, none of which git runs.
    return repo, ".git/hooks"


def relative_hooks_path(repo: Path, git: Git) -> tuple[Path, str]:
    git(repo, "config", "core.hooksPath", ".githooks")
    install(repo / ".githooks", "pre-commit", "pre-push")
    return repo, ".githooks"


def relative_hooks_path_from_subdirectory(repo: Path, git: Git) -> tuple[Path, str]:
    relative_hooks_path(repo, git)
    (repo / "src" / "deep").mkdir(parents=True)
    return repo / "src" / "deep", ".githooks"


def hooks_path_ignores_git_hooks(repo: Path, git: Git) -> tuple[Path, str]:
    install(repo / ".git" / "hooks", "pre-commit", "pre-push")
    git(repo, "config", "core.hooksPath", ".githooks")
    install(repo / ".githooks", "pre-commit")
    return repo, ".githooks"


def absolute_hooks_path(repo: Path, git: Git) -> tuple[Path, str]:
    shared = repo.parent / "shared-hooks"
    git(repo, "config", "core.hooksPath", str(shared))
    install(shared, "pre-commit", "pre-push")
    return repo, str(shared)


def linked_worktree(repo: Path, git: Git) -> tuple[Path, str]:
    install(repo / ".git" / "hooks", "pre-commit", "pre-push")
    git(repo, "worktree", "add", "-q", str(repo.parent / "wt"))
    return repo.parent / "wt", ".git/hooks"


@pytest.mark.parametrize(
    ("arrange", "status", "summary"),
    [
        pytest.param(default_dir_both, Status.OK, "2/2 hooks installed in", id="installed"),
        pytest.param(default_dir_one_missing, Status.CRITICAL, ": missing: pre-push", id="one-missing"),
        pytest.param(samples_only, Status.CRITICAL, ": missing: pre-commit, pre-push", id="only-samples"),
        pytest.param(default_dir_not_executable, Status.CRITICAL, ": not executable: pre-commit", id="not-executable"),
        pytest.param(relative_hooks_path, Status.OK, "2/2 hooks installed in", id="core-hookspath-relative"),
        pytest.param(
            relative_hooks_path_from_subdirectory, Status.OK, "2/2 hooks installed in", id="hookspath-from-subdir"
        ),
        pytest.param(hooks_path_ignores_git_hooks, Status.CRITICAL, ": missing: pre-push", id="hookspath-wins"),
        pytest.param(absolute_hooks_path, Status.OK, "2/2 hooks installed in", id="core-hookspath-absolute"),
        pytest.param(linked_worktree, Status.OK, "2/2 hooks installed in", id="linked-worktree-uses-common-hooks"),
    ],
)
def test_hooks_where_git_looks(repo, git, run_check, arrange, status, summary) -> None:
    path, hooks_dir = arrange(repo, git)

    result = run_check(GitHooksCheck, path=str(path), hooks=["pre-commit", "pre-push"])

    assert result.status is status, result.summary
    assert summary in result.summary
    expected_dir = Path(hooks_dir) if Path(hooks_dir).is_absolute() else repo / hooks_dir
    assert str(expected_dir) in result.summary


def test_metrics_count_installed_and_missing(repo, run_check) -> None:
    install(repo / ".git" / "hooks", "pre-commit")

    result = run_check(GitHooksCheck, path=str(repo), hooks=["pre-commit", "pre-push", "commit-msg"])

    assert {m.name: m.value for m in result.metrics} == {"git_hooks_installed": 1, "git_hooks_missing": 2}


def test_a_name_git_never_runs_is_pointed_out(repo, run_check) -> None:
    install(repo / ".git" / "hooks", "pre-comit")

    result = run_check(GitHooksCheck, path=str(repo), hooks=["pre-comit"])

    assert result.status is Status.OK
    assert "(pre-comit: not a hook git runs)" in result.summary


@pytest.mark.parametrize(
    ("make_path", "summary"),
    [
        pytest.param(lambda tmp: tmp / "nowhere", "no such directory", id="missing"),
        pytest.param(lambda tmp: tmp, "not a git repository", id="not-a-repository"),
    ],
)
def test_no_repository_is_critical(run_check, tmp_path, make_path, summary) -> None:
    result = run_check(GitHooksCheck, path=str(make_path(tmp_path)), hooks=["pre-commit"])

    assert result.status is Status.CRITICAL
    assert summary in result.summary


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({"path": "/srv"}, "missing required option 'hooks'", id="hooks-required"),
        pytest.param({"path": "/srv", "hooks": []}, "length >= 1", id="hooks-not-empty"),
        pytest.param({"hooks": ["pre-commit"]}, "missing required option 'path'", id="path-required"),
    ],
)
def test_invalid_options(option_errors, raw, error) -> None:
    assert error in option_errors(GitHooksCheck, **raw)[0]
