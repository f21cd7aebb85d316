"""The example playbooks and inventory that ship in the repository validate and run as the README says."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, Agent

NAGIOS = Path("/usr/lib/nagios/plugins/check_dummy")
needs_nagios = pytest.mark.skipif(
    not NAGIOS.exists() and os.environ.get("CE_AGENT_REQUIRE_NAGIOS") != "1",
    reason="Debian's monitoring-plugins are not installed",
)

EXAMPLE_INVENTORY = """\
all:
  vars:
    channels:
      hook: "json://127.0.0.1:9/alerts"
      console: {console: {}}
      log: {file: {path: alerts.jsonl}}
  hosts:
    localhost: {}
  children:
    web:
      hosts:
        web1: {address: 127.0.0.1}
"""


def test_the_readme_main_job(tmp_path: Path) -> None:
    """`ce-agent run playbooks/localhost.yml -i inventory/localhost.yml`, from a copy of the repo files."""
    shutil.copytree(ROOT / "playbooks", tmp_path / "playbooks")
    shutil.copytree(ROOT / "inventory", tmp_path / "inventory")
    agent = Agent(tmp_path)
    ran = agent("run", "playbooks/localhost.yml", "-i", "inventory/localhost.yml", "--format", "json")
    assert ran.code in (0, 1, 2), ran.err  # the machine's health decides; never a usage error or UNKNOWN
    report = ran.json()
    assert {r["status"] for r in report["results"]} <= {"OK", "WARNING", "CRITICAL"}, report["results"]
    assert len(report["results"]) == 7
    assert any(m["name"] == "system_memory_used_percent" for m in report["metrics"])
    problems = [r for r in report["results"] if r["status"] != "OK"]
    if problems:  # whatever is not OK on this machine went to the alert log
        lines = [json.loads(x) for x in (tmp_path / "ce-agent-alerts.jsonl").read_text().splitlines()]
        assert {x["check"] for x in lines} <= {r["name"] for r in problems}


@pytest.mark.parametrize("playbook", sorted(p.name for p in (ROOT / "playbooks" / "examples").glob("*.yml")))
def test_every_example_validates(tmp_path: Path, playbook: str) -> None:
    agent = Agent(tmp_path)
    agent.write("inventory.yml", EXAMPLE_INVENTORY)
    ran = agent("validate", str(ROOT / "playbooks" / "examples" / playbook), "-i", "inventory.yml")
    assert ran.code == 0, ran.err
    assert ran.out.startswith("ok: ")


@needs_nagios
def test_the_nagios_example_runs_real_plugins(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    ran = agent("run", str(ROOT / "playbooks" / "examples" / "nagios.yml"), "--format", "json")
    results = {r["name"]: r for r in ran.json()["results"]}
    assert results["Load"]["summary"].startswith("LOAD ")
    assert {m["name"] for m in results["Load"]["metrics"]} == {"load1", "load5", "load15"}
    assert results["Root disk"]["summary"].startswith("DISK ")
    assert all(r["status"] != "UNKNOWN" for r in results.values()), results


def test_the_channels_example_renders_without_sending(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    agent.write("inventory.yml", EXAMPLE_INVENTORY)
    ran = agent("run", str(ROOT / "playbooks" / "examples" / "channels.yml"), "-i", "inventory.yml", "--check")
    assert ran.code == 1
    assert "(--check: rendered, not sent)" in ran.out
    assert "[WARNING] Always warning (to see the notification) on localhost  -> would send" in ran.out
    assert not (tmp_path / "alerts.jsonl").exists()
