"""Logging for the agent: JSON lines or a readable format, to stdout or a rotated file, with secrets scrubbed."""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

LOGGER_NAME = "ce_agent"
#: record attributes given through `extra={...}` that the formatters show
EXTRA_FIELDS = ("check", "alertname", "host", "play")
FORMATS = ("json", "text", "auto")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FILE_MODE = 0o600
_SIZE = re.compile(r"^size:\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)$", re.I)
_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
# Marks the handler configure_logging installed, so that calling it again replaces that handler only.
_OURS = "_ce_agent_handler"
_WITHHELD = "<log message withheld: scrubbing it failed>"

Scrub = Callable[[str], str]


def _identity(text: str) -> str:
    return text


def parse_rotate(spec: str) -> tuple[str, int]:
    """Parse a rotation spec: "daily" -> ("daily", 0); "size:10MB" -> ("size", 10_000_000)."""
    text = spec.strip()
    if text.lower() == "daily":
        return "daily", 0
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"bad log rotation {spec!r}: expected 'daily' or 'size:<N><unit>' such as 'size:10MB'")
    number, unit = match.groups()
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(
            f"bad log rotation {spec!r}: unknown size unit {unit!r} (use B, KB, MB, GB, KiB, MiB or GiB)"
        )
    size = int(float(number) * factor)
    if size <= 0:
        raise ValueError(f"bad log rotation {spec!r}: the size must be above zero")
    return "size", size


def parse_level(level: str) -> int:
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"bad log level {level!r}: expected one of {', '.join(LEVELS)}") from None


