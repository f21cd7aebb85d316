"""The `directory_size` collector: total bytes and number of files below a directory, within the timeout."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Annotated

import msgspec

from ce_agent.contracts import Collector, Metric, TaskContext

log = logging.getLogger(__name__)

#: the walk stops at this fraction of the task's timeout, leaving time to report what it has
DEADLINE_FRACTION = 0.8


class DirectorySizeCollector(Collector):
    """Total size (apparent bytes of regular files) and file count below a directory."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        path: Annotated[str, msgspec.Meta(description="The directory to measure.")]
        max_depth: Annotated[
            int | None,
            msgspec.Meta(
                description="How many directory levels below path to descend (0: only the files directly"
                " in path); unset: no limit."
            ),
        ] = None
        follow_symlinks: Annotated[
            bool,
            msgspec.Meta(description="Count what symbolic links point to; false: symbolic links are not counted."),
        ] = False

        def __post_init__(self) -> None:
            if self.max_depth is not None and self.max_depth < 0:
                raise ValueError(f"max_depth must be 0 or more, got {self.max_depth}")

    EXAMPLES = """\
- name: Size of the backups
  directory_size: {path: /var/backups}
- name: Top level of the upload spool
  directory_size: {path: /srv/spool, max_depth: 0}
"""

    def __init__(self, options: Options, context: TaskContext) -> None:
        super().__init__(options, context)
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def collect(self) -> Iterator[Metric]:
        opts = self.options
        if not os.path.isdir(opts.path):
            raise NotADirectoryError(f"{opts.path}: not a directory (or does not exist)")
        deadline = time.monotonic() + self.context.timeout * DEADLINE_FRACTION
        walk = _Walk(opts.follow_symlinks, opts.max_depth, deadline, self._cancelled)
        walk.run(opts.path)
        if not walk.complete:
            log.warning(
                "directory_size %s: stopped after %.1fs with the walk unfinished; the values are a lower bound",
                opts.path,
                self.context.timeout * DEADLINE_FRACTION,
            )
        if walk.errors:
            log.warning(
                "directory_size %s: %d entries could not be read, e.g. %s", opts.path, walk.errors, walk.example
            )
        labels = {"path": opts.path}
        yield Metric("directory_size_bytes", float(walk.size), "B", labels, min=0)
        yield Metric("directory_files", float(walk.files), "", labels, min=0)
        # 0 when the walk hit the deadline: the two values above are then lower bounds
        yield Metric("directory_size_complete", 1.0 if walk.complete else 0.0, "", labels, min=0, max=1)


class _Walk:
    """One walk of a tree: regular files are counted once each (hard links too), loops are not followed."""

    def __init__(self, follow: bool, max_depth: int | None, deadline: float, cancelled: threading.Event) -> None:
        self.follow = follow
        self.max_depth = max_depth
        self.deadline = deadline
        self.cancelled = cancelled
        self.size = 0
        self.files = 0
        self.errors = 0
        self.example = ""
        self.complete = True
        self._seen_files: set[tuple[int, int]] = set()
        self._seen_dirs: set[tuple[int, int]] = set()

    def run(self, root: str) -> None:
        root_stat = os.stat(root)
        self._seen_dirs.add((root_stat.st_dev, root_stat.st_ino))
        pending: list[tuple[str, int]] = [(root, 0)]
        while pending:
            if self._out_of_time():
                return
            directory, depth = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    for number, entry in enumerate(entries, 1):
                        # a directory may hold millions of entries: look at the clock inside it too
                        if number % 1024 == 0 and self._out_of_time():
                            return
                        self._visit(entry, depth, pending)
            except OSError as exc:
                self._error(exc)

    def _out_of_time(self) -> bool:
        if self.cancelled.is_set() or time.monotonic() >= self.deadline:
            self.complete = False
        return not self.complete

    def _visit(self, entry: os.DirEntry[str], depth: int, pending: list[tuple[str, int]]) -> None:
        try:
            if entry.is_dir(follow_symlinks=self.follow):
                if self.max_depth is not None and depth >= self.max_depth:
                    return
                st = entry.stat(follow_symlinks=self.follow)
                key = (st.st_dev, st.st_ino)
                if key not in self._seen_dirs:  # a symlink back up the tree would loop forever
                    self._seen_dirs.add(key)
                    pending.append((entry.path, depth + 1))
            elif entry.is_file(follow_symlinks=self.follow):
                st = entry.stat(follow_symlinks=self.follow)
                # a file reached twice (hard links; symlinks when following them) is counted once
                if st.st_nlink > 1 or self.follow:
                    key = (st.st_dev, st.st_ino)
                    if key in self._seen_files:
                        return
                    self._seen_files.add(key)
                self.size += st.st_size
                self.files += 1
        except OSError as exc:
            self._error(exc)

    def _error(self, exc: OSError) -> None:
        self.errors += 1
        if not self.example:
            self.example = str(exc)
