"""The `git_hooks` check: the named hooks exist and are executable where git looks (core.hooksPath honoured)."""

from __future__ import annotations

import os
from typing import Annotated

import msgspec

from ce_agent.contracts import Metric, Result, Status
from ce_agent_repo_health._process import GitCheck

#: the hooks git runs (githooks(5)); another name is installed fine but git never runs it
GIT_HOOKS = frozenset(
    {
        "applypatch-msg", "pre-applypatch", "post-applypatch", "pre-commit", "pre-merge-commit",
        "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase", "post-checkout", "post-merge",
        "pre-push", "pre-receive", "update", "proc-receive", "post-receive", "post-update",
        "reference-transaction", "push-to-checkout", "pre-auto-gc", "post-rewrite", "sendemail-validate",
        "fsmonitor-watchman", "p4-changelist", "p4-prepare-changelist", "p4-post-changelist", "p4-pre-submit",
        "post-index-change",
    }
)


class GitHooksCheck(GitCheck):
    """The named git hooks exist and are executable in the repository's hooks directory."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        path: Annotated[str, msgspec.Meta(description="The repository (work tree or any directory in it).")]
        hooks: Annotated[
            list[str],
            msgspec.Meta(min_length=1, description="Hook names that must be installed, e.g. [pre-commit, pre-push]."),
        ]

    EXAMPLES = """\
- name: Commit hooks installed
  git_hooks: {path: /home/dev/src/app, hooks: [pre-commit, commit-msg]}
"""

    def inspect(self, path: str) -> Result:
        # --git-path honours core.hooksPath and linked worktrees; a relative answer is relative to `path`.
        found = self.git("rev-parse", "--git-path", "hooks")
        if found.returncode != 0:
            return Result(Status.CRITICAL, f"{path}: not a git repository: {found.first_error_line}")
        hooks_dir = os.path.normpath(os.path.join(path, found.stdout.strip()))

        missing, not_executable = [], []
        for hook in self.options.hooks:
            file = os.path.join(hooks_dir, hook)
            if not os.path.isfile(file):
                missing.append(hook)
            elif not os.access(file, os.X_OK):
                # git skips such a hook (with only a hint), so it is as good as missing.
                not_executable.append(hook)
        unknown = [h for h in self.options.hooks if h not in GIT_HOOKS]

        total = len(self.options.hooks)
        installed = total - len(missing) - len(not_executable)
        labels = {"path": path}
        metrics = [
            Metric("git_hooks_installed", float(installed), "", labels, min=0, max=float(total)),
            Metric("git_hooks_missing", float(total - installed), "", labels, min=0, max=float(total)),
        ]
        problems = []
        if missing:
            problems.append(f"missing: {', '.join(missing)}")
        if not_executable:
            problems.append(f"not executable: {', '.join(not_executable)}")
        note = f" ({', '.join(unknown)}: not a hook git runs)" if unknown else ""
        if problems:
            return Result(Status.CRITICAL, f"{hooks_dir}: {'; '.join(problems)}{note}", metrics)
        return Result(Status.OK, f"{installed}/{total} hooks installed in {hooks_dir}{note}", metrics)
