"""The `file` check on real files: existence, type, age, size, writability and content."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ce_agent.checks.file import CONTAINS_LIMIT, FileCheck, format_size, parse_size
from ce_agent.contracts import Check, Status, TaskContext
from ce_agent.options import convert_options

MakeCheck = Callable[..., Check]
HOUR = 3600.0


def age(path: Path, seconds: float) -> Path:
    when = time.time() - seconds
    os.utime(path, (when, when))
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A 2000-byte text file modified two hours ago."""
    path = tmp_path / "data.txt"
    path.write_text("env = production\n" + "x" * (2000 - 17))
    return age(path, 2 * HOUR)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        pytest.param(0, 0, id="int"),
        pytest.param(1234, 1234, id="bytes"),
        pytest.param("1234", 1234, id="digits"),
        pytest.param("512B", 512, id="B"),
        pytest.param("10k", 10_000, id="k"),
        pytest.param("10kB", 10_000, id="kB"),
        pytest.param("10MB", 10_000_000, id="MB is powers of 1000"),
        pytest.param("10mb", 10_000_000, id="case does not matter"),
        pytest.param("2G", 2_000_000_000, id="G"),
        pytest.param("1TB", 10**12, id="TB"),
        pytest.param("1KiB", 1024, id="KiB"),
        pytest.param("1.5MiB", 1_572_864, id="decimal MiB"),
        pytest.param("1GiB", 2**30, id="GiB is powers of 1024"),
        pytest.param(" 3 TiB ", 3 * 2**40, id="spaces"),
    ],
)
def test_parse_size(value: int | str, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("MB", id="no number"),
        pytest.param("10 parsecs", id="unknown unit"),
        pytest.param("-5", id="negative text"),
        pytest.param(-5, id="negative int"),
        pytest.param("1,5MB", id="comma"),
        pytest.param(True, id="bool"),
    ],
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size|cannot be negative"):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        pytest.param(0, "0 B", id="zero"),
        pytest.param(1023, "1023 B", id="bytes"),
        pytest.param(1536, "1.5 KiB", id="KiB"),
        pytest.param(5 * 2**30, "5.0 GiB", id="GiB"),
        pytest.param(2**50, "1024.0 TiB", id="TiB is the largest"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_ok_summary_and_metrics(make_check: MakeCheck, data: Path) -> None:
    result = make_check(FileCheck, {"path": str(data)}).run()
    assert (result.status, result.summary) == (Status.OK, f"{data}: file, 2.0 KiB, modified 2h ago")
    file_age, size = result.metrics
    assert (file_age.name, file_age.unit, file_age.labels) == ("file_age_seconds", "s", {"path": str(data)})
    assert 2 * HOUR <= file_age.value < 2 * HOUR + 60
    assert (size.name, size.value, size.unit, size.crit) == ("file_size_bytes", 2000, "B", None)


@pytest.mark.parametrize(
    ("options", "status", "problem"),
    [
        pytest.param({"max_age": "3h"}, Status.OK, "", id="younger than max_age"),
        pytest.param({"max_age": "1h"}, Status.CRITICAL, "older than 1h", id="older than max_age"),
        pytest.param({"max_age": 60}, Status.CRITICAL, "older than 1m", id="max_age in seconds"),
        pytest.param({"min_size": 2000, "max_size": 2000}, Status.OK, "", id="exact size bounds are inclusive"),
        pytest.param({"min_size": "2kB"}, Status.OK, "", id="2kB is 2000 bytes"),
        pytest.param({"min_size": "2KiB"}, Status.CRITICAL, "smaller than 2KiB", id="2KiB is 2048 bytes"),
        pytest.param({"min_size": 2001}, Status.CRITICAL, "smaller than 2001 B", id="min_size in bytes"),
        pytest.param({"max_size": "1kB"}, Status.CRITICAL, "larger than 1kB", id="larger than max_size"),
        pytest.param({"type": "file"}, Status.OK, "", id="is a file"),
        pytest.param({"type": "any"}, Status.OK, "", id="any type"),
        pytest.param({"type": "directory"}, Status.CRITICAL, "is a file, expected a directory", id="not a directory"),
        pytest.param({"contains": "^env = production$"}, Status.OK, "", id="regex matches a line"),
        pytest.param({"contains": "^env = staging$"}, Status.CRITICAL, "no match for /^env = staging$/", id="no match"),
        pytest.param({"contains": "x{100}"}, Status.OK, "", id="regex anywhere"),
        pytest.param({"writable": True}, Status.OK, "", id="writable"),
        pytest.param(
            {"max_age": "1h", "max_size": 10, "contains": "nope"}, Status.CRITICAL,
            "older than 1h; larger than 10 B; no match for /nope/", id="every problem is listed",
        ),
    ],
)
def test_file_conditions(make_check: MakeCheck, data: Path, options: dict, status: Status, problem: str) -> None:
    result = make_check(FileCheck, {"path": str(data), **options}).run()
    assert result.status is status, result.summary
    if problem:
        assert result.summary == f"{data}: file, 2.0 KiB, modified 2h ago; {problem}"
    else:
        assert result.summary == f"{data}: file, 2.0 KiB, modified 2h ago"


def test_size_thresholds_go_on_the_metric(make_check: MakeCheck, data: Path) -> None:
    options = {"path": str(data), "min_size": "1kB", "max_size": "1KiB", "max_age": "1d"}
    result = make_check(FileCheck, options).run()
    crits = [(x.name, x.crit) for x in result.metrics]
    assert crits == [("file_age_seconds", "86400"), ("file_size_bytes", "1000:1024")]


@pytest.mark.parametrize(
    ("relative", "summary_end"),
    [
        pytest.param("missing.txt", "missing.txt: no such file or directory", id="missing"),
        pytest.param("nodir/missing.txt", "nodir/missing.txt: no such file or directory", id="missing directory"),
        pytest.param(
            "data.txt/inside", "data.txt/inside: no such file or directory (a parent is not a directory)",
            id="a file as a directory",
        ),
        pytest.param("dangling", "dangling: no such file or directory", id="dangling symlink"),
    ],
)
def test_missing_is_critical(make_check: MakeCheck, data: Path, relative: str, summary_end: str) -> None:
    (data.parent / "dangling").symlink_to(data.parent / "gone")
    result = make_check(FileCheck, {"path": str(data.parent / relative)}).run()
    assert (result.status, result.summary) == (Status.CRITICAL, f"{data.parent}/{summary_end}")
    assert result.metrics == []


def test_directory(make_check: MakeCheck, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    assert make_check(FileCheck, {"path": str(folder), "type": "directory"}).run().status is Status.OK
    result = make_check(FileCheck, {"path": str(folder), "type": "file"}).run()
    assert (result.status, result.summary.split("; ")[1:]) == (Status.CRITICAL, ["is a directory, expected a file"])
    result = make_check(FileCheck, {"path": str(folder), "contains": "x"}).run()
    assert (result.status, result.summary.split("; ")[1:]) == (
        Status.UNKNOWN,
        ["is a directory, its content is not searched"],
    )


def test_symlink_is_followed(make_check: MakeCheck, data: Path) -> None:
    link = data.parent / "link"
    link.symlink_to(data)
    result = make_check(FileCheck, {"path": str(link), "type": "file", "min_size": 2000}).run()
    assert result.status is Status.OK


def test_fifo_content_is_not_read(make_check: MakeCheck, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    result = make_check(FileCheck, {"path": str(fifo), "contains": "x"}).run()
    assert result.status is Status.UNKNOWN
    assert result.summary.endswith("; is a special file, its content is not searched")
    assert time.monotonic() - started < 2


def test_contains_reads_only_the_first_mebibyte(make_check: MakeCheck, tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    big.write_bytes(b"head\n" + b"." * CONTAINS_LIMIT + b"\nneedle\n")
    assert make_check(FileCheck, {"path": str(big), "contains": "^head$"}).run().status is Status.OK
    result = make_check(FileCheck, {"path": str(big), "contains": "needle"}).run()
    assert result.status is Status.CRITICAL
    assert result.summary.endswith("; no match for /needle/")


def test_contains_tolerates_binary_content(make_check: MakeCheck, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\xff\xfe\x00\x01 MAGIC \x80")
    assert make_check(FileCheck, {"path": str(blob), "contains": "MAGIC"}).run().status is Status.OK


def test_future_mtime_is_not_old(make_check: MakeCheck, data: Path) -> None:
    age(data, -HOUR)
    result = make_check(FileCheck, {"path": str(data), "max_age": 60}).run()
    assert (result.status, result.summary) == (Status.OK, f"{data}: file, 2.0 KiB, modified 0s ago")
    assert result.metrics[0].value < 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({}, "missing required option 'path'", id="path is required"),
        pytest.param({"path": "/x", "type": "socket"}, "option 'type'", id="unknown type"),
        pytest.param({"path": "/x", "max_age": "soon"}, "option 'max_age'", id="not a duration"),
        pytest.param({"path": "/x", "size": 1}, "unknown option 'size'", id="unknown option"),
        # found when the playbook is loaded (`ce-agent validate`), not when the check runs
        pytest.param({"path": ""}, "path: must not be empty", id="empty path"),
        pytest.param({"path": "/x", "max_size": "10 parsecs"},
                     "max_size: expected a size such as 512, 10MB or 1GiB, got '10 parsecs'", id="not a size"),
        pytest.param({"path": "/x", "min_size": -1}, "min_size: a size cannot be negative, got -1",
                     id="negative size"),
        pytest.param({"path": "/x", "min_size": "2MB", "max_size": "1MiB"}, "min_size: 2MB is above max_size 1MiB",
                     id="min_size above max_size"),
        pytest.param({"path": "/x", "contains": "(("},
                     "contains: not a valid regular expression: missing ), unterminated subpattern at position 1",
                     id="invalid regex"),
        pytest.param({"path": "/x", "type": "directory", "contains": "x"},
                     "contains: a directory has no content to search (type: directory)", id="contains on a directory"),
    ],
)  # fmt: skip
def test_option_errors(raw: dict, message: str) -> None:
    options, errors = convert_options(FileCheck.Options, raw)
    assert options is None
    assert len(errors) == 1 and message in errors[0].message, errors


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"min_size": "1MiB", "max_size": "1MiB"}, id="equal size bounds"),
        pytest.param({"min_size": "1MB", "max_size": "1MiB"}, id="1MB is below 1MiB"),
        pytest.param({"contains": r"^\+PONG$", "type": "file"}, id="a regex on a file"),
        pytest.param({"type": "any", "contains": "x"}, id="contains on any type"),
    ],
)
def test_option_combinations_that_are_fine(raw: dict) -> None:
    options, errors = convert_options(FileCheck.Options, {"path": "/x", **raw})
    assert errors == [] and options is not None


