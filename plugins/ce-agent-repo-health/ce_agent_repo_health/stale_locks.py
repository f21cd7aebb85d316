"""The `stale_locks` check: lock and pid files left behind, older than a limit, by processes now gone."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Annotated

import msgspec

from ce_agent.contracts import Check, Metric, Result, Status
from ce_agent.durations import format_duration
from ce_agent.options import Duration

#: a pid file starts with the pid ("1234", "1234\n", "1234 host"); anything else is judged by age alone
_PID = re.compile(rb"\A\s*(\d{1,10})(?:\s|\Z)")
#: bytes read from each lock file to find a pid
_HEAD = 64
#: stale files named in the summary; the rest are counted
_LISTED = 5


class StaleLocksCheck(Check):
    """Lock files older than `max_age` whose process (when the file holds a pid) is no longer running."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        path: Annotated[str, msgspec.Meta(description="The directory holding the lock files.")]
        patterns: Annotated[
            list[str],
            msgspec.Meta(min_length=1, description='Globs under `path` (use "**/*.lock" to recurse).'),
        ] = msgspec.field(default_factory=lambda: ["*.lock", "*.pid", "LOCK"])
        max_age: Annotated[
            Duration, msgspec.Meta(description="A lock file older than this, with no live owner, is stale.")
        ] = Duration(3600)

    EXAMPLES = """\
- name: No stale locks
  stale_locks: {path: /var/lib/app, max_age: 2h}
- name: Git lock files left by crashed commands
  stale_locks: {path: /srv/app/.git, patterns: ["*.lock", "refs/**/*.lock"], max_age: 10m}
"""

    def run(self) -> Result:
        opts = self.options
        root = Path(opts.path)
        if not root.is_dir():
            return Result(Status.UNKNOWN, f"{opts.path}: no such directory")
        now = time.time()
        files = sorted({p for pattern in opts.patterns for p in root.glob(pattern)})
        stale: list[str] = []
        checked = 0
        oldest = 0.0
        for file in files:
            try:
                info = file.stat()
                if not file.is_file():
                    continue
                with open(file, "rb") as fh:
                    head = fh.read(_HEAD)
            except OSError:
                # Gone between the listing and the look: a lock released, which is what locks do.
                continue
            checked += 1
            age = max(0.0, now - info.st_mtime)
            oldest = max(oldest, age)
            if age <= opts.max_age:
                continue
            match = _PID.match(head)
            pid = int(match.group(1)) if match else None
            if pid is not None and _running(pid):
                continue
            owner = f", pid {pid} not running" if pid is not None else ""
            stale.append(f"{file.relative_to(root)} ({format_duration(age)} old{owner})")

        labels = {"path": opts.path}
        metrics = [
            Metric("stale_locks_stale_files", float(len(stale)), "", labels, "0", min=0),
            Metric("stale_locks_files", float(checked), "", labels, min=0),
            Metric("stale_locks_oldest_age_seconds", round(oldest, 3), "s", labels, min=0),
        ]
        if stale:
            more = f" and {len(stale) - _LISTED} more" if len(stale) > _LISTED else ""
            summary = f"{len(stale)} stale lock files in {opts.path}: {', '.join(stale[:_LISTED])}{more}"
            return Result(Status.WARNING, summary, metrics, details="\n".join(stale))
        return Result(Status.OK, f"no stale lock files in {opts.path} ({checked} lock files checked)", metrics)


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        # It exists, owned by someone else.
        return True
    return True

