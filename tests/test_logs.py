"""Agent logging: JSON lines or text, to a stream or a rotated file, never showing a secret."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ce_agent.logs import ScrubFilter, configure_logging, parse_rotate

CANARY = "s3cr3t-CANARY-7f1d"
MASK = "****"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def scrub(text: str) -> str:
    return text.replace(CANARY, MASK)


class Opaque:
    """An extra that JSON cannot hold: it is written as str()."""

    def __str__(self) -> str:
        return f"opaque {CANARY}"


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    # configure_logging sets propagate=False: other tests' caplog must get the logger back as it was.
    logger = logging.getLogger("ce_agent")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    root_handlers = list(logging.getLogger().handlers)
    yield
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    assert logging.getLogger().handlers == root_handlers, "configure_logging touched the root logger"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def log_to_string(**kwargs) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    return configure_logging(stream=stream, scrub=scrub, **kwargs), stream


def raise_and_log(logger: logging.Logger, text: str) -> None:
    try:
        raise RuntimeError(text)
    except RuntimeError:
        logger.exception("the check crashed")


# -- JSON lines -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({}, {}, id="no-extras"),
        pytest.param({"host": "web1"}, {"host": "web1"}, id="host"),
        pytest.param(
            {"host": "web1", "check": "Root disk", "play": "base"},
            {"host": "web1", "check": "Root disk", "play": "base"},
            id="host-check-play",
        ),
        pytest.param({"host": Path("/srv/web1")}, {"host": "/srv/web1"}, id="non-serialisable-becomes-str"),
        pytest.param({"other": "ignored"}, {}, id="unknown-extra-not-shown"),
    ],
)
def test_json_line_has_the_fields_and_extras(extra: dict, expected: dict) -> None:
    logger, stream = log_to_string(fmt="json")
    logging.getLogger("ce_agent.runner").warning("disk %s is %d%% full", "/", 91, extra=extra)
    [entry] = json_lines(stream.getvalue())
    assert TIME.match(entry.pop("time"))
    assert entry == {"level": "WARNING", "logger": "ce_agent.runner", "message": "disk / is 91% full", **expected}


def test_json_exception_text() -> None:
    logger, stream = log_to_string(fmt="json")
    raise_and_log(logger, "connection reset")
    [entry] = json_lines(stream.getvalue())
    assert entry["level"] == "ERROR"
    assert entry["message"] == "the check crashed"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].rstrip().endswith("RuntimeError: connection reset")


@pytest.mark.parametrize(
    ("level", "logged"),
    [
        pytest.param("debug", ["DEBUG", "INFO", "WARNING"], id="debug"),
        pytest.param("info", ["INFO", "WARNING"], id="info"),
        pytest.param("WARNING", ["WARNING"], id="upper-case-name"),
    ],
)
def test_level(level: str, logged: list[str]) -> None:
    logger, stream = log_to_string(fmt="json", level=level)
    logger.debug("d")
    logger.info("i")
    logger.warning("w")
    assert [e["level"] for e in json_lines(stream.getvalue())] == logged


# -- text format ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        pytest.param(
            {"host": "web1", "check": "Root disk"},
            r"^\S+Z WARNING ce_agent\.runner \[web1/Root disk\] disk full$",
            id="host-and-check",
        ),
        pytest.param({"host": "web1"}, r"^\S+Z WARNING ce_agent\.runner \[web1\] disk full$", id="host-only"),
        pytest.param({}, r"^\S+Z WARNING ce_agent\.runner disk full$", id="no-extras"),
    ],
)
def test_text_format_shape(extra: dict, pattern: str) -> None:
    logger, stream = log_to_string(fmt="text")
    logging.getLogger("ce_agent.runner").warning("disk full", extra=extra)
    line = stream.getvalue().rstrip("\n")
    assert re.match(pattern, line), line
    assert TIME.match(line.split(" ", 1)[0])


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "is_json"),
    [
        pytest.param(Terminal(), False, id="terminal-gets-text"),
        pytest.param(io.StringIO(), True, id="pipe-gets-json"),
    ],
)
def test_auto_format(stream: io.StringIO, is_json: bool) -> None:
    configure_logging(stream=stream).info("hello")
    line = stream.getvalue().strip()
    assert line.startswith("{") is is_json
    assert line.endswith("hello") is not is_json


# -- secrets --------------------------------------------------------------------------------------


def log_canary(logger: logging.Logger, where: str) -> None:
    if where == "message":
        logger.error(f"token={CANARY}")
    elif where == "args":
        logger.error("token=%s", CANARY)
    elif where == "extra":
        logger.error("sent", extra={"host": f"https://{CANARY}@example.test", "check": Opaque()})
    elif where == "exception":
        raise_and_log(logger, f"auth failed for {CANARY}")
    elif where == "other-library":
        # A library's record reaching our handler (here via the root logger) is scrubbed too.
        handler = logger.handlers[0]
        library = logging.getLogger("somelib.transport")
        library.addHandler(handler)
        try:
            library.error("POST with key %s", CANARY)
        finally:
            library.removeHandler(handler)


WHERE = ["message", "args", "extra", "exception", "other-library"]


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("where", WHERE)
def test_canary_never_reaches_the_stream(where: str, fmt: str) -> None:
    logger, stream = log_to_string(fmt=fmt)
    log_canary(logger, where)
    out = stream.getvalue()
    assert out, "nothing was logged"
    assert MASK in out
    assert CANARY not in out


@pytest.mark.parametrize("rotate", [None, "size:1MB", "daily"])
@pytest.mark.parametrize("where", WHERE)
def test_canary_never_reaches_the_file(tmp_path: Path, where: str, rotate: str | None) -> None:
    path = tmp_path / "agent.log"
    logger = configure_logging(log_file=path, rotate=rotate, scrub=scrub)
    log_canary(logger, where)
    logger.handlers[0].flush()
    out = path.read_text()
    assert MASK in out
    assert CANARY not in out


def test_scrub_filter_rewrites_the_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (CANARY,), None)
    assert ScrubFilter(scrub).filter(record) is True
    assert (record.msg, record.args) == (f"key={MASK}", ())


def test_failing_scrubber_withholds_the_message() -> None:
    def broken(text: str) -> str:
        raise RuntimeError("scrubber bug")

    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream, scrub=broken).error("token=%s", CANARY)
    assert CANARY not in stream.getvalue()
    assert "withheld" in json_lines(stream.getvalue())[0]["message"]


# -- files and rotation ---------------------------------------------------------------------------


def test_log_file_directory_created_and_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "agent.log"
    logger = configure_logging(log_file=path)
    logger.info("started")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [entry] = json_lines(path.read_text())  # auto is JSON into a file
    assert entry["message"] == "started"


def test_existing_wider_log_file_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "agent.log"
    path.write_text("")
    path.chmod(0o644)
    configure_logging(log_file=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("keep", [1, 3])
def test_size_rotation_rotates_and_keeps_backups(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "agent.log"
    logger = configure_logging(log_file=path, rotate="size:1KB", keep=keep)
    for i in range(200):  # ~100 bytes a line: about 20 rotations
        logger.info("line %03d %s", i, "x" * 40)
    logger.handlers[0].flush()
    backups = sorted(p.name for p in tmp_path.iterdir() if p.name != "agent.log")
    assert backups == [f"agent.log.{n}" for n in range(1, keep + 1)]
    for file in [path, *(tmp_path / name for name in backups)]:
        assert file.stat().st_size <= 1000
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert json_lines(path.read_text())[-1]["message"].startswith("line 199 ")


def test_daily_rotation_settings(tmp_path: Path) -> None:
    logger = configure_logging(log_file=tmp_path / "agent.log", rotate="daily", keep=5)
    [handler] = logger.handlers
    assert isinstance(handler, logging.handlers.TimedRotatingFileHandler)
    assert (handler.when, handler.backupCount, handler.utc) == ("MIDNIGHT", 5, True)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("daily", ("daily", 0), id="daily"),
        pytest.param("size:10MB", ("size", 10_000_000), id="MB"),
        pytest.param("size:512KB", ("size", 512_000), id="KB"),
        pytest.param("size:1GB", ("size", 1_000_000_000), id="GB"),
        pytest.param("size:10MiB", ("size", 10 * 1024**2), id="MiB"),
        pytest.param("size:4KiB", ("size", 4096), id="KiB"),
        pytest.param("size:1GiB", ("size", 1024**3), id="GiB"),
        pytest.param("size:1.5mb", ("size", 1_500_000), id="fraction-lower-case"),
        pytest.param("size:2048", ("size", 2048), id="bare-bytes"),
    ],
)
def test_parse_rotate(spec: str, expected: tuple[str, int]) -> None:
    assert parse_rotate(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("weekly", "expected 'daily' or 'size:", id="unknown-word"),
        pytest.param("size:", "expected 'daily' or 'size:", id="no-number"),
        pytest.param("10MB", "expected 'daily' or 'size:", id="no-size-prefix"),
        pytest.param("size:10TB", "unknown size unit 'TB'", id="unknown-unit"),
        pytest.param("size:0MB", "above zero", id="zero"),
        pytest.param("size:-1MB", "expected 'daily' or 'size:", id="negative"),
    ],
)
def test_bad_rotate_specs(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        configure_logging(log_file=tmp_path / "agent.log", rotate=spec)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"fmt": "xml"}, "bad log format 'xml'", id="format"),
        pytest.param({"level": "loud"}, "bad log level 'loud'", id="level"),
        pytest.param({"rotate": "daily"}, "log rotation needs a log file", id="rotate-without-file"),
        pytest.param({"keep": 0, "log_file": Path("x.log")}, "at least 1", id="keep-zero"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        configure_logging(**kwargs)


# -- configuring --------------------------------------------------------------------------------


def test_configure_twice_replaces_the_handler(tmp_path: Path) -> None:
    first = io.StringIO()
    second = io.StringIO()
    configure_logging(fmt="json", stream=first)
    logger = configure_logging(fmt="json", stream=second)
    assert logger is logging.getLogger("ce_agent")
    assert len(logger.handlers) == 1
    assert logger.propagate is False
    logger.info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second.getvalue())) == 1


def test_bad_call_keeps_the_previous_handler(tmp_path: Path) -> None:
    stream = io.StringIO()
    logger = configure_logging(fmt="json", stream=stream)
    with pytest.raises(ValueError):
        configure_logging(log_file=tmp_path / "agent.log", rotate="hourly")
    logger.info("still here")
    assert json_lines(stream.getvalue())[0]["message"] == "still here"
