"""Alert rule expressions (`disk_used_percent{mount="/"} >= 95`): a hand-written parser, never eval."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ce_agent.alerting.matchers import OPERATORS, Matcher, all_match, compile_regex, is_label_name

COMPARISONS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_COMPARISON_TEXT = "a comparison (>, >=, <, <=, ==, !=)"
_MATCHER_OP_TEXT = "a matcher operator (=, !=, =~, !~)"
_SPACE = frozenset(" \t\r\n")
_DIGITS = frozenset("0123456789")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
_IDENT_CHARS = _IDENT_START | _DIGITS
_TWO_CHAR_OPS = (">=", "<=", "==", "!=", "=~", "!~")
_ONE_CHAR_OPS = frozenset("><=")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
# Words PromQL reads as numbers, so they can be neither metric names nor anything but a threshold here.
_NUMBER_WORDS = frozenset({"inf", "nan"})


@dataclass(frozen=True, slots=True)
class Expr:
    """`METRIC{MATCHERS} OP THRESHOLD`: which samples a rule looks at, and when a sample's value alerts."""

    metric: str
    matchers: tuple[Matcher, ...]
    op: str
    threshold: float
    text: str = field(default="", compare=False)  # as the user wrote it; str() gives the normalised form

    def __post_init__(self) -> None:
        if not _is_metric_name(self.metric) or self.metric.lower() in _NUMBER_WORDS:
            raise ValueError(f"invalid metric name {self.metric!r}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")
        if self.op not in COMPARISONS:
            raise ValueError(f"invalid comparison {self.op!r}: expected one of >, >=, <, <=, ==, !=")
        if math.isnan(self.threshold):
            raise ValueError("the threshold cannot be NaN: no value ever compares true against it")
        # A list would make the frozen Expr unhashable; int thresholds read the same as floats.
        object.__setattr__(self, "matchers", tuple(self.matchers))
        object.__setattr__(self, "threshold", float(self.threshold))

    def selects(self, name: str, labels: Mapping[str, str]) -> bool:
        """True when a sample of metric `name` with `labels` is one this expression looks at."""
        return name == self.metric and all_match(self.matchers, labels)

    def holds(self, value: float | None) -> bool:
        """True when `value` meets the condition (the alert condition is true); None and NaN never do."""
        if value is None or math.isnan(value):
            return False
        return COMPARISONS[self.op](value, self.threshold)

    def __str__(self) -> str:
        selector = self.metric
        if self.matchers:
            selector += "{" + ", ".join(str(matcher) for matcher in self.matchers) + "}"
        return f"{selector} {self.op} {format_number(self.threshold)}"


