"""Property-based tests of every parser of user input (issue 7, point 4): whatever the text, the result
or the module's own error (UserError, ValueError, a problem on the list), never another exception;
and where a value has a text form, that text reads back as the same value.

The parsers: the YAML loader and the playbook/inventory readers (ce_agent/config), Nagios plugin
output and perfdata (ce_agent/perfdata.py), the Nagios range grammar (ce_agent/thresholds.py) and the
alert `expr` language (ce_agent/alerting/expr.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ce_agent.alerting.expr import COMPARISONS, Expr, format_number, parse_expr
from ce_agent.alerting.matchers import Matcher
from ce_agent.config.inventory import load_inventories
from ce_agent.config.playbook import PLAY_KEYS, TASK_KEYS, load_playbook
from ce_agent.config.yamlfile import parse_yaml
from ce_agent.errors import Problems, UserError
from ce_agent.perfdata import PluginOutput, parse_perfdata
from ce_agent.thresholds import Range

EXAMPLES = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- the YAML loader -------------------------------------------------------------------------

# Pieces of YAML syntax, so that random text is mostly almost-YAML (the interesting kind), not noise.
YAML_PIECES = [
    "[", "]", "{", "}", ":", ": ", "- ", ",", "?", "\n", "  ", "\t", "#", "'", '"', "\\", "|", ">", "&a ", "*a",
    "&b ", "*b", "<<: ", "!!python/object/apply:os.system ", "!!python/name:os.system", "!vault ", "!!str ",
    "!!binary ", "!!set ", "!!omap ", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "---\n", "...\n", "a", "hosts",
    "checks", "1", "-1.5e3", "0x1F", "0o17", "~", "null", "yes", "2001-12-14", "\u2028", "\ufeff", "\x85", "\x00",
]
yamlish = st.lists(st.sampled_from(YAML_PIECES), max_size=40).map("".join) | st.text(max_size=200)


@EXAMPLES
@given(text=yamlish)
def test_the_yaml_loader_returns_data_or_one_located_user_error(text: str) -> None:
    try:
        parse_yaml(text, "f.yml")
    except UserError as exc:
        assert str(exc).startswith("f.yml") and "\n" not in str(exc)


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30))
plain_data = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)


@EXAMPLES
@given(data=plain_data)
def test_plain_data_dumped_as_yaml_reads_back_the_same(data: object) -> None:
    assert parse_yaml(yaml.safe_dump(data), "f.yml") == data


# Structures shaped like playbooks and inventories, with the right keys and wrong values.
keys = st.sampled_from([*PLAY_KEYS, *TASK_KEYS, "all", "hosts", "vars", "children", "fixed", "file", "disk",
                        "command", "channels", "expr", "localhost", "web[1:3]"]) | st.text(max_size=8)
shaped = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=25)


@EXAMPLES
@given(data=shaped, suffix=st.sampled_from([".yml", ".json", ""]))
def test_playbooks_and_inventories_of_any_shape_are_read_or_explained(tmp_path: Path, data: object, suffix: str) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_text(yaml.safe_dump(data))
    for load in (lambda p: load_playbook(p, problems), lambda p: load_inventories([p], problems)):
        problems = Problems()
        load(path)
        assert all(str(problem) for problem in problems.items)


@EXAMPLES
@given(text=st.lists(st.sampled_from(["[web]", "[web:vars]", "[web:children]", "[", "]", "web[1:3]", "[a:z]",
                                      "x=1", "x='a", " ", "\n", "=", "#", ";", "web", "[1:99999999]", "{",
                                      "ansible_port=abc", "[0:]"]), max_size=30).map("".join) | st.text(max_size=100))
def test_ini_inventories_of_any_text_are_read_or_explained(tmp_path: Path, text: str) -> None:
    for name in ("hosts.ini", "hosts"):
        path = tmp_path / name
        path.write_text(text)
        problems = Problems()
        load_inventories([path], problems)
        assert all(str(problem) for problem in problems.items)


# -- plugin output and perfdata --------------------------------------------------------------

perf_pieces = ["'", "''", "=", ";", " ", "|", "\n", "\r", "1", "-2.5", "1,5", "1e3", "U", "%", "MB", "c", "~", ":",
               "@", "label", "a b", "°C", "\t", "inf", "nan"]
perfish = st.lists(st.sampled_from(perf_pieces), max_size=40).map("".join) | st.text(max_size=200)


@EXAMPLES
@given(text=perfish)
def test_any_plugin_output_is_taken_apart_without_an_exception(text: str) -> None:
    out = PluginOutput.parse(text)
    assert "\n" not in out.summary
    for metric in out.metrics:
        assert metric.value is None or isinstance(metric.value, float)
    metrics, problems = parse_perfdata(text)
    assert all(isinstance(p, str) and p for p in problems)


labels = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1,
                 max_size=12).filter(lambda s: s.strip() == s and s)
numbers = st.floats(allow_nan=False, allow_infinity=False, width=32)


@EXAMPLES
@given(label=labels, value=numbers | st.none(), unit=st.sampled_from(["", "s", "ms", "%", "B", "KB", "MB", "c"]),
       warn=st.sampled_from(["", "10", "~:20", "@5:6"]), low=numbers | st.none(), high=numbers | st.none())
def test_perfdata_written_as_the_plugin_api_says_reads_back(
    label: str, value: float | None, unit: str, warn: str, low: float | None, high: float | None
) -> None:
    quoted = "'" + label.replace("'", "''") + "'"
    text = f"{quoted}={'U' if value is None else repr(value)}{unit};{warn};;{'' if low is None else repr(low)};" \
           f"{'' if high is None else repr(high)}"
    (metric,), problems = parse_perfdata(text)
    assert problems == []
    assert (metric.name, metric.value, metric.unit, metric.warn or "", metric.min, metric.max) == (
        label, value, unit, warn, low, high)


# -- the Nagios range grammar ----------------------------------------------------------------

range_pieces = ["@", "~", ":", "10", "-5", "0.5", "1e3", "%", " ", "inf", "nan", "-", "+", ".", "1_0", "x", "∞"]
rangeish = st.lists(st.sampled_from(range_pieces), max_size=8).map("".join) | st.text(max_size=20)


@EXAMPLES
@given(spec=rangeish | st.integers() | st.floats())
def test_any_range_is_parsed_or_a_value_error(spec: str | int | float) -> None:
    try:
        parsed = Range.parse(spec)
    except ValueError as exc:
        assert str(exc)
        return
    assert parsed.start <= parsed.end and not math.isnan(parsed.start)


bounds = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@EXAMPLES
@given(start=bounds | st.just(-math.inf), width=st.floats(min_value=0, max_value=1e12) | st.just(math.inf),
       inside=st.booleans())
def test_a_range_reads_back_from_its_text(start: float, width: float, inside: bool) -> None:
    end = (start if math.isfinite(start) else 0.0) + width
    low = "~" if start == -math.inf else repr(start)
    text = f"{'@' if inside else ''}{low}:{'' if end == math.inf else repr(end)}"
    parsed = Range.parse(text)
    assert (parsed.start, parsed.end, parsed.inside) == (start, end, inside)
    again = Range.parse(str(parsed))
    assert (again.start, again.end, again.inside) == (start, end, inside)


@EXAMPLES
@given(start=bounds, end=bounds, value=bounds, inside=st.booleans())
def test_a_range_alerts_as_the_monitoring_plugins_guidelines_say(start: float, end: float, value: float,
                                                                 inside: bool) -> None:
    assume(start <= end)
    rng = Range.parse(f"{'@' if inside else ''}{start!r}:{end!r}")
    assert rng.alerts(value) == ((start <= value <= end) if inside else (value < start or value > end))


# -- the alert expression language -----------------------------------------------------------

expr_pieces = ['"', "\\", "{", "}", ",", "=", "!=", "=~", "!~", ">", ">=", "<", "==", " ", "cpu", "mount", "a:b",
               "1", "-1.5", "1e", "+Inf", "NaN", "inf", ".", "(", "x{99999999999}", "[", "\n"]
exprish = st.lists(st.sampled_from(expr_pieces), max_size=25).map("".join) | st.text(max_size=80)


@EXAMPLES
@given(text=exprish)
def test_any_alert_expression_is_parsed_or_a_value_error_with_a_column(text: str) -> None:
    try:
        parse_expr(text)
    except ValueError as exc:
        message = str(exc)
        assert message and "\n" not in message.replace("\\n", "")
        assert re.search(r"column \d+|end of input|regular expression|invalid", message), message


metric_names = st.from_regex(r"\A[a-zA-Z_:][a-zA-Z0-9_:]{0,12}\Z").filter(lambda n: n.lower() not in ("inf", "nan"))
label_names = st.from_regex(r"\A[a-zA-Z_][a-zA-Z0-9_]{0,8}\Z")
values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
matchers = st.builds(Matcher, label_names, st.sampled_from(["=", "!="]), values) | st.builds(
    Matcher, label_names, st.sampled_from(["=~", "!~"]), st.sampled_from(["web.*", "", "a|b", r"\d+", "x\\.y"]))
thresholds = st.floats(allow_nan=False) | st.integers(min_value=-(10**15), max_value=10**15).map(float)


@EXAMPLES
@given(metric=metric_names, matcher_list=st.lists(matchers, max_size=3), op=st.sampled_from(sorted(COMPARISONS)),
       threshold=thresholds)
def test_an_expression_reads_back_from_its_text(metric: str, matcher_list: list[Matcher], op: str,
                                                 threshold: float) -> None:
    expr = Expr(metric, tuple(matcher_list), op, threshold)
    again = parse_expr(str(expr))
    assert again == expr, str(expr)
    assert format_number(again.threshold) in str(expr)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(10**400, id="an integer too large for a float"),
        pytest.param(-(10**400), id="a negative one"),
    ],
)
def test_a_range_beyond_floats_is_a_value_error(spec: int) -> None:
    """YAML reads `warning: 1000...0` (400 digits) as a Python int; float() of it overflowed (a traceback)."""
    with pytest.raises(ValueError):
        Range.parse(spec)
