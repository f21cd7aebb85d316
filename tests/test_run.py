"""`ce-agent run`: one pass over the selected tasks, a report, and the worst status as exit code."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.conftest import Agent

INVENTORY = """\
all:
  vars:
    greeting: hello
  hosts:
    localhost: {}
  children:
    web:
      vars: {tier: front}
      hosts:
        web1: {address: 127.0.0.1}
        web2: {address: 127.0.0.1}
"""


def playbook(agent: Agent, checks: str, hosts: str = "localhost") -> str:
    agent.write("inventory.yml", INVENTORY)
    agent.write("site.yml", f"- name: Test\n  hosts: {hosts}\n  checks:\n" + checks)
    return "site.yml"


@pytest.mark.parametrize(
    "statuses, exit_code, worst",
    [
        pytest.param(["OK", "OK"], 0, "OK", id="all OK"),
        pytest.param(["OK", "WARNING"], 1, "WARNING", id="a warning"),
        pytest.param(["WARNING", "UNKNOWN"], 3, "UNKNOWN", id="unknown outranks warning"),
        pytest.param(["UNKNOWN", "CRITICAL", "WARNING"], 2, "CRITICAL", id="critical outranks unknown"),
    ],
)
def test_exit_code_is_the_worst_status(agent: Agent, statuses: list[str], exit_code: int, worst: str) -> None:
    checks = "".join(f"    - name: c{i}\n      fixed: {{status: {s}}}\n" for i, s in enumerate(statuses))
    ran = agent("run", playbook(agent, checks), "-i", "inventory.yml", "--format", "json")
    assert ran.code == exit_code, ran.err
    report = ran.json()
    assert report["worst"] == worst
    assert report["exit_code"] == exit_code
    assert [r["status"] for r in report["results"]] == statuses


def test_json_report_shape(agent: Agent) -> None:
    checks = """\
    - name: Unknown value
      fixed: {status: OK, summary: "all good", value: null}
  collectors:
    - name: Numbers
      constant: {value: 7}
"""
    ran = agent("run", playbook(agent, checks), "-i", "inventory.yml", "--format", "json")
    assert ran.code == 0, ran.err
    assert "NaN" not in ran.out
    report = ran.json()
    assert report["version"] == 1
    (result,) = report["results"]
    assert {k: result[k] for k in ("play", "host", "name", "plugin", "status", "code", "summary")} == {
        "play": "Test", "host": "localhost", "name": "Unknown value", "plugin": "fixed",
        "status": "OK", "code": 0, "summary": "all good",
    }
    assert result["duration_s"] >= 0
    assert result["metrics"] == [
        {"name": "fixed_value", "value": None, "unit": "", "labels": {}, "warn": None, "crit": None, "min": None, "max": None}
    ]
    assert report["metrics"] == [
        {"name": "constant_value", "value": 7.0, "unit": "", "labels": {"source": "test"}, "warn": None,
         "crit": None, "min": None, "max": None, "host": "localhost", "play": "Test", "collector": "Numbers"}
    ]
    assert report["notifications"] == []


def test_text_report_has_a_row_per_check(agent: Agent) -> None:
    checks = """\
    - name: First
      fixed: {status: OK, summary: "first is fine"}
    - name: Second
      fixed: {status: CRITICAL, summary: "second is down"}
"""
    ran = agent("run", playbook(agent, checks, hosts="web"), "-i", "inventory.yml")
    assert ran.code == 2
    lines = ran.out.splitlines()
    assert lines[0] == "PLAY [Test]"
    assert lines[1].strip() == "web1"
    assert "OK" in lines[2] and "First" in lines[2] and "first is fine" in lines[2]
    assert "CRITICAL" in lines[3] and "second is down" in lines[3]
    assert lines[4].strip() == "web2"
    assert lines[-1].startswith("SUMMARY  ok=2 warning=0 critical=2 unknown=0  worst=CRITICAL (exit 2)")


def test_a_plugin_that_raises_is_unknown_with_its_message(agent: Agent) -> None:
    checks = """\
    - name: Raiser
      raises: {message: "disk controller on fire"}
    - name: Deep
      raises: {recurse: true}
    - name: Fine
      fixed: {}
