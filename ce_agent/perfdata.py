"""Nagios plugin output: the summary line, the long output and the performance data as metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ce_agent.contracts import Metric

# A value is a decimal number (a comma as decimal mark is tolerated: some plugins follow the locale)
# or `U` for unknown; the unit is anything letter-like that follows (s ms us % B KB MB GB TB c, and
# the odd `MiB`, `B/s`, `°C` some plugins print).
_VALUE = re.compile(r"^(?P<num>[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?|U)(?P<unit>[^\d\s;.,+-][^\s;]*)?$")
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?$")


@dataclass(slots=True)
class PluginOutput:
    """A plugin's output taken apart, with the perfdata items that could not be read and why."""

    summary: str = ""
    details: str = ""
    metrics: list[Metric] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> PluginOutput:
        """Split as the Nagios plugin API says: `SUMMARY | PERFDATA`, long output, then `| PERFDATA`."""
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        first, _, first_perf = lines[0].partition("|")
        long_lines: list[str] = []
        perf_parts = [first_perf]
        rest = iter(lines[1:])
        for line in rest:
            before, bar, after = line.partition("|")
            long_lines.append(before.rstrip() if bar else line.rstrip())
            if bar:
                # from the first `|` of the long output on, everything is perfdata
                perf_parts.append(after)
                perf_parts.extend(rest)
                break
        while long_lines and not long_lines[-1]:
            long_lines.pop()
        while long_lines and not long_lines[0]:
            long_lines.pop(0)
        metrics, problems = parse_perfdata(" ".join(perf_parts))
        return cls(first.strip(), "\n".join(long_lines), metrics, problems)


def parse_output(text: str) -> tuple[str, str, list[Metric]]:
    """(summary, long output, metrics) of a plugin's output; malformed perfdata items are skipped."""
    out = PluginOutput.parse(text)
    return out.summary, out.details, out.metrics


def parse_perfdata(text: str) -> tuple[list[Metric], list[str]]:
    """Metrics of `'label'=value[UOM];[warn];[crit];[min];[max]` items, and a note per item skipped."""
    metrics: list[Metric] = []
    problems: list[str] = []
    for label, data, error in _items(text):
        if error:
            problems.append(error)
            continue
        metric, error = _metric(label, data)
        if metric is None:
            problems.append(error)
        else:
            metrics.append(metric)
    return metrics, problems


def _items(text: str) -> Iterator[tuple[str, str, str]]:
    """(label, value part, "") per item, or ("", "", why) for a token that is not one."""
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return
        if text[pos] == "'":
            label, pos, ok = _quoted(text, pos)
            if not ok:
                yield "", "", f"unterminated quoted label: {text[pos:].strip()!r}"
                return
            if pos >= end or text[pos] != "=":
                junk_end = _token_end(text, pos)
                yield "", "", f"no '=' after label {label!r}: {text[pos:junk_end]!r}"
                pos = junk_end
                continue
        else:
            token_end = _token_end(text, pos)
            token = text[pos:token_end]
            label, eq, _ = token.partition("=")
            if not eq or not label:
                yield "", "", f"not a perfdata item: {token!r}"
                pos = token_end
                continue
            pos += len(label)
        value_end = _token_end(text, pos + 1)
        yield label, text[pos + 1 : value_end], ""
        pos = value_end


def _quoted(text: str, pos: int) -> tuple[str, int, bool]:
    """The label of a `'quoted label'` at pos (`''` is a quote), the position after it, and success."""
    out, i = [], pos + 1
    while i < len(text):
        if text[i] == "'":
            if text.startswith("''", i):
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1, True
        out.append(text[i])
        i += 1
    return "", pos, False


def _token_end(text: str, pos: int) -> int:
    while pos < len(text) and not text[pos].isspace():
        pos += 1
    return pos


def _metric(label: str, data: str) -> tuple[Metric | None, str]:
    fields = data.split(";")
    match = _VALUE.match(fields[0].strip())
    if not match:
        return None, f"{label!r}: not a value: {fields[0]!r}"
    if len(fields) > 5 and any(f.strip() for f in fields[5:]):
        return None, f"{label!r}: too many fields in {data!r}"
    fields += [""] * (5 - len(fields))
    num = match["num"]
    value = None if num == "U" else _float(num)
    warn, crit = (f.strip() or None for f in fields[1:3])
    bounds: list[float | None] = []
    for name, text in zip(("min", "max"), fields[3:5]):
        text = text.strip()
        if not text:
            bounds.append(None)
        elif _NUMBER.match(text):
            bounds.append(_float(text))
        else:
            # a unit repeated on min/max (`0MB`) is common enough to accept; anything else is dropped
            unit_match = _VALUE.match(text)
            bounds.append(_float(unit_match["num"]) if unit_match and unit_match["num"] != "U" else None)
    return Metric(label, value, match["unit"] or "", {}, warn, crit, bounds[0], bounds[1]), ""


def _float(text: str) -> float:
    return float(text.replace(",", "."))