def _utc_time(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{int(record.msecs):03d}Z"


def _safe_scrub(scrub: Scrub, text: str) -> str:
    # A scrubber that fails must neither crash the caller nor let the unscrubbed text through.
    try:
        return scrub(text)
    except Exception:
        return _WITHHELD


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        # Bad %-arguments: their values are dropped rather than risked unscrubbed.
        return f"{record.msg} (bad log arguments)"


def _clean(value: Any, scrub: Scrub) -> Any:
    """A JSON-ready copy of value with every string scrubbed; what JSON cannot hold becomes str()."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _safe_scrub(scrub, value)
    if isinstance(value, dict):
        return {_safe_scrub(scrub, str(k)): _clean(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, scrub) for v in value]
    return _safe_scrub(scrub, str(value))


class ScrubFilter(logging.Filter):
    """Scrubs a record's message (arguments included), exception text, stack and extras in place.

    Set on a handler it covers every record reaching that handler, other libraries' too. Records are
    rewritten rather than copied: a secret must not survive in a record that another handler sees later.
    """

    def __init__(self, scrub: Scrub) -> None:
        super().__init__()
        self.scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        # The message is rendered before scrubbing: a secret may only appear once arguments are filled in.
        record.msg, record.args = _safe_scrub(self.scrub, _message(record)), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _safe_scrub(self.scrub, record.exc_text)
        if record.stack_info:
            record.stack_info = _safe_scrub(self.scrub, record.stack_info)
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, _safe_scrub(self.scrub, value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the known extras and exc."""

    def __init__(self, scrub: Scrub = _identity) -> None:
        super().__init__()
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for name in EXTRA_FIELDS:
            if getattr(record, name, None) is not None:
                entry[name] = getattr(record, name)
        exc = _exception_text(self, record)
        if exc:
            entry["exc"] = exc
        if record.stack_info:
            entry["stack"] = record.stack_info
        # The field names are ours; only the values can carry a secret.
        return json.dumps({key: _clean(value, self.scrub) for key, value in entry.items()}, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`2026-11-22T10:00:00.123Z WARNING ce_agent.runner [web1/Root disk] message`, then any traceback."""

    def __init__(self, scrub: Scrub = _identity) -> None:
        super().__init__()
        self.scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        where = "/".join(
            str(getattr(record, name)) for name in ("host", "check") if getattr(record, name, None) is not None
        )
        parts = [_utc_time(record), record.levelname, record.name]
        if where:
            parts.append(f"[{where}]")
        parts.append(_message(record))
        text = " ".join(parts)
        exc = _exception_text(self, record)
        if exc:
            text = f"{text}\n{exc}"
        if record.stack_info:
            text = f"{text}\n{record.stack_info}"
        return _safe_scrub(self.scrub, text)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or ""


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, FILE_MODE)
    # The mode given to os.open only applies to a new file: an older, wider one is narrowed too.
    os.fchmod(fd, FILE_MODE)
    return fd


class _QuietErrors:
    """Reports a failed emit without the record: logging's default prints the unscrubbed message."""

    def handleError(self, record: logging.LogRecord) -> None:
        if logging.raiseExceptions and sys.stderr:
            kind = type(sys.exc_info()[1]).__name__
            try:
                sys.stderr.write(f"--- ce_agent logging error ({kind}) in a record from {record.name} ---\n")
            except (OSError, ValueError):
                pass  # stderr is gone too (a closed pipe): logging must never stop the agent


class _PrivateFile:
    """Opens the log file (and each file rotation starts) readable by its owner only."""

    baseFilename: str
    mode: str
    encoding: str | None
    errors: str | None

    def _open(self) -> TextIO:
        return open(  # noqa: SIM115 - the handler owns and closes the stream
            self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors, opener=_private_opener
        )


class _StreamHandler(_QuietErrors, logging.StreamHandler):  # type: ignore[type-arg]
    pass


class _FileHandler(_QuietErrors, _PrivateFile, logging.FileHandler):
    pass


class _SizeRotatingHandler(_QuietErrors, _PrivateFile, logging.handlers.RotatingFileHandler):
    pass


class _DailyRotatingHandler(_QuietErrors, _PrivateFile, logging.handlers.TimedRotatingFileHandler):
    pass


def _file_handler(log_file: Path, rotate: str | None, keep: int) -> logging.Handler:
    path = Path(log_file).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if rotate is None:
        return _FileHandler(path, encoding="utf-8")
    kind, size = parse_rotate(rotate)
    if kind == "size":
        return _SizeRotatingHandler(path, maxBytes=size, backupCount=keep, encoding="utf-8")
    return _DailyRotatingHandler(path, when="midnight", backupCount=keep, utc=True, encoding="utf-8")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure_logging(
    *,
    fmt: str = "auto",
    level: str = "info",
    log_file: Path | None = None,
    rotate: str | None = None,
    keep: int = 7,
    scrub: Scrub = _identity,
    stream: TextIO | None = None,
) -> logging.Logger:
    """Give the "ce_agent" logger one handler of its own (replacing any earlier one) and return it.

    fmt "auto" is text on a terminal and JSON elsewhere (always JSON into a file). Nothing outside
    the "ce_agent" logger is touched: the root logger and other libraries' loggers stay as they are.
    """
    if fmt not in FORMATS:
        raise ValueError(f"bad log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    numeric_level = parse_level(level)
    if rotate is not None and log_file is None:
        raise ValueError("log rotation needs a log file")
    if keep < 1:
        raise ValueError(f"bad log file count to keep {keep!r}: must be at least 1")
    # Resolved at call time, not as a default argument: pytest and daemons swap sys.stdout.
    out = sys.stdout if stream is None else stream
    # Everything is validated before the old handler goes: a bad call leaves logging as it was.
    handler = _file_handler(log_file, rotate, keep) if log_file is not None else _StreamHandler(out)
    if fmt == "auto":
        fmt = "text" if log_file is None and _is_terminal(out) else "json"
    handler.setFormatter(JsonFormatter(scrub) if fmt == "json" else TextFormatter(scrub))
    handler.addFilter(ScrubFilter(scrub))
    setattr(handler, _OURS, True)

    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if getattr(h, _OURS, False)]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(numeric_level)
    logger.propagate = False
    return logger
