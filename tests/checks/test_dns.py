"""The `dns` check with the system resolver, on names that never need a query to leave the machine."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
import yaml

from ce_agent.checks.dns import DnsCheck
from ce_agent.contracts import Check, Status
from ce_agent.options import convert_options
from tests.checks.netservers import UNRESOLVABLE

MakeCheck = Callable[..., Check]

# localhost is 127.0.0.1 in every /etc/hosts (and in glibc when it is not); IP literals resolve to
# themselves: none of these asks a nameserver. "localhost" with family ipv6 is left out because an
# /etc/hosts without ::1 would send that question to DNS.
FOUND = re.compile(r"^(?P<name>\S+) resolves to (?P<addresses>.+) in (?P<seconds>\d+\.\d{3})s(?P<rest>.*)$")


@pytest.mark.parametrize(
    ("options", "status", "includes", "rest"),
    [
        pytest.param({"name": "localhost"}, Status.OK, ["127.0.0.1"], "", id="localhost"),
        pytest.param({"name": "localhost", "family": "ipv4"}, Status.OK, ["127.0.0.1"], "", id="ipv4 only"),
        pytest.param({"name": "localhost", "expect": "127.0.0.1"}, Status.OK, ["127.0.0.1"], "",
                     id="the expected address is there"),
        pytest.param({"name": "localhost", "expect": ["127.0.0.1"]}, Status.OK, ["127.0.0.1"], "",
                     id="expect as a list"),
        pytest.param({"name": "localhost", "expect": ["127.0.0.1", "10.9.8.7"]}, Status.CRITICAL, ["127.0.0.1"],
                     "; expected 10.9.8.7 is missing", id="every expected address must be there"),
        pytest.param({"name": "localhost", "expect": "192.0.2.1"}, Status.CRITICAL, ["127.0.0.1"],
                     "; expected 192.0.2.1 is missing", id="wrong address"),
        pytest.param({"name": "::1", "expect": "0:0::1"}, Status.OK, ["::1"], "",
                     id="addresses compare in their canonical form"),
        pytest.param({"name": "127.0.0.1", "family": "ipv4"}, Status.OK, ["127.0.0.1"], "",
                     id="an address resolves to itself"),
    ],
)  # fmt: skip
def test_resolving(make_check: MakeCheck, options: dict, status: Status, includes: list[str], rest: str) -> None:
    result = make_check(DnsCheck, options, timeout=5).run()
    assert result.status == status, result.summary
    found = FOUND.match(result.summary)
    assert found, result.summary
    assert found["name"] == options["name"]
    assert set(includes) <= set(found["addresses"].split(", "))
    assert found["rest"] == rest
    [metric] = result.metrics
    assert (metric.name, metric.unit, dict(metric.labels)) == ("dns_lookup_seconds", "s", {"name": options["name"]})
    assert metric.value == pytest.approx(float(found["seconds"]), abs=0.001)


@pytest.mark.parametrize(
    ("options", "summary"),
    [
        pytest.param({"name": UNRESOLVABLE}, f"{UNRESOLVABLE}: name not found (Name or service not known)",
                     id="no such name"),
        pytest.param({"name": "127.0.0.1", "family": "ipv6"},
                     "127.0.0.1: ipv6 address not found (Address family for hostname not supported)",
                     id="no address of the family asked for"),
    ],
)  # fmt: skip
def test_not_found_is_critical(make_check: MakeCheck, options: dict, summary: str) -> None:
    result = make_check(DnsCheck, options, timeout=5).run()
    assert (result.status, result.summary, result.metrics) == (Status.CRITICAL, summary, [])


def test_a_lookup_that_outlasts_the_timeout_is_abandoned(make_check: MakeCheck) -> None:
    # a zero timeout leaves no time even for /etc/hosts: the worker thread is not waited for, and
    # an answer that arrives anyway (the thread won the race) is too late all the same
    started = time.monotonic()
    result = make_check(DnsCheck, {"name": "localhost"}, timeout=0).run()
    assert time.monotonic() - started < 0.5
    assert (result.status, result.summary) == (Status.CRITICAL, "localhost: no answer, timed out after 0s")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'name'", id="name is required"),
        pytest.param({"name": "a..b"}, "name 'a..b' is not a valid host name", id="empty label"),
        pytest.param({"name": "localhost", "expect": "localhost"}, "expect: 'localhost' is not an IP address",
                     id="expect holds addresses"),
        pytest.param({"name": "localhost", "family": "ipv5"}, "option 'family'", id="unknown family"),
        pytest.param({"name": "localhost", "server": "1.1.1.1"}, "unknown option 'server'",
                     id="no server option: the system resolver is used"),
    ],
)  # fmt: skip
def test_invalid_options(raw: dict, error: str) -> None:
    _, errors = convert_options(DnsCheck.Options, raw)
    assert errors and error in errors[0].message, errors


def test_examples_are_valid_playbook_tasks() -> None:
    tasks = yaml.safe_load(DnsCheck.EXAMPLES)
    assert tasks
    for task in tasks:
        _, errors = convert_options(DnsCheck.Options, task["dns"])
        assert not errors, (task["name"], errors)
