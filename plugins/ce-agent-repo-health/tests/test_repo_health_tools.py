"""`tools`: programs on PATH, and minimum versions read from `NAME --version`."""

from __future__ import annotations

import time

import pytest

from ce_agent.contracts import Status
from ce_agent_repo_health.tools import ToolsCheck

#: fake programs: name -> shell script body
FAKES = {
    "gitlike": 'echo "gitlike version 2.39.5"',
    "exact": 'echo "exact 2.30.0"',
    "old": 'echo "old version 2.3"',
    "stderr-only": 'echo "stderr-only v1.8.2 (build 7)" >&2; exit 1',
    "bashlike": 'echo "GNU bashlike, version 5.2.15(1)-release (x86_64-pc-linux-gnu)"',
    "undotted-first": 'echo "tool 7 build 12, release 3.4.5"',
    "silent": 'echo "usage: silent [options]"',
    "slow": "sleep 30",
}


@pytest.fixture(autouse=True)
def fakes(fake_bin) -> None:
    for name, script in FAKES.items():
        fake_bin(name, script)


@pytest.mark.parametrize(
    ("options", "status", "summary"),
    [
        pytest.param({"names": ["sh", "gitlike"]}, Status.OK, "2 tools found", id="all-on-path"),
        pytest.param(
            {"names": ["sh", "no-such-tool-xyz"]}, Status.CRITICAL, "no-such-tool-xyz not found on PATH", id="missing"
        ),
        pytest.param(
            {"names": ["gitlike"], "min_versions": {"gitlike": "2.30"}},
            Status.OK,
            "1 tools found (gitlike 2.39.5)",
            id="newer-than-minimum",
        ),
        pytest.param(
            {"names": ["exact"], "min_versions": {"exact": "2.30"}}, Status.OK, "exact 2.30.0", id="equal-trailing-zero"
        ),
        pytest.param(
            {"names": ["gitlike"], "min_versions": {"gitlike": 3}},
            Status.CRITICAL,
            "gitlike 2.39.5 is older than 3",
            id="bare-integer-minimum",
        ),
        pytest.param(
            {"names": ["old"], "min_versions": {"old": "2.30"}},
            Status.CRITICAL,
            "old 2.3 is older than 2.30",
            id="numeric-not-textual-comparison",
        ),
        pytest.param(
            {"names": ["stderr-only"], "min_versions": {"stderr-only": "1.8"}},
            Status.OK,
            "stderr-only 1.8.2",
            id="version-on-stderr-nonzero-exit",
        ),
        pytest.param(
            {"names": ["bashlike"], "min_versions": {"bashlike": "5.3"}},
            Status.CRITICAL,
            "bashlike 5.2.15 is older than 5.3",
            id="first-dotted-version",
        ),
        pytest.param(
            {"names": ["undotted-first"], "min_versions": {"undotted-first": "3.4.5"}},
            Status.OK,
            "undotted-first 3.4.5",
            id="skips-plain-numbers",
        ),
        pytest.param(
            {"names": ["sh"], "min_versions": {"gitlike": "3"}},
            Status.CRITICAL,
            "gitlike 2.39.5 is older than 3",
            id="min-versions-names-are-required-too",
        ),
        pytest.param(
            {"names": ["silent"], "min_versions": {"silent": "1.0"}},
            Status.UNKNOWN,
            "silent --version shows no version number (usage: silent [options])",
            id="no-version-is-unknown",
        ),
        pytest.param(
            {"names": ["no-such-tool-xyz", "silent"], "min_versions": {"silent": "1.0"}},
            Status.CRITICAL,
            "no-such-tool-xyz not found on PATH; silent --version shows no version",
            id="worst-wins-and-all-listed",
        ),
    ],
)
def test_tools(run_check, options, status, summary) -> None:
    result = run_check(ToolsCheck, **options)

    assert result.status is status, result.summary
    assert summary in result.summary


def test_a_real_program(run_check, monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")

    assert run_check(ToolsCheck, names=["git"], min_versions={"git": "1.0"}).status is Status.OK
    assert run_check(ToolsCheck, names=["git"], min_versions={"git": "999"}).status is Status.CRITICAL


def test_found_metric_per_tool(run_check) -> None:
    result = run_check(ToolsCheck, names=["gitlike", "no-such-tool-xyz"])

    assert {m.labels["tool"]: m.value for m in result.metrics} == {"gitlike": 1, "no-such-tool-xyz": 0}


def test_a_hanging_version_command_is_stopped_at_the_task_timeout(run_check) -> None:
    started = time.monotonic()
    result = run_check(ToolsCheck, timeout=0.3, names=["slow"], min_versions={"slow": "1"})

    assert time.monotonic() - started < 3
    assert result.status is Status.UNKNOWN
    assert "slow --version: " in result.summary and "timed out" in result.summary


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'names'", id="names-required"),
        pytest.param({"names": []}, "length >= 1", id="names-not-empty"),
        pytest.param({"names": ["git"], "min_versions": {"git": "2.x"}}, "matching regex", id="dotted-numbers-only"),
        pytest.param({"names": ["git"], "min_versions": {"git": 2.3}}, "got float", id="unquoted-2.30-is-refused"),
        pytest.param({"names": ["git"], "min_versions": {"git": ["2"]}}, "got array", id="version-is-text"),
    ],
)
def test_invalid_options(option_errors, raw, error) -> None:
    assert error in option_errors(ToolsCheck, **raw)[0]
