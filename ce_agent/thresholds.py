"""Nagios threshold ranges (`10`, `10:`, `~:10`, `10:20`, `@10:20`) and warning/critical evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ce_agent.contracts import Status


@dataclass(frozen=True, slots=True)
class Range:
    """A monitoring-plugins range: alert when the value is outside [start, end], or inside with `@`."""

    start: float = 0.0
    end: float = math.inf
    inside: bool = False
    text: str = ""

    @classmethod
    def parse(cls, spec: str | float | int) -> Range:
        """Parse the range grammar of the Monitoring Plugins guidelines; ValueError when malformed."""
        if isinstance(spec, bool):
            raise ValueError(f"not a threshold range: {spec!r}")
        try:
            text = _num(float(spec)) if isinstance(spec, (int, float)) else str(spec).strip()
        except OverflowError:  # YAML reads `warning: 1000...0` (400 digits) as an int no float can hold
            raise ValueError(f"not a threshold range: {spec!r} is too large") from None
        if text.endswith("%"):
            text = text[:-1].strip()
        if not text:
            raise ValueError("empty threshold range")
        body, inside = (text[1:], True) if text.startswith("@") else (text, False)
        try:
            if ":" in body:
                low, high = body.split(":", 1)
                start = -math.inf if low.strip() == "~" else (float(low) if low.strip() else 0.0)
                end = float(high) if high.strip() else math.inf
            else:
                start, end = 0.0, float(body)
        except ValueError:
            raise ValueError(
                f"not a threshold range: {spec!r} (expected N, N:, ~:N, N:M or @N:M, optionally with %)"
            ) from None
        if not (math.isfinite(start) or start == -math.inf) or math.isnan(end) or end == -math.inf:
            raise ValueError(f"not a threshold range: {spec!r}")
        if start > end:
            raise ValueError(f"threshold range {spec!r} starts above its end")
        return cls(start, end, inside, text)

    def alerts(self, value: float) -> bool:
        """True when `value` should raise an alert under this range."""
        within = self.start <= value <= self.end
        return within if self.inside else not within

    def __str__(self) -> str:
        return self.text


def _num(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


def evaluate(value: float | None, warning: Range | None, critical: Range | None) -> Status:
    """CRITICAL if the critical range alerts, else WARNING if the warning one does, else OK."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Status.UNKNOWN
    if critical is not None and critical.alerts(value):
        return Status.CRITICAL
    if warning is not None and warning.alerts(value):
        return Status.WARNING
    return Status.OK


def optional_range(spec: str | float | int | None) -> Range | None:
    """Range.parse for an option that may be unset."""
    return None if spec is None else Range.parse(spec)
