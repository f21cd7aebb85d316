"""The `tcp` check against real servers on 127.0.0.1: connect, send, expect, refused, timeouts."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import yaml

from ce_agent.checks.tcp import TcpCheck, reply_matches
from ce_agent.contracts import Check, Status, TaskContext
from ce_agent.options import convert_options
from tests.checks.netservers import UNRESOLVABLE, ipv6_loopback, refused_port, silent_port, tcp_server

MakeCheck = Callable[..., Check]

SMTP_BANNER = b"220 mail.example ESMTP ready\r\n"
REDIS_LIKE = {b"PING\r\n": b"+PONG\r\n", b"INFO\r\n": b"$12\r\nrole:master\r\n"}


@pytest.mark.parametrize(
    ("options", "status", "summary_end"),
    [
        pytest.param({}, Status.OK, "", id="connecting is enough without expect"),
        pytest.param({"expect": "220"}, Status.OK, ", received '220 mail.example ESMTP ready'", id="banner"),
        pytest.param({"expect": r"^220 \S+ ESMTP"}, Status.OK, ", received '220 mail.example ESMTP ready'",
                     id="expect as a regular expression"),
        pytest.param({"send": "PING\r\n", "expect": "+PONG"}, Status.OK, ", received '220 mail.example ESMTP ready'",
                     id="send then expect a literal that is not a valid regex"),
        pytest.param({"expect": "554"}, Status.CRITICAL, ", but timed out after 0.3s waiting for '554' "
                     "(received 30 bytes: '220 mail.example ESMTP ready')", id="wrong banner"),
        pytest.param({"warning": 5, "critical": 10}, Status.OK, "", id="fast enough"),
        pytest.param({"warning": "~:0"}, Status.WARNING, "", id="connect time above the warning threshold"),
        pytest.param({"warning": "~:0", "critical": "~:0"}, Status.CRITICAL, "",
                     id="connect time above the critical threshold"),
    ],
)  # fmt: skip
def test_talking_to_a_server(make_check: MakeCheck, options: dict, status: Status, summary_end: str) -> None:
    with tcp_server(banner=SMTP_BANNER, replies=REDIS_LIKE) as port:
        result = make_check(TcpCheck, {"host": "127.0.0.1", "port": port, **options}, timeout=0.3).run()
    assert result.status == status, result.summary
    assert result.summary.startswith(f"127.0.0.1:{port} connected in ")
    assert result.summary.endswith(f"s{summary_end}")
    [metric] = result.metrics
    assert (metric.name, metric.unit, dict(metric.labels)) == (
        "tcp_connect_seconds",
        "s",
        {"host": "127.0.0.1", "port": str(port)},
    )
    assert 0 < metric.value < 0.3


def test_the_reply_to_what_was_sent_is_matched(make_check: MakeCheck) -> None:
    with tcp_server(replies=REDIS_LIKE) as port:
        result = make_check(
            TcpCheck, {"host": "127.0.0.1", "port": port, "send": "PING\r\n", "expect": "+PONG"}, timeout=2
        ).run()
    assert (result.status, result.summary.split(", ")[-1]) == (Status.OK, "received '+PONG'")


def test_eof_before_the_expected_reply(make_check: MakeCheck) -> None:
    with tcp_server(banner=b"bye\r\n", hang_up=True) as port:
        result = make_check(TcpCheck, {"host": "127.0.0.1", "port": port, "expect": "hello"}, timeout=2).run()
    assert result.status == Status.CRITICAL
    assert result.summary.endswith("s, but 'hello' not found in the 5 bytes received: 'bye'"), result.summary


@pytest.mark.parametrize(
    ("port_maker", "timeout", "reason"),
    [
        pytest.param(refused_port, 2.0, "connection refused", id="nothing listening"),
        pytest.param(silent_port, 0.2, "timed out after 0.2s waiting for 'hello' (received 0 bytes)",
                     id="listening but silent"),
    ],
)  # fmt: skip
def test_unreachable_or_silent_is_critical(
    make_check: MakeCheck, port_maker: Callable, timeout: float, reason: str
) -> None:
    with port_maker() as port:
        started = time.monotonic()
        result = make_check(TcpCheck, {"host": "127.0.0.1", "port": port, "expect": "hello"}, timeout=timeout).run()
        elapsed = time.monotonic() - started
    assert result.status == Status.CRITICAL
    assert result.summary.endswith(reason), result.summary
    assert elapsed < timeout + 0.5


def test_a_host_that_does_not_resolve_is_critical(make_check: MakeCheck) -> None:
    result = make_check(TcpCheck, {"host": UNRESOLVABLE, "port": 80}, timeout=2).run()
    assert (result.status, result.summary) == (
        Status.CRITICAL,
        f"{UNRESOLVABLE}:80: cannot resolve host (Name or service not known)",
    )


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_address_is_shown_in_brackets(make_check: MakeCheck) -> None:
    with refused_port("::1") as port:
        result = make_check(TcpCheck, {"host": "::1", "port": port}, timeout=2).run()
    assert (result.status, result.summary) == (Status.CRITICAL, f"[::1]:{port}: connection refused")


def test_host_defaults_to_the_hosts_address() -> None:
    with tcp_server(banner=b"hi\r\n") as port:
        options, errors = convert_options(TcpCheck.Options, {"port": port, "expect": "hi"})
        assert not errors
        context = TaskContext(task="t", host="web1", hostvars={"address": "127.0.0.1"}, timeout=2)
        result = TcpCheck(options, context).run()
    assert (result.status, result.metrics[0].labels["host"]) == (Status.OK, "127.0.0.1")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'port'", id="port is required"),
        pytest.param({"port": 0}, "option 'port'", id="port 0"),
        pytest.param({"port": 65536}, "option 'port'", id="port above 65535"),
        pytest.param({"port": 80, "warning": "fast"}, "option 'warning'", id="threshold must be a range"),
    ],
)
def test_invalid_options(raw: dict, error: str) -> None:
    _, errors = convert_options(TcpCheck.Options, raw)
    assert errors and error in errors[0].message


@pytest.mark.parametrize(
    ("expect", "received", "matches"),
    [
        pytest.param("+PONG", "+PONG\r\n", True, id="literal with a regex metacharacter"),
        pytest.param(r"SSH-2\.0-\w+", "SSH-2.0-OpenSSH_9.2\r\n", True, id="regex"),
        pytest.param("a.c", "abc", True, id="a regex that is also a literal matches as a regex"),
        pytest.param("+PONG", "-ERR\r\n", False, id="no match"),
        pytest.param("[unclosed", "[unclosed bracket", True, id="invalid regex still matches literally"),
        pytest.param("[unclosed", "nothing", False, id="invalid regex, no literal match"),
    ],
)
def test_expect_is_a_string_or_a_regex(expect: str, received: str, matches: bool) -> None:
    assert reply_matches(expect, received) is matches


def test_examples_are_valid_playbook_tasks() -> None:
    tasks = yaml.safe_load(TcpCheck.EXAMPLES)
    assert tasks
    for task in tasks:
        _, errors = convert_options(TcpCheck.Options, task["tcp"])
        assert not errors, (task["name"], errors)
