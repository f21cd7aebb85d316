"""Every mistake on the command line is one `error:` line naming what to look at, and exit 2."""

from __future__ import annotations

import pytest

from tests.conftest import Agent


@pytest.mark.parametrize("args, message", [
    pytest.param(["baseline", "compare", "--threshold", "abc"],
                 "error: Invalid value for '--threshold': 'abc' is not a valid float. "
                 "(see 'ce-agent baseline compare --help')", id="not-a-number"),
    pytest.param(["run"], "error: Missing argument 'PLAYBOOK...'. (see 'ce-agent run --help')", id="missing-argument"),
    pytest.param(["run", "site.yml", "--nosuch"], "error: No such option: --nosuch (see 'ce-agent run --help')",
                 id="unknown-option"),
    pytest.param(["frobnicate"], "error: No such command 'frobnicate'. (see 'ce-agent --help')", id="unknown-command"),
    pytest.param(["status", "--watch", "soon"], "error: Invalid value for '--watch': 'soon' is not a valid float. "
                 "(see 'ce-agent status --help')", id="bad-watch"),
])
def test_usage_errors_are_one_line_and_exit_2(agent: Agent, args: list[str], message: str) -> None:
    ran = agent(*args)
    assert (ran.code, ran.err.strip(), ran.out) == (2, message, "")


@pytest.mark.parametrize("args", [pytest.param([], id="no-command"), pytest.param(["alerts"], id="no-subcommand")])
def test_a_group_without_a_command_prints_its_help(agent: Agent, args: list[str]) -> None:
    ran = agent(*args)
    assert ran.code == 2 and "Usage: ce-agent" in ran.out + ran.err and "Traceback" not in ran.err


def test_a_state_database_that_fails_midway_is_one_line_and_exit_3(agent: Agent) -> None:
    import sqlite3

    agent.write("site.yml", "- hosts: localhost\n  checks:\n    - fixed: {status: OK}\n  slos:\n"
                            "    - {name: up, objective: 99, window: 1d, sli: {check: fixed}}\n")
    assert agent("run", "site.yml").code == 0
    with sqlite3.connect(agent.cwd / "state" / "state.db") as db:  # a table the run writes to goes missing
        db.execute("DROP TABLE slo_status")
    ran = agent("run", "site.yml")
    assert ran.code == 3 and "Traceback" not in ran.err
    assert ran.err.strip().splitlines()[-1].startswith("error: state database ") and "slo_status" in ran.err
