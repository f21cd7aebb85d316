"""The `file` check: a path exists, is of the right type, fresh, sized, writable and has the right content."""

from __future__ import annotations

import os
import re
import stat
import time
from typing import Annotated, Literal

import msgspec

from ce_agent.contracts import Check, Metric, Result, Status, worst
from ce_agent.durations import format_duration
from ce_agent.options import Duration

#: at most this much of a file is read for `contains`
CONTAINS_LIMIT = 1 << 20

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str) -> int:
    """Bytes in `value`: a number, or `10MB` (10^6), `1GiB` (2^30), `512k`; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512, 10MB or 1GiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value!r}")
        return value
    match = _SIZE.match(value)
    unit = match[2].lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 512, 10MB or 1GiB, got {value!r}")
    return int(float(match[1]) * _SIZE_UNITS[unit])


def format_size(size: float) -> str:
    """A short human size in binary units: 512 B, 1.5 KiB, 20.0 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class FileCheck(Check):
    """A file or directory: exists, type, age, size, writable by the agent, content matching a regex."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        path: Annotated[str, msgspec.Meta(description="The file or directory; CRITICAL when it is missing.")]
        type: Annotated[
            Literal["file", "directory", "any"],
            msgspec.Meta(description="CRITICAL when the path is not of this type."),
        ] = "any"
        max_age: Annotated[
            Duration | None, msgspec.Meta(description="CRITICAL when last modified longer ago than this.")
        ] = None
        min_size: Annotated[
            int | str | None,
            msgspec.Meta(description="CRITICAL when smaller: bytes, or 10kB/10MB (powers of 1000), 1KiB/1GiB (1024)."),
        ] = None
        max_size: Annotated[
            int | str | None,
            msgspec.Meta(description="CRITICAL when larger: bytes, or 10kB/10MB (powers of 1000), 1KiB/1GiB (1024)."),
        ] = None
        writable: Annotated[
            bool, msgspec.Meta(description="CRITICAL when the agent cannot write to it (false: not checked).")
        ] = False
        contains: Annotated[
            str | None,
            msgspec.Meta(description="CRITICAL unless this regex matches the content (the first MiB is read)."),
        ] = None

        def __post_init__(self) -> None:
            # checked here, not in run(): `ce-agent validate` then reports them at the task's line
            if not self.path:
                raise ValueError("path: must not be empty")
            min_size = _size_option("min_size", self.min_size)
            max_size = _size_option("max_size", self.max_size)
            if min_size is not None and max_size is not None and min_size > max_size:
                raise ValueError(f"min_size: {self.min_size} is above max_size {self.max_size}")
            if self.contains is not None:
                if self.type == "directory":
                    raise ValueError("contains: a directory has no content to search (type: directory)")
                try:
                    re.compile(self.contains, re.MULTILINE)
                except re.error as exc:
                    raise ValueError(f"contains: not a valid regular expression: {exc}") from None

    EXAMPLES = """\
- name: Nightly backup is fresh
  file: {path: /var/backups/db.dump, type: file, max_age: 26h, min_size: 10MB}
- name: Config says production
  file: {path: /etc/myapp/config.ini, contains: "^env *= *production$"}
"""

    def run(self) -> Result:
        opts = self.options
        # the options were checked when loaded (Options.__post_init__): these cannot fail
        min_size = parse_size(opts.min_size) if opts.min_size is not None else None
        max_size = parse_size(opts.max_size) if opts.max_size is not None else None
        pattern = re.compile(opts.contains, re.MULTILINE) if opts.contains is not None else None
        path = opts.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return Result(Status.CRITICAL, f"{path}: no such file or directory")
        except NotADirectoryError:
            return Result(Status.CRITICAL, f"{path}: no such file or directory (a parent is not a directory)")
        except OSError as exc:
            return Result(Status.UNKNOWN, f"{path}: cannot stat: {exc.strerror or exc}")

        kind = "directory" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "special file"
        age = time.time() - st.st_mtime
        problems: list[tuple[Status, str]] = []
        wrong_type = opts.type != "any" and kind != opts.type
        if wrong_type:
            problems.append((Status.CRITICAL, f"is a {kind}, expected a {opts.type}"))
        if opts.max_age is not None and age > opts.max_age:
            problems.append((Status.CRITICAL, f"older than {format_duration(opts.max_age)}"))
        if min_size is not None and st.st_size < min_size:
            problems.append((Status.CRITICAL, f"smaller than {_as_given(opts.min_size)}"))
        if max_size is not None and st.st_size > max_size:
            problems.append((Status.CRITICAL, f"larger than {_as_given(opts.max_size)}"))
        if opts.writable and not os.access(path, os.W_OK):
            problems.append((Status.CRITICAL, "not writable"))
        if pattern is not None and not wrong_type:
            problems += _content_problems(path, kind, pattern)

        status = worst(s for s, _ in problems)
        facts = f"{kind}, {format_size(st.st_size)}, modified {format_duration(max(age, 0))} ago"
        summary = f"{path}: {facts}" + "".join(f"; {message}" for _, message in problems)
        labels = {"path": path}
        age_crit = _num(opts.max_age) if opts.max_age is not None else None
        size_crit = None
        if min_size is not None or max_size is not None:
            size_crit = f"{min_size or 0}:{max_size if max_size is not None else ''}"
        return Result(
            status,
            summary,
            [
                Metric("file_age_seconds", age, "s", labels, None, age_crit),
                Metric("file_size_bytes", float(st.st_size), "B", labels, None, size_crit, 0),
            ],
        )


def _content_problems(path: str, kind: str, pattern: re.Pattern[str]) -> list[tuple[Status, str]]:
    if kind != "file":
        # reading a FIFO or a device could block or never end
        return [(Status.UNKNOWN, f"is a {kind}, its content is not searched")]
    try:
        with open(path, "rb") as f:
            data = f.read(CONTAINS_LIMIT)
    except OSError as exc:
        return [(Status.UNKNOWN, f"cannot read: {exc.strerror or exc}")]
    if pattern.search(data.decode("utf-8", errors="replace")) is None:
        return [(Status.CRITICAL, f"no match for /{pattern.pattern}/")]
    return []


def _size_option(option: str, given: int | str | None) -> int | None:
    try:
        return None if given is None else parse_size(given)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


def _as_given(size: int | str) -> str:
    return f"{size} B" if isinstance(size, int) else size.strip()


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
