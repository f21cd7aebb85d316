"""The `git_repo` check: a git work tree that git accepts, whose HEAD resolves, with few uncommitted changes."""

from __future__ import annotations

import time
from typing import Annotated

import msgspec

from ce_agent.contracts import Metric, Result, Status
from ce_agent_repo_health._process import GitCheck


class GitRepoCheck(GitCheck):
    """A git work tree is accessible and its HEAD resolves; optionally, not too many uncommitted changes."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        path: Annotated[str, msgspec.Meta(description="The work tree (or any directory inside it).")]
        max_uncommitted: Annotated[
            Annotated[int, msgspec.Meta(ge=0)] | None,
            msgspec.Meta(description="WARNING when more files than this are modified, staged or untracked."),
        ] = None

    EXAMPLES = """\
- name: Deploy checkout is sane
  git_repo: {path: /srv/app, max_uncommitted: 0}
"""

    def inspect(self, path: str) -> Result:
        inside = self.git("rev-parse", "--is-inside-work-tree")
        if inside.returncode != 0:
            return Result(Status.CRITICAL, f"{path}: not a git work tree: {inside.first_error_line}")
        if inside.stdout.strip() != "true":
            return Result(Status.CRITICAL, f"{path}: not a git work tree (a bare repository or a .git directory)")
        head = self.git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        if head.returncode != 0:
            return Result(Status.CRITICAL, f"{path}: HEAD does not resolve to a commit (no commits yet?)")
        branch = self.git("symbolic-ref", "--quiet", "--short", "HEAD").stdout.strip()
        committed = self.git("log", "-1", "--format=%ct", "HEAD").stdout.strip()
        status = self.git("status", "--porcelain=v1", "-z", "--untracked-files=normal")
        if status.returncode != 0:
            return Result(Status.CRITICAL, f"{path}: git status failed: {status.first_error_line}")
        changed, untracked = _count_status(status.stdout)

        labels = {"path": path}
        limit = self.options.max_uncommitted
        uncommitted = changed + untracked
        result = Status.WARNING if limit is not None and uncommitted > limit else Status.OK
        where = f"{branch or 'detached HEAD'} {head.stdout.strip()[:12]}"
        summary = f"{path} at {where}, {changed} changed and {untracked} untracked files"
        if result is Status.WARNING:
            summary += f" (more than {limit} uncommitted)"
        metrics = [
            Metric("git_repo_uncommitted_files", float(uncommitted), "", labels, _text(limit), min=0),
            Metric("git_repo_changed_files", float(changed), "", labels, min=0),
            Metric("git_repo_untracked_files", float(untracked), "", labels, min=0),
        ]
        if committed.isdigit():
            age = max(0.0, time.time() - int(committed))
            metrics.append(Metric("git_repo_head_age_seconds", round(age, 3), "s", labels, min=0))
        return Result(result, summary, metrics)


def _text(limit: int | None) -> str | None:
    return None if limit is None else str(limit)


def _count_status(porcelain: str) -> tuple[int, int]:
    """(changed, untracked) from `git status --porcelain=v1 -z`."""
    changed = untracked = 0
    entries = iter(porcelain.split("\0"))
    for entry in entries:
        if len(entry) < 3:
            continue
        code = entry[:2]
        if code == "??":
            untracked += 1
            continue
        changed += 1
        if code[0] in "RC":
            # A rename or copy is followed by its source path as a separate entry.
            next(entries, None)
    return changed, untracked