"""
    ran = agent("run", playbook(agent, checks), "-i", "inventory.yml", "--format", "json")
    assert ran.code == 3
    results = {r["name"]: r for r in ran.json()["results"]}
    assert results["Raiser"]["status"] == "UNKNOWN"
    assert results["Raiser"]["summary"] == "RuntimeError: disk controller on fire"
    assert results["Raiser"]["details"].startswith("Traceback (most recent call last)")
    assert 'raise RuntimeError(self.options.message)' in results["Raiser"]["details"]
    assert results["Deep"]["status"] == "UNKNOWN"
    assert "recursion" in results["Deep"]["summary"]
    assert results["Fine"]["status"] == "OK"
    assert "Traceback" not in ran.err


def test_a_hanging_python_plugin_times_out_and_the_others_finish(agent: Agent) -> None:
    checks = """\
    - name: Sleeper
      hangs: {}
      timeout: 1s
    - name: Fine
      fixed: {}
"""
    started = time.monotonic()
    ran = agent("run", playbook(agent, checks), "-i", "inventory.yml", "--format", "json")
    elapsed = time.monotonic() - started
    assert ran.code == 3
    results = {r["name"]: r for r in ran.json()["results"]}
    assert results["Sleeper"]["summary"] == "timed out after 1s"
    assert results["Fine"]["status"] == "OK"
    assert elapsed < 10


def test_a_command_that_ignores_sigterm_is_killed_with_its_children(agent: Agent) -> None:
    script = agent.write("stubborn.sh", """\
        #!/bin/sh
        trap '' TERM
        sleep 300 &
        echo "started child $!"
        sleep 300
        """)
    script.chmod(0o755)
    marker = str(script)
    checks = f"""\
    - name: Stubborn
      command: {{argv: [{marker}]}}
      timeout: 1s
"""
    ran = agent("run", playbook(agent, checks), "-i", "inventory.yml", "--format", "json")
    assert ran.code == 3
    (result,) = ran.json()["results"]
    assert result["status"] == "UNKNOWN"
    assert result["summary"] == "timed out after 1s"
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
        left += [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:2] == ["sleep", "300"]]
        if not left:
            break
        time.sleep(0.1)
    assert not left, left


def test_concurrency_is_bounded_by_forks(agent: Agent) -> None:
    checks = "".join(f"    - name: s{i}\n      command: {{argv: [sleep, '0.5']}}\n" for i in range(4))
    path = playbook(agent, checks)
    started = time.monotonic()
    assert agent("run", path, "-i", "inventory.yml", "--forks", "4").code == 0
    parallel = time.monotonic() - started
    started = time.monotonic()
    assert agent("run", path, "-i", "inventory.yml", "--forks", "1").code == 0
    serial = time.monotonic() - started
    assert serial - parallel > 1.0, (serial, parallel)


@pytest.mark.parametrize(
    "args, expected",
    [
        pytest.param([], ["a@localhost", "b@localhost", "c@localhost"], id="everything"),
        pytest.param(["--tags", "disk"], ["a@localhost"], id="--tags"),
        pytest.param(["--tags", "disk,net"], ["a@localhost", "b@localhost"], id="--tags with two tags"),
        pytest.param(["--skip-tags", "disk"], ["b@localhost", "c@localhost"], id="--skip-tags"),
        pytest.param(["--limit", "web1"], ["a@web1", "b@web1", "c@web1"], id="--limit a host"),
        pytest.param(["--limit", "web:!web2"], ["a@web1", "b@web1", "c@web1"], id="--limit a pattern"),
    ],
)
def test_selection(agent: Agent, args: list[str], expected: list[str]) -> None:
    checks = """\
    - {name: a, fixed: {}, tags: [disk]}
    - {name: b, fixed: {}, tags: [net]}
    - {name: c, fixed: {}}