# Permissions do not bind root: as root, the check runs in a forked child that became the user nobody
# (forked, not executed: the interpreter may live where nobody cannot read).
NOBODY = 65534


def run_unprivileged(options: dict) -> tuple[str, str]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = FileCheck(FileCheck.Options(**options), TaskContext("t", "h")).run()
            os.write(write_end, json.dumps([result.status.name, result.summary]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    status, summary = json.loads(output)
    return status, summary


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: runs the check as nobody")
def test_not_writable_as_nobody() -> None:
    # /etc/passwd: root's, mode 0644, on every Debian
    assert run_unprivileged({"path": "/etc/passwd"})[0] == "OK"
    status, summary = run_unprivileged({"path": "/etc/passwd", "writable": True})
    assert (status, summary.split("; ")[1:]) == ("CRITICAL", ["not writable"])


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: runs the check as nobody")
def test_unreadable_content_as_nobody() -> None:
    # /etc/shadow: root's, mode 0640 (or stricter), on every Debian
    status, summary = run_unprivileged({"path": "/etc/shadow", "contains": "root"})
    assert (status, summary.split("; ")[1:]) == ("UNKNOWN", ["cannot read: Permission denied"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes and reads whatever the mode says")
def test_not_writable_nor_readable(make_check: MakeCheck, data: Path) -> None:
    data.chmod(0o444)
    result = make_check(FileCheck, {"path": str(data), "writable": True}).run()
    assert (result.status, result.summary.split("; ")[1:]) == (Status.CRITICAL, ["not writable"])
    data.chmod(0o000)
    result = make_check(FileCheck, {"path": str(data), "contains": "x"}).run()
    assert (result.status, result.summary.split("; ")[1:]) == (Status.UNKNOWN, ["cannot read: Permission denied"])
