"""Durations as people write them in playbooks: `10s`, `5m`, `1h30m`, `2d`, or a number of seconds."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\s*)+$")


def parse_duration(value: object) -> float:
    """Seconds in `value`; raises ValueError with the accepted forms when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite duration, got {value!r}")
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return parse_duration(number)
        if _WHOLE.match(text):
            return parse_duration(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))
    raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")


MAX_TIMEOUT = 86400.0


def parse_timeout(value: object) -> float:
    """A task's timeout: a duration above 0 and at most a day (longer is surely a typo)."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"a timeout must be more than 0, got {value!r}")
    if seconds > MAX_TIMEOUT:
        raise ValueError(f"a timeout must be at most 1d, got {value!r}")
    return seconds


def parse_interval(value: object) -> float:
    """A task's interval: a duration of at least one second."""
    seconds = parse_duration(value)
    if seconds < 1:
        raise ValueError(f"an interval must be at least 1s, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: 1s, 2m30s, 1h, 3d4h."""
    if seconds < 1:
        return f"{seconds:.2g}s" if seconds else "0s"
    out, rest = [], int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out[:2])