def format_number(value: float) -> str:
    """A threshold as PromQL writes it: `90`, `0.5`, `1e+20`, `+Inf`, `-Inf`."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    # repr switches to exponent notation at 1e16; below that an integral float reads best without ".0".
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def parse_expr(text: str) -> Expr:
    """Parse `METRIC [{name OP "value", ...}] OP NUMBER`; ValueError naming the 1-based column of the problem."""
    if not isinstance(text, str):
        raise ValueError(f"an alert expression must be a string like 'metric > 90', got {type(text).__name__}")
    lexer = _Lexer(text)

    tok = lexer.next()
    if tok.kind != "ident" or tok.text.lower() in _NUMBER_WORDS:
        raise _expected("a metric name", tok)
    metric = tok.text

    matchers: list[Matcher] = []
    tok = lexer.next()
    if tok.kind == "punct" and tok.text == "{":
        tok = lexer.next()
        while not (tok.kind == "punct" and tok.text == "}"):
            matchers.append(_parse_matcher(lexer, tok))
            tok = lexer.next()
            if tok.kind == "punct" and tok.text == ",":
                tok = lexer.next()  # a trailing comma before '}' is fine, as in PromQL
            elif not (tok.kind == "punct" and tok.text == "}"):
                raise _expected("',' or '}'", tok)
        tok = lexer.next()

    if tok.kind != "op" or tok.text not in COMPARISONS:
        raise _expected(_COMPARISON_TEXT, tok)
    op = tok.text

    tok = lexer.next()
    threshold = _number(tok)

    tok = lexer.next()
    if tok.kind != "end":
        raise _expected("end of expression", tok)
    return Expr(metric, tuple(matchers), op, threshold, text)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident, number, string, op, punct, error, end
    text: str  # exactly as written
    col: int  # 1-based
    value: float | str | None = None  # the decoded string or number


class _Lexer:
    """Hands out tokens one at a time, so a problem early in the text is reported before a later one."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def next(self) -> _Token:
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in _SPACE:
            self.pos += 1
        start = self.pos
        if start >= n:
            return _Token("end", "", n + 1)
        ch = text[start]
        if ch in "{},":
            kind, end, value = "punct", start + 1, None
        elif ch == '"':
            kind, end, value = self._string(start)
        elif text.startswith(_TWO_CHAR_OPS, start):
            kind, end, value = "op", start + 2, None
        elif ch in _ONE_CHAR_OPS:
            kind, end, value = "op", start + 1, None
        elif ch in _DIGITS or ch in ".+-":
            kind, end, value = self._number(start)
        elif ch in _IDENT_START:
            end = start + 1
            while end < n and text[end] in _IDENT_CHARS:
                end += 1
            kind, value = "ident", None
        else:
            kind, end, value = "error", start + 1, None
        self.pos = end
        return _Token(kind, text[start:end], start + 1, value)

    def _string(self, start: int) -> tuple[str, int, str]:
        text, pos, out = self.text, start + 1, []
        while pos < len(text):
            ch = text[pos]
            if ch == '"':
                return "string", pos + 1, "".join(out)
            if ch == "\\" and pos + 1 < len(text):
                # Unknown escapes stay literal (as in Alertmanager) so "web\.example" needs no doubling.
                out.append(_ESCAPES.get(text[pos + 1], "\\" + text[pos + 1]))
                pos += 2
                continue
            out.append(ch)
            pos += 1
        raise ValueError(f"expected '\"' to close the string that starts at column {start + 1}, got end of input")

    def _number(self, start: int) -> tuple[str, int, float | None]:
        text, n = self.text, len(self.text)
        pos = start + 1 if text[start] in "+-" else start
        if pos < n and text[pos] in _IDENT_START:  # +Inf, -Inf, -NaN
            end = pos
            while end < n and text[end] in _IDENT_CHARS:
                end += 1
            word = text[pos:end].lower()
            if word == "inf":
                return "number", end, -math.inf if text[start] == "-" else math.inf
            return ("number", end, math.nan) if word == "nan" else ("error", end, None)
        digits = 0
        while pos < n and text[pos] in _DIGITS:
            pos, digits = pos + 1, digits + 1
        if pos < n and text[pos] == ".":
            pos += 1
            while pos < n and text[pos] in _DIGITS:
                pos, digits = pos + 1, digits + 1
        if digits == 0:  # a lone sign or dot
            return "error", pos if pos > start else start + 1, None
        if pos < n and text[pos] in "eE":
            exp = pos + 1
            if exp < n and text[exp] in "+-":
                exp += 1
            if not (exp < n and text[exp] in _DIGITS):
                return "error", exp, None  # "1e" or "1e+" with no exponent digits
            while exp < n and text[exp] in _DIGITS:
                exp += 1
            pos = exp
        # The lexeme is plain digits, one dot and an exponent at most: float() only converts it.
        return "number", pos, float(text[start:pos])


def _parse_matcher(lexer: _Lexer, tok: _Token) -> Matcher:
    if tok.kind != "ident":
        raise _expected("a label name or '}'", tok)
    if not is_label_name(tok.text):
        raise _expected("a label name ([a-zA-Z_][a-zA-Z0-9_]*, no ':')", tok)
    name = tok.text
    tok = lexer.next()
    if tok.kind != "op" or tok.text not in OPERATORS:
        raise _expected(_MATCHER_OP_TEXT, tok)
    op = tok.text
    tok = lexer.next()
    if tok.kind != "string":
        raise _expected("a double-quoted value", tok)
    value = str(tok.value)
    if op in ("=~", "!~"):
        try:
            compile_regex(value)
        except ValueError as exc:
            raise ValueError(
                f"invalid regular expression in {name}{op}{tok.text} at column {tok.col}: {exc}"
            ) from None
    return Matcher(name, op, value)


def _number(tok: _Token) -> float:
    value = tok.value if tok.kind == "number" else None
    if tok.kind == "ident" and tok.text.lower() in _NUMBER_WORDS:
        value = math.inf if tok.text.lower() == "inf" else math.nan
    if not isinstance(value, float):
        raise _expected("a number", tok)
    if math.isnan(value):
        raise _expected("a number other than NaN (nothing compares true against NaN)", tok)
    return value


def _expected(what: str, tok: _Token) -> ValueError:
    got = "end of input" if tok.kind == "end" else repr(tok.text)
    return ValueError(f"expected {what} at column {tok.col}, got {got}")


def _is_metric_name(name: object) -> bool:
    return (
        isinstance(name, str) and bool(name) and name[0] in _IDENT_START and all(ch in _IDENT_CHARS for ch in name)
    )
