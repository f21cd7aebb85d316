"""Plugins through entry points: discovery, `plugins list/doc`, broken and duplicate packages, the docs' example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_PLUGINS, ROOT, Agent, pip_install_target

BUILTIN_CHECKS = ["command", "cpu", "disk", "dns", "file", "heartbeat", "http", "load", "memory", "process",
                  "systemd_unit", "tcp", "tls_cert"]


def test_plugins_list_shows_builtins_and_installed_packages(agent: Agent) -> None:
    ran = agent("plugins", "list", "--format", "json")
    assert ran.code == 0, ran.err
    rows = {(r["kind"], r["name"]): r for r in ran.json()["plugins"]}
    for name in BUILTIN_CHECKS:
        assert rows[("check", name)]["distribution"] == "ce-agent"
        assert rows[("check", name)]["status"] == "ok", rows[("check", name)]
    for kind, name in [("collector", "system"), ("collector", "process"), ("collector", "directory_size"),
                       ("notifier", "apprise"), ("notifier", "console"), ("notifier", "file")]:
        assert rows[(kind, name)]["status"] == "ok", rows[(kind, name)]
    fixed = rows[("check", "fixed")]
    assert (fixed["distribution"], fixed["version"]) == ("ce-agent-testplugins", "1.2.3")
    assert fixed["description"] == "Returns the status and summary it is given."
    broken = rows[("check", "broken")]
    assert broken["distribution"] == "ce-agent-broken"
    assert broken["status"].startswith("error: ce-agent-broken 0.0.1 failed to load ce_agent_broken:BrokenCheck")
    assert "ModuleNotFoundError" in broken["status"]


def test_plugins_list_refuses_an_unknown_format(agent: Agent) -> None:
    ran = agent("plugins", "list", "--format", "xml")
    assert ran.code == 2 and "--format must be text or json" in ran.err


def test_plugins_list_text(agent: Agent) -> None:
    ran = agent("plugins", "list", "--kind", "notifier")
    assert ran.code == 0
    names = [line.split()[1] for line in ran.out.splitlines()[1:]]
    assert names == ["alertmanager", "apprise", "console", "file"]


def test_plugins_doc_shows_options_defaults_and_examples(agent: Agent) -> None:
    ran = agent("plugins", "doc", "disk")
    assert ran.code == 0, ran.err
    assert ran.out.startswith("disk (check, ce_agent.checks.disk.DiskCheck)")
    assert re.search(r"^  warning  \(threshold, default: \"80\"\)$", ran.out, re.M), ran.out
    assert re.search(r"^  critical  \(threshold, default: \"90\"\)$", ran.out, re.M)
    assert "EXAMPLES" in ran.out and "disk: {path: /" in ran.out


def test_plugins_doc_of_every_builtin(agent: Agent) -> None:
    for name in [*BUILTIN_CHECKS, "collector/system", "collector/process", "directory_size", "apprise", "console", "notifier/file"]:
        ran = agent("plugins", "doc", name)
        assert ran.code == 0, (name, ran.err)
        assert "OPTIONS" in ran.out and "EXAMPLES" in ran.out, name


@pytest.mark.parametrize(
    "name, message",
    [
        pytest.param("dsik", "no plugin named 'dsik'; did you mean disk?", id="a typo"),
        pytest.param("broken", "check plugin 'broken' cannot be loaded: ce-agent-broken 0.0.1 failed to load", id="broken"),
    ],
)
def test_plugins_doc_errors(agent: Agent, name: str, message: str) -> None:
    ran = agent("plugins", "doc", name)
    assert ran.code == 2
    assert message in ran.err
    assert "Traceback" not in ran.err


def test_a_broken_plugin_breaks_only_the_tasks_that_use_it(agent: Agent) -> None:
    agent.write("site.yml", """\
        - hosts: localhost
          checks:
            - name: fine
              fixed: {}
        - hosts: localhost
          checks:
            - name: uses the broken package
              broken: {}
        """)
    error = (r"check plugin 'broken' cannot be used: ce-agent-broken 0.0.1 failed to load "
             r"ce_agent_broken:BrokenCheck: ModuleNotFoundError: No module named 'ce_agent_missing_dependency'")
    ran = agent("run", "site.yml", "--format", "json")
    assert ran.code == 3  # UNKNOWN: the other check ran and is OK
    assert re.search(r"site.yml:8:7: warning: " + error, ran.err), ran.err
    results = {r["name"]: r for r in ran.json()["results"]}
    assert results["fine"]["status"] == "OK"
    assert results["uses the broken package"]["status"] == "UNKNOWN"
    assert re.fullmatch(error, results["uses the broken package"]["summary"])
    agent.write("inventory.yml", "all:\n  vars:\n    channels:\n      log: {file: {path: alerts.jsonl}}\n"
                "  hosts:\n    localhost: {}\n")
    agent.write("notify.yml", "- hosts: localhost\n  checks:\n    - {name: b, broken: {}, notify: [log]}\n")
    assert agent("run", "notify.yml", "-i", "inventory.yml").code == 3
    assert "[UNKNOWN] b on localhost" in (agent.cwd / "alerts.jsonl").read_text()  # still an alert
    validated = agent("validate", "site.yml")  # validate still calls it an error
    assert validated.code == 2
    assert re.search(r"site.yml:8:7: " + error, validated.err), validated.err


def test_only_the_plugins_a_playbook_names_are_imported(agent: Agent) -> None:
    agent.write("site.yml", "- hosts: localhost\n  checks:\n    - fixed: {}\n")
    agent.write("probe.py", """\
        import sys
        from ce_agent.cli import main
        sys.argv = ["ce-agent", "run", "site.yml"]
        try:
            main()
        except SystemExit:
            pass
        heavy = sorted(m for m in ("apprise", "aiohttp", "prometheus_client", "jinja2", "ce_agent_broken",
                                   "ce_agent.checks.http", "ce_agent.checks.command", "croniter") if m in sys.modules)
        print("IMPORTED", heavy)
        """)
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "probe.py"], cwd=agent.cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(agent.pythonpath[0])})
    assert "IMPORTED []" in proc.stdout, proc.stdout + proc.stderr


def test_duplicate_names_are_an_error(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> None:
    dupe = pip_install_target(tmp_path_factory.mktemp("site-dupe"), FIXTURE_PLUGINS / "ce-agent-dupe")
    agent.pythonpath.append(dupe)
    agent.write("site.yml", "- hosts: localhost\n  checks:\n    - fixed: {}\n")
    ran = agent("run", "site.yml")
    assert ran.code == 2
    assert "site.yml:3:7: check plugin 'fixed' is provided more than once: ce-agent-dupe 0.0.1" in ran.err, ran.err
    assert "ce-agent-testplugins 1.2.3" in ran.err
    listing = agent("plugins", "list", "--format", "json").json()["plugins"]
    assert [r["status"][:40] for r in listing if r["name"] == "fixed"] == ["error: name provided more than once: ce-"] * 2


def _code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, re.S)


def test_the_plugin_in_docs_plugins_md_installs_and_runs(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The walkthrough in docs/plugins.md, followed literally: its files, pip, then ce-agent."""
    doc = (ROOT / "docs" / "plugins.md").read_text()
    toml = next(b for b in _code_blocks(doc, "toml") if "ce-agent-uptime" in b)
    module = next(b for b in _code_blocks(doc, "python") if "class UptimeCheck" in b)
    test = next(b for b in _code_blocks(doc, "python") if "def test_" in b)
    project = tmp_path / "ce-agent-uptime"
    (project / "ce_agent_uptime").mkdir(parents=True)
    (project / "pyproject.toml").write_text(toml.replace('dependencies = ["ce-agent"]', "dependencies = []"))
    (project / "ce_agent_uptime" / "__init__.py").write_text(module)
    (project / "test_uptime.py").write_text(test)
    site = pip_install_target(tmp_path_factory.mktemp("site-uptime"), project)
    agent = Agent(tmp_path, [site])
    listing = agent("plugins", "list", "--kind", "check")
    assert re.search(r"^check\s+uptime\s+ce-agent-uptime 0.1.0\s+Time since boot", listing.out, re.M), listing.out
    assert "min_uptime  (duration, default: \"600s\")" in agent("plugins", "doc", "uptime").out
    agent.write("uptime.yml", "- hosts: localhost\n  checks:\n    - name: No recent reboot\n      uptime: {min_uptime: 1s}\n")
    ran = agent("run", "uptime.yml", "--format", "json")
    assert ran.code == 0, ran.err
    assert ran.json()["results"][0]["summary"].startswith("up for ")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "test_uptime.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