"""
    hosts = "web" if "--limit" in args else "localhost"
    ran = agent("run", playbook(agent, checks, hosts=hosts), "-i", "inventory.yml", "--format", "json", *args)
    assert ran.code == 0, ran.err
    assert [f"{r['name']}@{r['host']}" for r in ran.json()["results"]] == expected


def test_variables_reach_options_in_order(agent: Agent) -> None:
    """inventory < play vars < task vars < -e; a single expression keeps its type."""
    agent.write("inventory.yml", INVENTORY)
    agent.write("site.yml", """\
        - name: Vars
          hosts: web1
          vars: {who: play, level: 1}
          checks:
            - name: "{{ greeting }} from {{ who }} on {{ inventory_hostname }} ({{ tier }})"
              fixed: {summary: "{{ who }}/{{ address }}", value: "{{ level }}"}
            - name: task vars
              vars: {who: task}
              fixed: {summary: "{{ who }}"}
        """)
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")
    assert ran.code == 0, ran.err
    first, second = ran.json()["results"]
    assert first["name"] == "hello from play on web1 (front)"
    assert first["summary"] == "play/127.0.0.1"
    assert first["metrics"][0]["value"] == 1.0
    assert second["summary"] == "task"
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json", "-e", "who=cli level=2")
    first, second = ran.json()["results"]
    assert (first["summary"], second["summary"]) == ("cli/127.0.0.1", "cli")


def test_env_and_file_lookups_are_redacted(agent: Agent) -> None:
    agent.write("token.txt", "file-Secret-9876\n")
    checks = """\
    - name: Leaky
      fixed: {status: WARNING, summary: "env={{ env.CE_CANARY }} file={{ file('token.txt') }}"}
