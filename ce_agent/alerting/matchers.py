"""Alertmanager-style label matchers (`severity="critical"`, `host=~"web.*"`) for routes, silences and windows."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OPERATORS = ("=", "!=", "=~", "!~")
_OPERATORS_TEXT = "=, !=, =~, !~"
_LABEL_NAME_TEXT = "[a-zA-Z_][a-zA-Z0-9_]*"
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
# A bare label name ends at the first character that can only belong to the operator, the value or a gap.
_NAME_STOP = frozenset('=!~"') | frozenset(" \t\r\n")


def is_label_name(name: str) -> bool:
    """True when `name` is a valid label name: [a-zA-Z_][a-zA-Z0-9_]*."""
    return bool(name) and name[0] in _NAME_START and all(ch in _NAME_CHARS for ch in name)


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Compile a matcher regex; ValueError carrying the reason when it is not a valid regular expression.

    Anchoring is done by `fullmatch` when matching (Alertmanager anchors as `^(?:re)$`), so that a pattern
    such as `x)|(y` cannot escape an added `(?:...)` wrapper.
    """
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(exc.msg) from None
    # Python's parser reports some pathological patterns (`a{99999999999}`, thousands of nested
    # groups) with these instead of re.error; they are still just a bad pattern from the user.
    except OverflowError as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:
        raise ValueError("the pattern is nested too deeply") from None


def quote(value: str) -> str:
    """The double-quoted form of a value, escaping backslash, double quote and newline."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; a missing label matches as the empty string (as in Alertmanager)."""

    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not is_label_name(self.name):
            raise ValueError(f"invalid label name {self.name!r}: must match {_LABEL_NAME_TEXT}")
        if self.op not in OPERATORS:
            raise ValueError(f"invalid matcher operator {self.op!r}: expected one of {_OPERATORS_TEXT}")
        if not isinstance(self.value, str):
            raise ValueError(f"matcher value for {self.name!r} must be a string, got {type(self.value).__name__}")
        if self.op in ("=~", "!~"):
            try:
                compiled = compile_regex(self.value)
            except ValueError as exc:
                raise ValueError(f"invalid regular expression in matcher {self}: {exc}") from None
            # The dataclass is frozen; the compiled pattern is a cache derived from `value`, not state.
            object.__setattr__(self, "regex", compiled)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when `labels` satisfy this matcher."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.name}{self.op}{quote(self.value)}"


def parse_matcher(text: str) -> Matcher:
    """Parse `name OP value` (value bare or double-quoted with \\" \\\\ \\n escapes); ValueError when malformed."""
    if not isinstance(text, str):
        raise ValueError(f"a matcher must be a string like 'severity=critical', got {type(text).__name__}")
    body = text.strip()
    if not body:
        raise ValueError("empty matcher (expected a string like 'severity=critical')")

    def fail(reason: str) -> ValueError:
        return ValueError(f"invalid matcher {text!r}: {reason}")

    pos = 0
    while pos < len(body) and body[pos] not in _NAME_STOP:
        pos += 1
    name = body[:pos]
    if not name:
        raise fail(f"expected a label name ({_LABEL_NAME_TEXT}) before the operator")
    if not is_label_name(name):
        raise fail(f"invalid label name {name!r}: must match {_LABEL_NAME_TEXT}")
    while pos < len(body) and body[pos].isspace():
        pos += 1
    op = next((candidate for candidate in ("=~", "!~", "!=", "=") if body.startswith(candidate, pos)), None)
    if op is None:
        rest = body[pos:]
        got = f", got {rest!r}" if rest else ""
        raise fail(f"expected one of {_OPERATORS_TEXT} after the label name {name!r}{got}")
    pos += len(op)
    rest = body[pos:].lstrip()
    if op == "=" and rest.startswith("="):
        raise fail("'==' is not a matcher operator; use '=' for equality")
    if rest.startswith('"'):
        value, end = _unquote(rest, fail)
        if end != len(rest):
            raise fail(f"unexpected text after the closing quote: {rest[end:]!r}")
    elif '"' in rest:
        raise fail('a bare value cannot contain \'"\'; double-quote the whole value and write inner quotes as \\"')
    else:
        value = rest
    return Matcher(name, op, value)  # its own ValueError names the matcher when the regex is bad


def _unquote(text: str, fail: Callable[[str], ValueError]) -> tuple[str, int]:
    """Decode the double-quoted string at the start of `text`; return it and the index just past its quote."""
    out: list[str] = []
    pos = 1
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            return "".join(out), pos + 1
        if ch == "\\" and pos + 1 < len(text):
            nxt = text[pos + 1]
            # Unknown escapes stay literal (as in Alertmanager) so regexes such as "web\.example" need no doubling.
            out.append({"\\": "\\", '"': '"', "n": "\n"}.get(nxt, "\\" + nxt))
            pos += 2
            continue
        out.append(ch)
        pos += 1
    raise fail("unterminated double-quoted value (missing the closing '\"')")


def matchers_from(spec: Any) -> list[Matcher]:
    """Matchers from config: a mapping {name: value} (equality, like `match:`), or a list of matcher strings
    (like `matchers:`) and/or single-key mappings; None gives no matchers. ValueError naming what is wrong."""
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        return [_equality(name, value, "matchers") for name, value in spec.items()]
    if isinstance(spec, str) or not isinstance(spec, Sequence):
        raise ValueError(
            "matchers must be a mapping like {severity: critical} or a list like ['severity=critical'],"
            f" got {_describe(spec)}"
        )
    result: list[Matcher] = []
    for index, item in enumerate(spec):
        where = f"matchers[{index}]"
        if isinstance(item, str):
            try:
                result.append(parse_matcher(item))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        elif isinstance(item, Mapping):
            if len(item) != 1:
                raise ValueError(
                    f"{where}: a mapping in a list of matchers must have exactly one key, got {len(item)}"
                )
            ((name, value),) = item.items()
            result.append(_equality(name, value, where))
        else:
            raise ValueError(
                f"{where}: expected a string like 'severity=critical' or a mapping like {{severity: critical}},"
                f" got {_describe(item)}"
            )
    return result


def all_match(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches `labels` (an empty list matches everything)."""
    return all(matcher.matches(labels) for matcher in matchers)


def _equality(name: Any, value: Any, where: str) -> Matcher:
    if not isinstance(name, str) or not is_label_name(name):
        raise ValueError(f"{where}: invalid label name {name!r}: must match {_LABEL_NAME_TEXT}")
    # YAML turns `code: 500` and `enabled: true` into numbers and booleans; Alertmanager reads them as text.
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"{where}: the value of {name!r} must be a string, got {_describe(value)}")
    return Matcher(name, "=", value)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
