"""`git_repo`: a work tree git accepts, a HEAD that resolves, and (optionally) few uncommitted files."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ce_agent.contracts import Status
from ce_agent_repo_health.git_repo import GitRepoCheck

Git = Callable[..., str]


def clean(repo: Path, git: Git) -> Path:
    return repo


def two_changed_one_untracked(repo: Path, git: Git) -> Path:
    (repo / "README.md").write_text("changed\n")
    (repo / "staged.txt").write_text("new\n")
    git(repo, "add", "staged.txt")
    (repo / "scratch.txt").write_text("untracked\n")
    return repo


def renamed(repo: Path, git: Git) -> Path:
    git(repo, "mv", "README.md", "READ ME.md")
    return repo


def subdirectory(repo: Path, git: Git) -> Path:
    (repo / "src").mkdir()
    return repo / "src"


def detached(repo: Path, git: Git) -> Path:
    git(repo, "checkout", "-q", "--detach", "HEAD")
    return repo


def no_commits(repo: Path, git: Git) -> Path:
    empty = repo.parent / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    return empty


def bare(repo: Path, git: Git) -> Path:
    git(repo.parent, "init", "-q", "--bare", "bare.git")
    return repo.parent / "bare.git"


def plain_directory(repo: Path, git: Git) -> Path:
    plain = repo.parent / "plain"
    plain.mkdir()
    return plain


def missing(repo: Path, git: Git) -> Path:
    return repo.parent / "nowhere"


@pytest.mark.parametrize(
    ("arrange", "options", "status", "summary"),
    [
        pytest.param(clean, {}, Status.OK, "at main ", id="clean-work-tree"),
        pytest.param(clean, {"max_uncommitted": 0}, Status.OK, "0 changed and 0 untracked", id="clean-within-limit"),
        pytest.param(two_changed_one_untracked, {}, Status.OK, "2 changed and 1 untracked", id="changes-no-limit"),
        pytest.param(
            two_changed_one_untracked, {"max_uncommitted": 3}, Status.OK, "2 changed and 1 untracked", id="at-limit"
        ),
        pytest.param(
            two_changed_one_untracked,
            {"max_uncommitted": 2},
            Status.WARNING,
            "(more than 2 uncommitted)",
            id="over-limit-warns",
        ),
        pytest.param(renamed, {}, Status.OK, "1 changed and 0 untracked", id="rename-is-one-change"),
        pytest.param(subdirectory, {}, Status.OK, "at main ", id="directory-inside-work-tree"),
        pytest.param(detached, {}, Status.OK, "at detached HEAD ", id="detached-head"),
        pytest.param(no_commits, {}, Status.CRITICAL, "HEAD does not resolve", id="no-commits-yet"),
        pytest.param(bare, {}, Status.CRITICAL, "not a git work tree (a bare repository", id="bare-repository"),
        pytest.param(
            plain_directory, {}, Status.CRITICAL, "not a git work tree: fatal: not a git repository", id="not-git"
        ),
        pytest.param(missing, {}, Status.CRITICAL, "no such directory", id="missing-directory"),
    ],
)
def test_status_and_summary(repo, git, run_check, arrange, options, status, summary) -> None:
    path = arrange(repo, git)

    result = run_check(GitRepoCheck, path=str(path), **options)

    assert result.status is status, result.summary
    assert summary in result.summary
    assert result.summary.startswith(str(path))


def test_metrics_count_the_changes_and_the_age_of_head(repo, git, run_check) -> None:
    two_changed_one_untracked(repo, git)

    result = run_check(GitRepoCheck, path=str(repo), max_uncommitted=5)

    metrics = {m.name: m for m in result.metrics}
    assert metrics["git_repo_uncommitted_files"].value == 3
    assert metrics["git_repo_uncommitted_files"].warn == "5"
    assert metrics["git_repo_changed_files"].value == 2
    assert metrics["git_repo_untracked_files"].value == 1
    assert 0 <= metrics["git_repo_head_age_seconds"].value < 120
    assert all(m.labels == {"path": str(repo)} for m in result.metrics)


def test_summary_names_the_commit(repo, git, run_check) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()

    assert head[:12] in run_check(GitRepoCheck, path=str(repo)).summary


def test_git_missing_from_path_is_unknown(repo, run_check, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    result = run_check(GitRepoCheck, path=str(repo))

    assert (result.status, result.summary) == (Status.UNKNOWN, "git is not installed (not found on PATH)")


def test_a_hanging_git_is_stopped_at_the_task_timeout(repo, run_check, fake_bin) -> None:
    fake_bin("git", "sleep 30")

    started = time.monotonic()
    result = run_check(GitRepoCheck, timeout=0.3, path=str(repo))

    assert time.monotonic() - started < 3
    assert result.status is Status.UNKNOWN
    assert "timed out after 0.3s" in result.summary


def test_cancel_stops_a_running_check(repo, fake_bin) -> None:
    from ce_agent.contracts import TaskContext
    from ce_agent.options import convert_options

    fake_bin("git", "sleep 30")
    options, _ = convert_options(GitRepoCheck.Options, {"path": str(repo)})
    check = GitRepoCheck(options, TaskContext(task="t", host="h", timeout=30))
    results = []
    worker = threading.Thread(target=lambda: results.append(check.run()))

    worker.start()
    time.sleep(0.3)
    check.cancel()
    worker.join(5)

    assert not worker.is_alive()
    assert results[0].status is Status.UNKNOWN


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'path'", id="path-required"),
        pytest.param({"path": "/srv", "max_uncommitted": -1}, ">= 0", id="limit-not-negative"),
        pytest.param({"path": "/srv", "max_uncomitted": 1}, "unknown option 'max_uncomitted'", id="typo"),
    ],
)
def test_invalid_options(option_errors, raw, error) -> None:
    assert error in option_errors(GitRepoCheck, **raw)[0]