"""
    ran = agent("run", playbook(agent, checks), "-i", "inventory.yml", env={"CE_CANARY": "env-Secret-1234"})
    assert ran.code == 1
    assert "env-Secret-1234" not in ran.out + ran.err
    assert "file-Secret-9876" not in ran.out + ran.err
    assert "env=**** file=****" in ran.out


def test_without_an_inventory_only_implicit_localhost_exists(agent: Agent) -> None:
    agent.write("site.yml", "- hosts: localhost\n  checks:\n    - fixed: {}\n")
    ran = agent("run", "site.yml", "--format", "json")
    assert ran.code == 0, ran.err
    assert ran.json()["results"][0]["host"] == "localhost"
    agent.write("site.yml", "- hosts: all\n  checks:\n    - fixed: {}\n")
    ran = agent("run", "site.yml")
    assert ran.code == 3  # as in Ansible, the implicit localhost is not part of 'all'; nothing checked is UNKNOWN
    assert "site.yml:1:10: warning: hosts 'all' matches no hosts; play 'all' is skipped" in ran.err
    assert "warning: no task matched the hosts, --limit and --tags given; nothing was checked" in ran.err


@pytest.mark.parametrize(
    "tags, only, skip, expected",
    [
        pytest.param(set(), set(), set(), True, id="no selection runs everything"),
        pytest.param({"disk"}, {"disk"}, set(), True, id="a named tag"),
        pytest.param({"disk"}, {"net"}, set(), False, id="another tag"),
        pytest.param(set(), {"all"}, set(), True, id="all"),
        pytest.param({"never"}, set(), set(), False, id="never is off by default"),
        pytest.param({"never", "debug"}, {"debug"}, set(), True, id="never runs when another of its tags is named"),
        pytest.param({"always"}, {"disk"}, set(), True, id="always runs whatever is selected"),
        pytest.param({"always"}, set(), {"always"}, False, id="always skipped by name"),
        pytest.param({"always"}, set(), {"all"}, True, id="always survives --skip-tags all"),
        pytest.param({"disk"}, {"tagged"}, set(), True, id="tagged selects tasks with tags"),
        pytest.param(set(), {"tagged"}, set(), False, id="tagged leaves out untagged tasks"),
        pytest.param(set(), {"untagged"}, set(), True, id="untagged selects tasks without tags"),
        pytest.param({"disk"}, {"untagged"}, set(), False, id="untagged leaves out tagged tasks"),
        pytest.param({"disk"}, set(), {"tagged"}, False, id="skip tagged"),
        pytest.param(set(), set(), {"untagged"}, False, id="skip untagged"),
        pytest.param({"disk"}, set(), {"disk"}, False, id="skip a named tag"),
    ],
)
def test_tag_selection_follows_ansible(tags: set[str], only: set[str], skip: set[str], expected: bool) -> None:
    from ce_agent.plan import selected_by_tags

    assert selected_by_tags(tags, only, skip) is expected


def test_sigterm_stops_the_run_and_its_commands(agent: Agent) -> None:
    import os
    import signal
    import subprocess
    import sys

    marker = "77.123"
    agent.write("inventory.yml", INVENTORY)
    agent.write("site.yml", f"- hosts: localhost\n  checks:\n    - command: {{argv: [sleep, '{marker}']}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "ce_agent", "run", "site.yml"], cwd=agent.cwd,
                            env={**os.environ, "PYTHONPATH": str(agent.pythonpath[0])},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(
        marker in (p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    time.sleep(0.2)
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
    assert b"Traceback" not in proc.stderr.read()


@pytest.mark.parametrize(
    "args",
    [pytest.param(["--tags", "nosuchtag"], id="a tag nothing has"), pytest.param(["--limit", "web"], id="a limit outside the play")],
)
def test_a_run_that_checks_nothing_is_unknown(agent: Agent, args: list[str]) -> None:
    ran = agent("run", playbook(agent, "    - fixed: {}\n"), "-i", "inventory.yml", *args)
    assert ran.code == 3
    assert "nothing was checked" in ran.err


def test_exclusion_only_limit_starts_from_all(agent: Agent) -> None:
    ran = agent("run", playbook(agent, "    - fixed: {}\n", hosts="all"), "-i", "inventory.yml", "--limit", "!web1",
                "--format", "json")
    assert [r["host"] for r in ran.json()["results"]] == ["localhost", "web2"]


@pytest.mark.parametrize(
    "code, status", [pytest.param(2, "CRITICAL", id="2 is CRITICAL"), pytest.param(7, "UNKNOWN", id="7 is UNKNOWN")]
)
def test_a_plain_int_status_is_read_as_an_exit_code(agent: Agent, code: int, status: str) -> None:
    ran = agent("run", playbook(agent, f"    - exitcode: {{code: {code}}}\n"), "-i", "inventory.yml", "--format", "json")
    assert ran.json()["results"][0]["status"] == status
    assert "Traceback" not in ran.err


def test_every_line_of_a_multi_line_secret_is_masked(agent: Agent) -> None:
    agent.write("multi.txt", "line1pass\nSECONDLINE-TOKEN\n")
    checks = """\
    - name: Leaky
      command: {argv: [sh, -c, 'printf "CRITICAL - %s\\n" "$1"; exit 2', x, "{{ file('multi.txt') }}"]}
"""
    ran = agent("run", playbook(agent, checks), "-i", "inventory.yml", "-v")
    assert ran.code == 2
    assert "line1pass" not in ran.out and "SECONDLINE-TOKEN" not in ran.out, ran.out


def test_a_huge_template_result_is_refused(agent: Agent) -> None:
    ran = agent("validate", playbook(agent, "    - disk: {path: \"{{ 'a' * 10**9 }}\"}\n"), "-i", "inventory.yml")
    assert ran.code == 2
    assert "the result would be longer than 1000000" in ran.err
