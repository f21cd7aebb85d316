"""The `version_consistency` check: the version string found in several files is the same everywhere."""

from __future__ import annotations

import os
import re
from typing import Annotated

import msgspec

from ce_agent.contracts import Check, Metric, Result, Status


class VersionSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where one copy of the version lives: a file and a regex whose one group captures it."""

    path: Annotated[str, msgspec.Meta(description="The file (relative paths are relative to `root`).")]
    pattern: Annotated[
        str,
        msgspec.Meta(description="A regex with exactly one group, the version; ^ and $ match at each line."),
    ]

    def __post_init__(self) -> None:
        # Checked here so a bad pattern is an option error at load time, not an alert at 3 a.m.
        try:
            groups = re.compile(self.pattern).groups
        except re.error as exc:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {exc}") from None
        if groups != 1:
            raise ValueError(f"pattern {self.pattern!r} must have exactly one group (it has {groups})")


class VersionConsistencyCheck(Check):
    """The version captured from each file by its regex is identical across all the files."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        files: Annotated[
            list[VersionSource],
            msgspec.Meta(min_length=2, description="Two or more {path, pattern}: where the version is written."),
        ]
        root: Annotated[str, msgspec.Meta(description="Directory relative paths start from.")] = "."

    EXAMPLES = """\
- name: One version everywhere
  version_consistency:
    root: /srv/app
    files:
      - {path: pyproject.toml, pattern: '^version = "([^"]+)"'}
      - {path: src/app/__init__.py, pattern: '^__version__ = "([^"]+)"'}
      - {path: CHANGELOG.md, pattern: '^## \\[?v?(\\d+\\.\\d+\\.\\d+)'}
"""

    def run(self) -> Result:
        opts = self.options
        found: dict[str, str] = {}
        problems: list[str] = []
        for index, source in enumerate(opts.files):
            name = source.path
            if sum(f.path == name for f in opts.files) > 1:
                name = f"{name}#{index + 1}"
            try:
                with open(os.path.join(opts.root, source.path), encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError as exc:
                problems.append(f"{name}: {exc.strerror or exc}")
                continue
            match = re.search(source.pattern, text, re.MULTILINE)
            if match is None or match.group(1) is None:
                problems.append(f"{name}: no match for {source.pattern!r}")
                continue
            found[name] = match.group(1).strip()

        by_version: dict[str, list[str]] = {}
        for name, version in found.items():
            by_version.setdefault(version, []).append(name)
        metrics = [
            Metric("version_consistency_distinct_versions", float(len(by_version)), "", {}, "1", min=0),
            Metric("version_consistency_unreadable_files", float(len(problems)), "", {}, min=0),
        ]
        listing = " vs ".join(f"{v} ({', '.join(names)})" for v, names in by_version.items())
        if len(by_version) > 1:
            problems.insert(0, f"versions differ: {listing}")
        if problems:
            return Result(Status.CRITICAL, "; ".join(problems), metrics)
        return Result(Status.OK, f"version {listing}" if found else "no versions found", metrics)
