"""Alert rule expressions: `METRIC{MATCHERS} OP NUMBER`, parsed by hand (never eval) with column-exact errors."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ce_agent.alerting.expr import Expr, parse_expr
from ce_agent.alerting.matchers import Matcher


@pytest.mark.parametrize(
    ("text", "metric", "matchers", "op", "threshold", "normalised"),
    [
        pytest.param(
            "system_memory_used_percent > 90",
            "system_memory_used_percent", [], ">", 90.0,
            "system_memory_used_percent > 90",
            id="plain metric",
        ),
        pytest.param(
            'disk_used_percent{mount="/"} >= 95',
            "disk_used_percent", ['mount="/"'], ">=", 95.0,
            'disk_used_percent{mount="/"} >= 95',
            id="one equality matcher",
        ),
        pytest.param(
            'http_status_code{url=~"https://.*"} != 200',
            "http_status_code", ['url=~"https://.*"'], "!=", 200.0,
            'http_status_code{url=~"https://.*"} != 200',
            id="regex matcher",
        ),
        pytest.param("load1_per_cpu < 0.5", "load1_per_cpu", [], "<", 0.5, "load1_per_cpu < 0.5", id="decimal"),
        pytest.param("x<=0", "x", [], "<=", 0.0, "x <= 0", id="no spaces"),
        pytest.param("x == 1", "x", [], "==", 1.0, "x == 1", id="equality"),
        pytest.param(" \t x\n >\n 1 ", "x", [], ">", 1.0, "x > 1", id="any whitespace between tokens"),
        pytest.param("temp_celsius < -5", "temp_celsius", [], "<", -5.0, "temp_celsius < -5", id="negative"),
        pytest.param("x>-5", "x", [], ">", -5.0, "x > -5", id="negative right after the operator"),
        pytest.param("x > +5", "x", [], ">", 5.0, "x > 5", id="explicit plus"),
        pytest.param("x > 1e3", "x", [], ">", 1000.0, "x > 1000", id="exponent"),
        pytest.param("x > 2.5E-3", "x", [], ">", 0.0025, "x > 0.0025", id="negative exponent"),
        pytest.param("x > .5", "x", [], ">", 0.5, "x > 0.5", id="leading dot"),
        pytest.param("x > 5.", "x", [], ">", 5.0, "x > 5", id="trailing dot"),
        pytest.param("x > 1e20", "x", [], ">", 1e20, "x > 1e+20", id="large stays in exponent form"),
        pytest.param("x < +Inf", "x", [], "<", math.inf, "x < +Inf", id="+Inf"),
        pytest.param("x > -inf", "x", [], ">", -math.inf, "x > -Inf", id="-inf any case"),
        pytest.param("x != Inf", "x", [], "!=", math.inf, "x != +Inf", id="bare Inf"),
        pytest.param("x > 1e999", "x", [], ">", math.inf, "x > +Inf", id="overflow is Inf"),
        pytest.param("node:cpu:ratio > 0.9", "node:cpu:ratio", [], ">", 0.9, "node:cpu:ratio > 0.9", id="colons"),
        pytest.param("x{} > 1", "x", [], ">", 1.0, "x > 1", id="empty braces"),
        pytest.param(
            'x{ a = "1" , b !~ "2|3" , } > 1',
            "x", ['a="1"', 'b!~"2|3"'], ">", 1.0,
            'x{a="1", b!~"2|3"} > 1',
            id="spaces and a trailing comma",
        ),
        pytest.param(
            r'x{msg="say \"hi\" \\ \n", host=~"web\.example"} > 1',
            "x", [r'msg="say \"hi\" \\ \n"', r'host=~"web\\.example"'], ">", 1.0,
            r'x{msg="say \"hi\" \\ \n", host=~"web\\.example"} > 1',
            id="escapes in values",
        ),
        pytest.param('x{a="1",a!="2"} > 1', "x", ['a="1"', 'a!="2"'], ">", 1.0, 'x{a="1", a!="2"} > 1', id="repeat"),
        pytest.param('x{a="{},>"} > 1', "x", ['a="{},>"'], ">", 1.0, 'x{a="{},>"} > 1', id="syntax inside a string"),
    ],
)
def test_parse_expr(
    text: str, metric: str, matchers: list[str], op: str, threshold: float, normalised: str
) -> None:
    expr = parse_expr(text)
    assert (expr.metric, [str(m) for m in expr.matchers], expr.op, expr.threshold) == (metric, matchers, op, threshold)
    assert str(expr) == normalised
    assert expr.text == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "expected a metric name at column 1, got end of input", id="empty"),
        pytest.param("   ", "expected a metric name at column 4, got end of input", id="blank"),
        pytest.param("90 < x", "expected a metric name at column 1, got '90'", id="number first"),
        pytest.param("Inf > 1", "expected a metric name at column 1, got 'Inf'", id="Inf is not a metric"),
        pytest.param("1x > 1", "expected a metric name at column 1, got '1'", id="metric starts with a digit"),
        pytest.param(
            "system_memory_used_percent = 90",
            "expected a comparison (>, >=, <, <=, ==, !=) at column 28, got '='",
            id="single equals",
        ),
        pytest.param("x", "expected a comparison (>, >=, <, <=, ==, !=) at column 2, got end of input", id="no op"),
        pytest.param("x =< 1", "expected a comparison (>, >=, <, <=, ==, !=) at column 3, got '='", id="=<"),
        pytest.param("x => 1", "expected a comparison (>, >=, <, <=, ==, !=) at column 3, got '='", id="=>"),
        pytest.param("x =~ 1", "expected a comparison (>, >=, <, <=, ==, !=) at column 3, got '=~'", id="=~ outside"),
        pytest.param("x-y > 1", "expected a comparison (>, >=, <, <=, ==, !=) at column 2, got '-y'", id="dash"),
        pytest.param("x[5m] > 1", "expected a comparison (>, >=, <, <=, ==, !=) at column 2, got '['", id="range"),
        pytest.param(
            "__import__('os').system('id') > 1",
            "expected a comparison (>, >=, <, <=, ==, !=) at column 11, got '('",
            id="code is not evaluated",
        ),
        pytest.param("x > 1 and y > 2", "expected end of expression at column 7, got 'and'", id="no boolean logic"),
        pytest.param("x > 90%", "expected end of expression at column 7, got '%'", id="percent sign"),
        pytest.param("x > 0x1F", "expected end of expression at column 6, got 'x1F'", id="hex"),
        pytest.param("x > 1.2.3", "expected end of expression at column 8, got '.3'", id="two dots"),
        pytest.param("x >", "expected a number at column 4, got end of input", id="no number"),
        pytest.param("x > y", "expected a number at column 5, got 'y'", id="metric on the right"),
        pytest.param("x > 1e", "expected a number at column 5, got '1e'", id="exponent without digits"),
        pytest.param("x > 1e+", "expected a number at column 5, got '1e+'", id="signed exponent without digits"),
        pytest.param("x > - 5", "expected a number at column 5, got '-'", id="sign apart from the digits"),
        pytest.param("x > .", "expected a number at column 5, got '.'", id="lone dot"),
        pytest.param("x > -foo", "expected a number at column 5, got '-foo'", id="signed word"),
        pytest.param('x > "5"', "expected a number at column 5, got '\"5\"'", id="quoted number"),
        pytest.param(
            "x > NaN",
            "expected a number other than NaN (nothing compares true against NaN) at column 5, got 'NaN'",
            id="NaN",
        ),
        pytest.param(
            "x > -nan",
            "expected a number other than NaN (nothing compares true against NaN) at column 5, got '-nan'",
            id="signed NaN",
        ),
        pytest.param("x{", "expected a label name or '}' at column 3, got end of input", id="open brace"),
        pytest.param('x{,a="1"} > 1', "expected a label name or '}' at column 3, got ','", id="leading comma"),
        pytest.param('x{a="1",,} > 1', "expected a label name or '}' at column 9, got ','", id="double comma"),
        pytest.param(
            'x{job:x="1"} > 1',
            "expected a label name ([a-zA-Z_][a-zA-Z0-9_]*, no ':') at column 3, got 'job:x'",
            id="colon in a label name",
        ),
        pytest.param(
            'x{a=="1"} > 1',
            "expected a matcher operator (=, !=, =~, !~) at column 4, got '=='",
            id="== in braces",
        ),
        pytest.param('x{a > 1', "expected a matcher operator (=, !=, =~, !~) at column 5, got '>'", id="unclosed"),
        pytest.param("x{a=1} > 1", "expected a double-quoted value at column 5, got '1'", id="bare value in braces"),
        pytest.param("x{a='1'} > 1", "expected a double-quoted value at column 5, got \"'\"", id="single quotes"),
        pytest.param('x{a="1" b="2"} > 1', "expected ',' or '}' at column 9, got 'b'", id="missing comma"),
        pytest.param(
            'x{a="1} > 1',
            "expected '\"' to close the string that starts at column 5, got end of input",
            id="unterminated string",
        ),
        pytest.param(
            'x{path=~"/var/(log"} > 1',
            'invalid regular expression in path=~"/var/(log" at column 9: missing ), unterminated subpattern',
            id="bad regex",
        ),
        pytest.param("x > 1 é", "expected end of expression at column 7, got 'é'", id="non-ASCII"),
        pytest.param("é > 1", "expected a metric name at column 1, got 'é'", id="non-ASCII metric"),
    ],
)
def test_parse_expr_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_expr(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        pytest.param("x > 90", 90.5, True, id="> above"),
        pytest.param("x > 90", 90, False, id="> equal"),
        pytest.param("x >= 90", 90, True, id=">= equal"),
        pytest.param("x < 0.5", 0.4, True, id="< below"),
        pytest.param("x <= 0.5", 0.5, True, id="<= equal"),
        pytest.param("x <= 0.5", 0.6, False, id="<= above"),
        pytest.param("x == 1", 1.0, True, id="== equal"),
        pytest.param("x != 200", 404, True, id="!= different"),
        pytest.param("x != 200", 200, False, id="!= equal"),
        pytest.param("x > -Inf", -1e308, True, id="anything is above -Inf"),
        pytest.param("x < +Inf", math.inf, False, id="Inf is not below Inf"),
        pytest.param("x > 90", None, False, id="no value never holds"),
        pytest.param("x != 200", None, False, id="no value never holds, even for !="),
        pytest.param("x != 200", math.nan, False, id="NaN never holds, even for !="),
        pytest.param("x < 1", math.nan, False, id="NaN never holds"),
    ],
)
def test_holds(text: str, value: float | None, holds: bool) -> None:
    assert parse_expr(text).holds(value) is holds


@pytest.mark.parametrize(
    ("text", "name", "labels", "selects"),
    [
        pytest.param("x > 1", "x", {"any": "thing"}, True, id="no matchers: every series of the metric"),
        pytest.param("x > 1", "y", {}, False, id="another metric"),
        pytest.param("x > 1", "x_total", {}, False, id="a longer name is another metric"),
        pytest.param('disk{mount="/"} > 1', "disk", {"mount": "/"}, True, id="matching label"),
        pytest.param('disk{mount="/"} > 1', "disk", {"mount": "/home"}, False, id="other label value"),
        pytest.param('disk{mount="/"} > 1', "disk", {}, False, id="missing label"),
        pytest.param('disk{mount!="/"} > 1', "disk", {}, True, id="missing label is empty"),
        pytest.param('http{url=~"https://.*", code!="200"} > 1', "http", {"url": "https://a", "code": "500"}, True,
                     id="all matchers hold"),
        pytest.param('http{url=~"https://.*", code!="200"} > 1', "http", {"url": "http://a", "code": "500"}, False,
                     id="one matcher fails"),
    ],
)
def test_selects(text: str, name: str, labels: dict[str, str], selects: bool) -> None:
    assert parse_expr(text).selects(name, labels) is selects


def test_expressions_compare_by_meaning_not_spelling() -> None:
    spaced, tight = parse_expr('x{ a = "1", } >  1e0'), parse_expr('x{a="1"}>1')
    assert spaced == tight and hash(spaced) == hash(tight)
    assert spaced.text != tight.text
    assert parse_expr("x > 1") != parse_expr("x >= 1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("1x", (), ">", 1.0), "invalid metric name '1x': must match [a-zA-Z_:][a-zA-Z0-9_:]*", id="name"),
        pytest.param(("x", (), "=", 1.0), "invalid comparison '=': expected one of >, >=, <, <=, ==, !=", id="op"),
        pytest.param(
            ("x", (), ">", math.nan),
            "the threshold cannot be NaN: no value ever compares true against it",
            id="NaN",
        ),
    ],
)
def test_expr_validates_itself(args: tuple[str, tuple[Matcher, ...], str, float], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Expr(*args)
    assert str(caught.value) == message


# ----- properties -------------------------------------------------------------------------------

GRAMMAR_CHARS = st.sampled_from(list('xy_:9 {}=!~<>,"\\.eE+-Inf\n'))
COLUMN = re.compile(r"at column (\d+)")


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(GRAMMAR_CHARS, max_size=40)))
def test_any_text_gives_an_expr_or_a_value_error_with_a_column(text: str) -> None:
    try:
        expr = parse_expr(text)
    except ValueError as exc:
        found = COLUMN.search(str(exc))
        assert found, str(exc)
        assert 1 <= int(found.group(1)) <= len(text) + 1
        return
    assert isinstance(expr, Expr)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


gaps = st.sampled_from(["", " ", "  ", "\t", "\n"])
metric_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True).filter(
    lambda name: name.lower() not in ("inf", "nan")
)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
thresholds = st.one_of(
    st.integers(-(10**6), 10**6).map(lambda n: (float(n), str(n))),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: (f, repr(f))),
    st.sampled_from([(math.inf, "Inf"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (1e-3, "1E-3"), (250.0, "2.5e2")]),
)


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str, str]], str, float]:
    metric = draw(metric_names)
    matchers: list[tuple[str, str, str]] = []
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["=", "!=", "=~", "!~"]))
        value = draw(st.text(max_size=12))
        if op in ("=~", "!~"):
            value = re.escape(value) + draw(st.sampled_from(["", ".*", "|x+"]))
        matchers.append((draw(label_names), op, value))
    op = draw(st.sampled_from([">", ">=", "<", "<=", "==", "!="]))
    threshold, number = draw(thresholds)
    text = draw(gaps) + metric + draw(gaps)
    if matchers or draw(st.booleans()):
        parts = [draw(gaps) + name + draw(gaps) + mop + draw(gaps) + _quoted(value) + draw(gaps)
                 for name, mop, value in matchers]
        text += "{" + ",".join(parts) + ("," if matchers and draw(st.booleans()) else "") + "}"
    text += draw(gaps) + op + draw(gaps) + number + draw(gaps)
    return text, metric, matchers, op, threshold


@settings(max_examples=300, deadline=None)
@given(expressions())
def test_generated_expressions_parse_to_their_parts_and_round_trip(
    case: tuple[str, str, list[tuple[str, str, str]], str, float],
) -> None:
    text, metric, matchers, op, threshold = case
    expr = parse_expr(text)
    assert expr.metric == metric
    assert [(m.name, m.op, m.value) for m in expr.matchers] == matchers
    assert expr.op == op
    assert expr.threshold == threshold
    assert parse_expr(str(expr)) == expr
    assert str(parse_expr(str(expr))) == str(expr)
