"""Parsing Nagios plugin output: summary, long output and performance data, as real plugins print them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ce_agent.contracts import Metric
from ce_agent.perfdata import PluginOutput, parse_output, parse_perfdata


def m(
    name: str,
    value: float | None,
    unit: str = "",
    warn: str | None = None,
    crit: str | None = None,
    min: float | None = None,
    max: float | None = None,
) -> Metric:
    return Metric(name, value, unit, {}, warn, crit, min, max)


PERFDATA = [
    pytest.param(
        "load1=0.170;5.000;10.000;0; load5=0.200;4.000;8.000;0; load15=0.100;3.000;6.000;0; ",
        [
            m("load1", 0.17, "", "5.000", "10.000", 0),
            m("load5", 0.2, "", "4.000", "8.000", 0),
            m("load15", 0.1, "", "3.000", "6.000", 0),
        ],
        id="check_load: trailing semicolons and space",
    ),
    pytest.param(
        " /=23451402240B;216442024755;243497277849;0;270552530944",
        [m("/", 23451402240, "B", "216442024755", "243497277849", 0, 270552530944)],
        id="check_disk (bytes, a path as label)",
    ),
    pytest.param(
        "/=2643MB;5948;5958;0;5968 /boot=68MB;88;93;0;98",
        [m("/", 2643, "MB", "5948", "5958", 0, 5968), m("/boot", 68, "MB", "88", "93", 0, 98)],
        id="check_disk (MB, two mounts)",
    ),
    pytest.param(
        "time=0.042012s;;;0.000000;10.000000 size=10975B;;;0",
        [m("time", 0.042012, "s", None, None, 0, 10), m("size", 10975, "B", None, None, 0)],
        id="check_http: empty warn/crit",
    ),
    pytest.param(
        "rta=0.050000ms;100.000000;500.000000;0.000000 pl=0%;20;60;0",
        [m("rta", 0.05, "ms", "100.000000", "500.000000", 0), m("pl", 0, "%", "20", "60", 0)],
        id="check_ping: ms and %",
    ),
    pytest.param(
        "procs=70;1000;2000;0;",
        [m("procs", 70, "", "1000", "2000", 0)],
        id="check_procs",
    ),
    pytest.param(
        "age=313s;1;2 size=3B;0;0;0",
        [m("age", 313, "s", "1", "2"), m("size", 3, "B", "0", "0", 0)],
        id="check_file_age",
    ),
    pytest.param(
        "swap=0B;0;0;0;0",
        [m("swap", 0, "B", "0", "0", 0, 0)],
        id="check_swap: all zeros",
    ),
    pytest.param(
        "offset=-0.001234s;60.000000;120.000000;",
        [m("offset", -0.001234, "s", "60.000000", "120.000000")],
        id="check_ntp: negative value",
    ),
    pytest.param(
        "'C:\\ used %'=45%;80;90;0;100 'C:\\ used'=12.3GB;32;36;0;40",
        [m("C:\\ used %", 45, "%", "80", "90", 0, 100), m("C:\\ used", 12.3, "GB", "32", "36", 0, 40)],
        id="NSClient: quoted labels with spaces and %",
    ),
    pytest.param(
        "'it''s'=1c",
        [m("it's", 1, "c")],
        id="quoted label with an escaped quote, counter unit",
    ),
    pytest.param(
        "'rta'=U;;;; pl=100%;20;60;0",
        [m("rta", None), m("pl", 100, "%", "20", "60", 0)],
        id="U: unknown value",
    ),
    pytest.param("users=0;5;10;0", [m("users", 0, "", "5", "10", 0)], id="check_users"),
    pytest.param("a=1", [m("a", 1)], id="value only"),
    pytest.param("a=1;", [m("a", 1)], id="value and one semicolon"),
    pytest.param("a=1;;;;", [m("a", 1)], id="all fields empty"),
    pytest.param("temp=21.5;@18:25;~:30", [m("temp", 21.5, "", "@18:25", "~:30")], id="ranges kept as given"),
    pytest.param("t=5us a=1KB b=2TB", [m("t", 5, "us"), m("a", 1, "KB"), m("b", 2, "TB")], id="more units"),
    pytest.param("rate=12.5MiB/s;;;0", [m("rate", 12.5, "MiB/s", None, None, 0)], id="lenient with other units"),
    pytest.param("temp=45°C", [m("temp", 45, "°C")], id="non-ASCII unit"),
    pytest.param("v=0,5", [m("v", 0.5)], id="comma as decimal mark (locale)"),
    pytest.param("big=1.5e3", [m("big", 1500)], id="exponent"),
    pytest.param("size=3B;;;0MB;10MB", [m("size", 3, "B", None, None, 0, 10)], id="unit repeated on min/max"),
    pytest.param("", [], id="empty"),
    pytest.param("   ", [], id="blank"),
    pytest.param("a=1\tb=2", [m("a", 1), m("b", 2)], id="tab separated"),
    pytest.param("ok=1 garbage b=2", [m("ok", 1), m("b", 2)], id="a word without = is skipped"),
    pytest.param("a= b=2", [m("b", 2)], id="empty value is skipped"),
    pytest.param("a=x b=2", [m("b", 2)], id="non-numeric value is skipped"),
    pytest.param("a=1.2.3 b=2", [m("b", 2)], id="two decimal points is skipped"),
    pytest.param("=5 b=2", [m("b", 2)], id="empty label is skipped"),
    pytest.param("a=1;2;3;4;5;6 b=2", [m("b", 2)], id="six fields is skipped"),
    pytest.param("a=1;;;zero;ten", [m("a", 1)], id="unreadable min/max become None"),
    pytest.param("'a b'x=1 c=2", [m("c", 2)], id="text between quoted label and = is skipped"),
    pytest.param("a=1 'unterminated=2", [m("a", 1)], id="unterminated quote ends the perfdata"),
]


@pytest.mark.parametrize(("text", "expected"), PERFDATA)
def test_parse_perfdata(text: str, expected: list[Metric]) -> None:
    metrics, _ = parse_perfdata(text)
    assert metrics == expected


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        pytest.param("a=1 b=2", [], id="clean"),
        pytest.param("a=1 garbage", ["not a perfdata item: 'garbage'"], id="a word"),
        pytest.param("a=x", ["'a': not a value: 'x'"], id="bad value"),
        pytest.param("a=1;2;3;4;5;6", ["'a': too many fields in '1;2;3;4;5;6'"], id="too many fields"),
        pytest.param("'x", ["unterminated quoted label: \"'x\""], id="unterminated quote"),
    ],
)
def test_problems_say_what_was_skipped(text: str, problems: list[str]) -> None:
    assert parse_perfdata(text)[1] == problems


# The example of the Nagios plugin API documentation: perfdata on the first line and after the first
# `|` of the long output, where every later line is perfdata.
NAGIOS_DOC_EXAMPLE = """\
DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968
/ 15272 MB (77%);
/boot 68 MB (69%);
/home 69357 MB (27%);
/var/log 819 MB (84%); | /boot=68MB;88;93;0;98
/home=69357MB;253404;253409;0;253414
/var/log=818MB;970;975;0;980
"""

OUTPUTS = [
    pytest.param(
        NAGIOS_DOC_EXAMPLE,
        "DISK OK - free space: / 3326 MB (56%);",
        "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%);",
        ["/", "/boot", "/home", "/var/log"],
        id="the plugin API example",
    ),
    pytest.param(
        "LOAD OK - total load average: 0.17, 0.20, 0.10|load1=0.170;5.000;10.000;0; load5=0.200;4.000;8.000;0;\n",
        "LOAD OK - total load average: 0.17, 0.20, 0.10",
        "",
        ["load1", "load5"],
        id="one line with perfdata, no space before |",
    ),
    pytest.param("CRITICAL: hello there\n", "CRITICAL: hello there", "", [], id="one line, no perfdata"),
    pytest.param(
        "WARNING - 2 problems\nfirst problem\nsecond problem\n",
        "WARNING - 2 problems",
        "first problem\nsecond problem",
        [],
        id="long output without perfdata",
    ),
    pytest.param(
        "OK\nline 2\n| a=1 b=2\nc=3\n",
        "OK",
        "line 2",
        ["a", "b", "c"],
        id="perfdata starting on a line of its own",
    ),
    pytest.param(
        "OK | a=1\n\ndetail\n\n",
        "OK",
        "detail",
        ["a"],
        id="blank lines around the long output are dropped",
    ),
    pytest.param("OK\r\nmore\r\n", "OK", "more", [], id="CRLF line ends"),
    pytest.param("| a=1", "", "", ["a"], id="perfdata only"),
    pytest.param("", "", "", [], id="empty"),
    pytest.param(
        "OK | a=1 | b=2",
        "OK",
        "",
        ["a", "b"],
        id="a second | on the first line is skipped",
    ),
]


@pytest.mark.parametrize(("text", "summary", "details", "names"), OUTPUTS)
def test_parse_output(text: str, summary: str, details: str, names: list[str]) -> None:
    got_summary, got_details, metrics = parse_output(text)
    assert (got_summary, got_details, [metric.name for metric in metrics]) == (summary, details, names)


def test_plugin_output_keeps_the_problems() -> None:
    out = PluginOutput.parse("OK | a=1 b=oops")
    assert (out.summary, [x.name for x in out.metrics], out.problems) == ("OK", ["a"], ["'b': not a value: 'oops'"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab' =;|.,-0123456789U%Bs~@:\n\t"), max_size=60))
def test_never_raises_on_any_text(text: str) -> None:
    summary, details, metrics = parse_output(text)
    assert "\n" not in summary
    assert all(isinstance(metric, Metric) for metric in metrics)
