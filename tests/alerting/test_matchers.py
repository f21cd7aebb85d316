"""Alertmanager-style label matchers: the text forms, how they match labels, and how config spells them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ce_agent.alerting.matchers import Matcher, all_match, matchers_from, parse_matcher


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        pytest.param("severity=critical", "severity", "=", "critical", id="bare equality"),
        pytest.param('host=~"web.*"', "host", "=~", "web.*", id="quoted regex"),
        pytest.param("team!=ops", "team", "!=", "ops", id="bare inequality"),
        pytest.param('a!~"x|y"', "a", "!~", "x|y", id="quoted negative regex"),
        pytest.param('  severity = "critical"  ', "severity", "=", "critical", id="spaces around parts"),
        pytest.param("summary=disk almost full", "summary", "=", "disk almost full", id="bare value with spaces"),
        pytest.param('summary="  padded  "', "summary", "=", "  padded  ", id="quotes keep spaces"),
        pytest.param("team=", "team", "=", "", id="empty bare value"),
        pytest.param('team=""', "team", "=", "", id="empty quoted value"),
        pytest.param(r'msg="say \"hi\""', "msg", "=", 'say "hi"', id="escaped double quote"),
        pytest.param(r'path="C:\\temp"', "path", "=", "C:\\temp", id="escaped backslash"),
        pytest.param(r'msg="two\nlines"', "msg", "=", "two\nlines", id="escaped newline"),
        pytest.param(r'host=~"web\.example\.com"', "host", "=~", r"web\.example\.com", id="unknown escape stays"),
        pytest.param(r"host=~web\d+", "host", "=~", r"web\d+", id="bare backslashes are literal"),
        pytest.param("_x9=1", "_x9", "=", "1", id="underscore and digits in the name"),
        pytest.param("url=~https?://.*", "url", "=~", "https?://.*", id="bare regex with = and ? inside"),
    ],
)
def test_parse_matcher(text: str, name: str, op: str, value: str) -> None:
    assert parse_matcher(text) == Matcher(name, op, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "empty matcher (expected a string like 'severity=critical')", id="empty"),
        pytest.param("   ", "empty matcher (expected a string like 'severity=critical')", id="blank"),
        pytest.param(
            "severity",
            "invalid matcher 'severity': expected one of =, !=, =~, !~ after the label name 'severity'",
            id="no operator",
        ),
        pytest.param(
            "a~b",
            "invalid matcher 'a~b': expected one of =, !=, =~, !~ after the label name 'a', got '~b'",
            id="tilde alone",
        ),
        pytest.param(
            "=critical",
            "invalid matcher '=critical': expected a label name ([a-zA-Z_][a-zA-Z0-9_]*) before the operator",
            id="no name",
        ),
        pytest.param(
            "my-label=x",
            "invalid matcher 'my-label=x': invalid label name 'my-label': must match [a-zA-Z_][a-zA-Z0-9_]*",
            id="dash in the name",
        ),
        pytest.param(
            "9lives=x",
            "invalid matcher '9lives=x': invalid label name '9lives': must match [a-zA-Z_][a-zA-Z0-9_]*",
            id="name starts with a digit",
        ),
        pytest.param(
            "job:rate=x",
            "invalid matcher 'job:rate=x': invalid label name 'job:rate': must match [a-zA-Z_][a-zA-Z0-9_]*",
            id="colon in a label name",
        ),
        pytest.param(
            "severity==critical",
            "invalid matcher 'severity==critical': '==' is not a matcher operator; use '=' for equality",
            id="double equals",
        ),
        pytest.param(
            'a="open',
            "invalid matcher 'a=\"open': unterminated double-quoted value (missing the closing '\"')",
            id="unterminated quote",
        ),
        pytest.param(
            'a="x\\"',
            "invalid matcher 'a=\"x\\\\\"': unterminated double-quoted value (missing the closing '\"')",
            id="the last quote is escaped",
        ),
        pytest.param(
            'a="b" c',
            "invalid matcher 'a=\"b\" c': unexpected text after the closing quote: ' c'",
            id="text after the quote",
        ),
        pytest.param(
            'a=say "hi"',
            "invalid matcher 'a=say \"hi\"': a bare value cannot contain '\"'; "
            'double-quote the whole value and write inner quotes as \\"',
            id="quote inside a bare value",
        ),
        pytest.param(
            'host=~"web(.*"',
            'invalid regular expression in matcher host=~"web(.*": missing ), unterminated subpattern',
            id="bad regex names the matcher",
        ),
        pytest.param(
            "n=~a{99999999999}",
            'invalid regular expression in matcher n=~"a{99999999999}": the repetition number is too large',
            id="regex repetition too large",
        ),
        pytest.param(
            "n=~" + "(" * 2000 + ")" * 2000,
            'invalid regular expression in matcher n=~"'
            + "(" * 2000
            + ")" * 2000
            + '": the pattern is nested too deeply',
            id="regex nested too deeply",
        ),
    ],
)
def test_parse_matcher_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_matcher(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("matcher", "labels", "matches"),
    [
        pytest.param("severity=critical", {"severity": "critical"}, True, id="= equal"),
        pytest.param("severity=critical", {"severity": "warning"}, False, id="= different"),
        pytest.param("severity=critical", {}, False, id="= missing label"),
        pytest.param("severity=", {}, True, id="= empty matches a missing label"),
        pytest.param("severity=", {"severity": "x"}, False, id="= empty fails a present label"),
        pytest.param("team!=ops", {"team": "dev"}, True, id="!= different"),
        pytest.param("team!=ops", {"team": "ops"}, False, id="!= equal"),
        pytest.param("team!=ops", {}, True, id="!= missing label"),
        pytest.param('team!=""', {}, False, id='!="" requires the label'),
        pytest.param('team!=""', {"team": "ops"}, True, id='!="" any present value'),
        pytest.param('host=~"web.*"', {"host": "web1"}, True, id="=~ matches"),
        pytest.param('host=~"web"', {"host": "web1"}, False, id="=~ is anchored at the end"),
        pytest.param('host=~"eb1"', {"host": "web1"}, False, id="=~ is anchored at the start"),
        pytest.param('host=~"a|b"', {"host": "ab"}, False, id="=~ anchors the whole alternation"),
        pytest.param('host=~"a|b"', {"host": "b"}, True, id="=~ alternation"),
        pytest.param('host=~"web.*"', {"host": "web1\n"}, False, id="=~ a trailing newline is not the end"),
        pytest.param('host=~".*"', {}, True, id="=~ .* matches a missing label"),
        pytest.param('host=~".+"', {}, False, id="=~ .+ requires the label"),
        pytest.param('a!~"x|y"', {"a": "x"}, False, id="!~ matching value"),
        pytest.param('a!~"x|y"', {"a": "xy"}, True, id="!~ anchored, so xy does not match"),
        pytest.param('a!~"x|y"', {}, True, id="!~ missing label"),
        pytest.param(r'host=~"web\.example"', {"host": "webXexample"}, False, id="escaped dot is a dot"),
        pytest.param(r'host=~"web\.example"', {"host": "web.example"}, True, id="escaped dot matches a dot"),
    ],
)
def test_matches(matcher: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_matcher(matcher).matches(labels) is matches


@pytest.mark.parametrize(
    ("matcher", "text"),
    [
        pytest.param(Matcher("severity", "=~", "crit.*"), 'severity=~"crit.*"', id="regex"),
        pytest.param(Matcher("team", "!=", "ops"), 'team!="ops"', id="inequality"),
        pytest.param(Matcher("msg", "=", 'a "b" \\ c\nd'), r'msg="a \"b\" \\ c\nd"', id="escapes"),
        pytest.param(Matcher("team", "=", ""), 'team=""', id="empty value"),
    ],
)
def test_str(matcher: Matcher, text: str) -> None:
    assert str(matcher) == text


def test_a_matcher_built_directly_compiles_its_regex_once_and_compares_by_text() -> None:
    first, second = Matcher("host", "=~", "web.*"), Matcher("host", "=~", "web.*")
    assert first.regex is not None and first.regex.pattern == "web.*"
    assert first == second and hash(first) == hash(second)
    assert len({first, second, Matcher("host", "!~", "web.*")}) == 2
    assert Matcher("host", "=", "web.*").regex is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("bad-name", "=", "x"), "invalid label name 'bad-name': must match [a-zA-Z_][a-zA-Z0-9_]*", id="name"
        ),
        pytest.param(("a", "==", "x"), "invalid matcher operator '==': expected one of =, !=, =~, !~", id="operator"),
        pytest.param(
            ("a", "=~", "[z-a]"),
            'invalid regular expression in matcher a=~"[z-a]": bad character range z-a',
            id="regex",
        ),
        pytest.param(("a", "=", 5), "matcher value for 'a' must be a string, got int", id="value type"),
    ],
)
def test_matcher_validates_itself(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Matcher(*args)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(None, [], id="null: no matchers"),
        pytest.param({}, [], id="empty mapping"),
        pytest.param([], [], id="empty list"),
        pytest.param(
            {"severity": "critical", "team": "ops"},
            ['severity="critical"', 'team="ops"'],
            id="mapping is equality (Alertmanager match:)",
        ),
        pytest.param({"severity": "a.*"}, ['severity="a.*"'], id="mapping values are not regexes"),
        pytest.param(
            {"code": 500, "ratio": 0.5, "enabled": True, "off": False},
            ['code="500"', 'ratio="0.5"', 'enabled="true"', 'off="false"'],
            id="YAML scalars in a mapping read as text",
        ),
        pytest.param(
            ["severity=~crit.*", 'team!="ops"'],
            ['severity=~"crit.*"', 'team!="ops"'],
            id="list of strings (Alertmanager matchers:)",
        ),
        pytest.param(
            ["severity=critical", {"team": "ops"}, {"code": 500}],
            ['severity="critical"', 'team="ops"', 'code="500"'],
            id="strings and single-key mappings mixed",
        ),
        pytest.param(("a=b",), ['a="b"'], id="a tuple is a list"),
    ],
)
def test_matchers_from(spec: Any, expected: list[str]) -> None:
    assert [str(matcher) for matcher in matchers_from(spec)] == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            "severity=critical",
            "matchers must be a mapping like {severity: critical} or a list like ['severity=critical'],"
            " got str 'severity=critical'",
            id="a lone string",
        ),
        pytest.param(
            5,
            "matchers must be a mapping like {severity: critical} or a list like ['severity=critical'], got int 5",
            id="a number",
        ),
        pytest.param(
            {"bad-name": "x"},
            "matchers: invalid label name 'bad-name': must match [a-zA-Z_][a-zA-Z0-9_]*",
            id="mapping with a bad name",
        ),
        pytest.param({"team": None}, "matchers: the value of 'team' must be a string, got null", id="null value"),
        pytest.param(
            {"team": ["a", "b"]},
            "matchers: the value of 'team' must be a string, got list ['a', 'b']",
            id="list value",
        ),
        pytest.param(
            ["a=b", "severity"],
            "matchers[1]: invalid matcher 'severity': expected one of =, !=, =~, !~ after the label name 'severity'",
            id="second string malformed",
        ),
        pytest.param(
            ["a=~("],
            'matchers[0]: invalid regular expression in matcher a=~"(": missing ), unterminated subpattern',
            id="bad regex in the list",
        ),
        pytest.param(
            [{"a": "1", "b": "2"}],
            "matchers[0]: a mapping in a list of matchers must have exactly one key, got 2",
            id="multi-key mapping in the list",
        ),
        pytest.param(
            ["a=b", {1: "x"}],
            "matchers[1]: invalid label name 1: must match [a-zA-Z_][a-zA-Z0-9_]*",
            id="non-string key",
        ),
        pytest.param(
            [None],
            "matchers[0]: expected a string like 'severity=critical' or a mapping like {severity: critical},"
            " got null",
            id="null item",
        ),
    ],
)
def test_matchers_from_rejects(spec: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        matchers_from(spec)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("spec", "labels", "expected"),
    [
        pytest.param([], {}, True, id="no matchers match anything"),
        pytest.param(["severity=critical", "team=~ops|sre"], {"severity": "critical", "team": "sre"}, True, id="all"),
        pytest.param(
            ["severity=critical", "team=~ops|sre"], {"severity": "critical", "team": "dev"}, False, id="one fails"
        ),
        pytest.param(["a=1", "a!=2"], {"a": "1"}, True, id="two matchers on one label"),
    ],
)
def test_all_match(spec: list[str], labels: dict[str, str], expected: bool) -> None:
    assert all_match(matchers_from(spec), labels) is expected


# ----- properties -------------------------------------------------------------------------------

GRAMMAR_CHARS = st.sampled_from(list('ab_9 =!~"\\\n.*|()[]{}-'))
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
values = st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(GRAMMAR_CHARS, max_size=40)))
def test_any_text_gives_a_matcher_or_a_value_error(text: str) -> None:
    try:
        matcher = parse_matcher(text)
    except ValueError:
        return
    assert isinstance(matcher, Matcher)


@st.composite
def matchers(draw: st.DrawFn) -> Matcher:
    op = draw(st.sampled_from(["=", "!=", "=~", "!~"]))
    value = draw(values)
    if op in ("=~", "!~"):
        value = draw(st.sampled_from([re.escape(value), re.escape(value) + ".*", f"(?:{re.escape(value)})|x+"]))
    return Matcher(draw(label_names), op, value)


@settings(max_examples=200, deadline=None)
@given(matchers())
def test_str_round_trips(matcher: Matcher) -> None:
    assert parse_matcher(str(matcher)) == matcher


@settings(max_examples=200, deadline=None)
@given(label_names, values, st.one_of(values, st.none()))
def test_operators_agree_with_plain_comparison(name: str, value: str, actual: str | None) -> None:
    labels = {} if actual is None else {name: actual}
    seen = actual or ""
    assert Matcher(name, "=", value).matches(labels) is (seen == value)
    assert Matcher(name, "!=", value).matches(labels) is (seen != value)
    assert Matcher(name, "=~", re.escape(value)).matches(labels) is (seen == value)
    assert Matcher(name, "!~", re.escape(value)).matches(labels) is (seen != value)
