"""The plugin kit: `plugins new` scaffolds that pip-install, are discovered and pass their own tests; ce_agent.testing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import msgspec
import pytest

from ce_agent.contracts import Check, Collector, DeliveryError, Metric, Notifier, Result, Status
from ce_agent.testing import (
    CollectorFailed,
    ValidationFailed,
    assert_metric,
    assert_status,
    sample_notification,
)
from tests.conftest import Agent, pip_install_target
from tests.receivers import Webhook

KINDS = ["check", "collector", "notifier"]
GROUPS = {"check": "ce_agent.checks", "collector": "ce_agent.collectors", "notifier": "ce_agent.notifiers"}


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the folder with ce-agent-kit-check, -collector and -notifier made by `plugins new`, the site they
    are pip-installed into)."""
    projects = tmp_path_factory.mktemp("scaffolds")
    agent = Agent(projects)
    for kind in KINDS:
        ran = agent("plugins", "new", f"kit_{kind}", "--kind", kind, "--dir", ".")
        assert ran.code == 0, ran.err
        assert ran.err == ""
    site = pip_install_target(tmp_path_factory.mktemp("site-kit"), *(projects / f"ce-agent-kit-{k}" for k in KINDS))
    return projects, site


@pytest.mark.parametrize("kind", [pytest.param(k, id=k) for k in KINDS])
def test_the_scaffold_has_the_entry_point_the_class_a_readme_and_a_test(kit: tuple[Path, Path], kind: str) -> None:
    projects, _site = kit
    root = projects / f"ce-agent-kit-{kind}"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "build" not in p.parts
                  and ".egg-info" not in str(p)) == sorted(
        ["pyproject.toml", "README.md", f"ce_agent_kit_{kind}/__init__.py", f"tests/test_kit_{kind}.py"])
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == f"ce-agent-kit-{kind}"
    assert meta["project"]["version"] == "0.1.0"
    assert meta["project"]["dependencies"] == ["ce-agent>=0.1.0"]
    class_name = f"Kit{kind.capitalize()}"  # not KitCheckCheck
    assert meta["project"]["entry-points"][GROUPS[kind]] == {f"kit_{kind}": f"ce_agent_kit_{kind}:{class_name}"}
    assert meta["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    assert f"class {class_name}({kind.capitalize()}):" in (root / f"ce_agent_kit_{kind}" / "__init__.py").read_text()
    readme = (root / "README.md").read_text()
    assert "pip install ce-agent-kit-" + kind in readme and "pytest" in readme and f"kit_{kind}" in readme
    assert "$" not in readme.replace("${", "")  # every template variable was filled in


def test_plugins_list_shows_each_with_its_distribution(kit: tuple[Path, Path], tmp_path: Path) -> None:
    ran = Agent(tmp_path, [kit[1]])("plugins", "list", "--format", "json")
    assert ran.code == 0, ran.err
    rows = {(r["kind"], r["name"]): r for r in ran.json()["plugins"]}
    for kind in KINDS:
        row = rows[(kind, f"kit_{kind}")]
        assert (row["distribution"], row["version"], row["status"]) == (f"ce-agent-kit-{kind}", "0.1.0", "ok"), row


@pytest.mark.parametrize(
    "name, option",
    [
        pytest.param("kit_check", '  path  (str, default: "/")', id="check"),
        pytest.param("kit_collector", '  path  (str, default: "/tmp")', id="collector"),
        pytest.param("kit_notifier", "  url  (str, required)", id="notifier"),
    ],
)
def test_plugins_doc_prints_the_option(kit: tuple[Path, Path], tmp_path: Path, name: str, option: str) -> None:
    ran = Agent(tmp_path, [kit[1]])("plugins", "doc", name)
    assert ran.code == 0, ran.err
    assert option in ran.out.splitlines(), ran.out
    assert "EXAMPLES" in ran.out


def test_a_playbook_using_all_three_validates_and_runs(kit: tuple[Path, Path], tmp_path: Path, webhook: Webhook) -> None:
    agent = Agent(tmp_path, [kit[1]])
    (tmp_path / "data").mkdir()
    agent.write("inventory.yml", f"""\
        all:
          vars:
            channels:
              hook: {{kit_notifier: {{url: "http://127.0.0.1:{webhook.port}/hook"}}}}
          hosts:
            localhost: {{}}
        """)
    agent.write("site.yml", """\
        - hosts: localhost
          checks:
            - name: data exists
              kit_check: {path: data}
            - name: backup exists
              kit_check: {path: missing-backup}
              notify: [hook]
          collectors:
            - kit_collector: {path: data}
        """)
    validated = agent("validate", "site.yml", "-i", "inventory.yml")
    assert validated.code == 0, validated.err
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")
    assert ran.code == 2, ran.err  # CRITICAL: the missing backup
    report = ran.json()
    assert {r["name"]: r["status"] for r in report["results"]} == {"data exists": "OK", "backup exists": "CRITICAL"}
    assert any(m["name"] == "kit_collector_entries" and m["value"] == 0 for m in report["metrics"]), report["metrics"]
    bodies = [r.json() for r in webhook.requests]
    assert [(b["kind"], b["status"], b["check"]) for b in bodies] == [("firing", "CRITICAL", "backup exists")]


@pytest.mark.parametrize("kind", [pytest.param(k, id=k) for k in KINDS])
def test_the_generated_tests_pass(kit: tuple[Path, Path], kind: str) -> None:
    projects, site = kit
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=projects / f"ce-agent-kit-{kind}", capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b[5-9] passed\b", proc.stdout), proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["My-Thing", "--kind", "check"], "use lower-case letters, digits and _, starting with a letter, "
                     "at most 40 characters (did you mean 'my_thing'?)", id="not snake case"),
        pytest.param(["9lives", "--kind", "check"], "starting with a letter", id="a digit first"),
        pytest.param(["x" * 41, "--kind", "check"], "at most 40 characters", id="too long"),
        pytest.param(["timeout", "--kind", "check"], "plugin name 'timeout' is a key of a task itself", id="a task key"),
        pytest.param(["fallback", "--kind", "notifier"], "plugin name 'fallback' is a key of a channel itself",
                     id="a channel key"),
        pytest.param(["disk", "--kind", "check"], "check plugin 'disk' is already provided by ce-agent 0.1.0",
                     id="a built-in"),
        pytest.param(["fixed", "--kind", "check"], "check plugin 'fixed' is already provided by ce-agent-testplugins 1.2.3",
                     id="an installed plugin"),
        pytest.param(["thing", "--kind", "probe"], "--kind must be one of check, collector, notifier, got 'probe'",
                     id="an unknown kind"),
    ],
)
def test_refused_names_and_kinds(agent: Agent, args: list[str], message: str) -> None:
    ran = agent("plugins", "new", *args)
    assert ran.code == 2
    assert ran.err == f"error: {message}\n" or (message in ran.err and len(ran.err.splitlines()) == 1), ran.err
    assert not any(agent.cwd.glob("ce-agent-*"))


def test_a_name_used_by_the_other_kind_is_fine(agent: Agent) -> None:
    ran = agent("plugins", "new", "disk", "--kind", "collector")  # `disk` is a check: kinds have names of their own
    assert ran.code == 0, ran.err
    assert (agent.cwd / "ce-agent-disk" / "ce_agent_disk" / "__init__.py").exists()


def test_refuses_to_overwrite_without_force(agent: Agent) -> None:
    assert agent("plugins", "new", "uptime", "--kind", "check").code == 0
    module = agent.cwd / "ce-agent-uptime" / "ce_agent_uptime" / "__init__.py"
    module.write_text("# my work\n")
    (agent.cwd / "ce-agent-uptime" / "NOTES.md").write_text("mine\n")
    again = agent("plugins", "new", "uptime", "--kind", "check")
    assert again.code == 2
    assert again.err == "error: ce-agent-uptime already exists and is not empty; use --force to overwrite its generated files\n"
    assert module.read_text() == "# my work\n"
    forced = agent("plugins", "new", "uptime", "--kind", "check", "--force")
    assert forced.code == 0, forced.err
    assert "class UptimeCheck(Check):" in module.read_text()
    assert (agent.cwd / "ce-agent-uptime" / "NOTES.md").read_text() == "mine\n"  # not a generated file: kept


def test_rescaffolding_an_installed_plugin_is_not_a_clash(kit: tuple[Path, Path], tmp_path: Path) -> None:
    ran = Agent(tmp_path, [kit[1]])("plugins", "new", "kit_check", "--kind", "check", "--dir", "again")
    assert ran.code == 0, ran.err
    assert (tmp_path / "again" / "ce-agent-kit-check" / "pyproject.toml").exists()


# -- ce_agent.testing, used here as any plugin author uses it ------------------------------------------


class EchoCheck(Check):
    """Returns the status it is given, and the host's address."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        status: int = 0
        port: int = 80

    FREE_FORM = "status"

    def run(self) -> Result:
        return Result(Status(self.options.status), f"{self.context.address}:{self.options.port}",
                      [Metric("echo_port", self.options.port, labels={"host": self.context.host})])


class RaisingCheck(Check):
    def run(self) -> Result:
        return {}["missing"]


class SleepingCheck(Check):
    def run(self) -> Result:
        time.sleep(3)
        return Result(Status.OK, "woke up")


class RaisingCollector(Collector):
    def collect(self) -> list[Metric]:
        raise ConnectionRefusedError("no server")


class BrokenNotifier(Notifier):
    def send(self, notification) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")


@pytest.mark.parametrize(
    "options, hostvars, status, summary",
    [
        pytest.param({}, None, Status.OK, r"^localhost:80$", id="defaults"),
        pytest.param({"status": 2, "port": "{{ port }}"}, {"port": 8080, "address": "10.0.0.5"}, Status.CRITICAL,
                     r"^10\.0\.0\.5:8080$", id="templates from hostvars"),
        pytest.param("1", None, Status.WARNING, "localhost", id="free form"),
        pytest.param({"port": "443"}, None, Status.OK, ":443$", id="text coerced as in a playbook"),
    ],
)
def test_ce_run_check_goes_through_the_loader(ce_run_check, options, hostvars, status, summary) -> None:  # type: ignore[no-untyped-def]
    result = ce_run_check(EchoCheck, options, hostvars=hostvars)
    assert_status(result, status, summary)


@pytest.mark.parametrize(
    "plugin, options, message",
    [
        pytest.param(EchoCheck, {"prot": 1}, "echo: unknown option 'prot' (did you mean 'port'?)", id="a typo"),
        pytest.param(EchoCheck, {"port": "eighty"}, "option 'port': expected int", id="a wrong type"),
        pytest.param(EchoCheck, {"port": "{{ nope }}"}, "undefined variable", id="an undefined variable"),
        pytest.param("dsik", {}, "unknown check plugin 'dsik'; did you mean 'disk'?", id="an unknown plugin"),
    ],
)
def test_ce_run_check_refuses_what_validate_refuses(ce_run_check, plugin, options, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationFailed) as refused:
        ce_run_check(plugin, options)
    assert any(message in error for error in refused.value.errors), refused.value.errors


def test_ce_run_check_by_entry_point_name(ce_run_check, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert_status(ce_run_check("file", {"path": tmp_path}), "OK")  # a Path is written as its text
    assert_status(ce_run_check("file", {"path": tmp_path / "nope"}), 2)


def test_an_exception_is_unknown_with_its_traceback_on_stderr(ce_run_check, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert_status(ce_run_check(RaisingCheck), "UNKNOWN", r"^KeyError: 'missing'$")
    assert ce_run_check.last.trace and "Traceback" in capsys.readouterr().err


def test_an_overrun_is_unknown(ce_run_check) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    assert_status(ce_run_check(SleepingCheck, timeout="0.2s"), Status.UNKNOWN, "^timed out after 0.2s$")
    assert time.monotonic() - started < 2
    assert ce_run_check.last.timed_out


def test_ce_run_collector(ce_run_collector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_bytes(b"12345")
    samples = ce_run_collector("directory_size", {"path": str(tmp_path)})
    assert samples and all(isinstance(m, Metric) for m in samples)
    with pytest.raises(CollectorFailed, match="ConnectionRefusedError: no server"):
        ce_run_collector(RaisingCollector)


def test_ce_send_notification_reports_failures_as_the_outbox_sees_them(ce_send_notification, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DeliveryError, match="RuntimeError: a bug") as failed:
        ce_send_notification(BrokenNotifier)
    assert failed.value.transient is False  # an exception that is not a DeliveryError is not retried
    ce_send_notification("file", {"path": tmp_path / "out.jsonl"}, sample_notification(title="hello"))
    assert '"title": "hello"' in (tmp_path / "out.jsonl").read_text()
    with pytest.raises(ValidationFailed, match="missing required option 'path'"):
        ce_send_notification("file", {})


def test_ce_notifications_follows_the_alert_state(ce_notifications) -> None:  # type: ignore[no-untyped-def]
    sent = ce_notifications.run_check(EchoCheck, {"status": 2}, task={"severity": "page", "labels": {"team": "db"}})
    assert [(n.kind, n.status, n.check, n.channel) for n in sent] == [("firing", Status.CRITICAL, "echo", "capture")]
    assert sent[0].labels["team"] == "db" and sent[0].labels["severity"] == "page"
    assert ce_notifications.run_check(EchoCheck, {"status": 2}) == []  # told already
    assert [n.kind for n in ce_notifications.run_check(EchoCheck, {"status": 0})] == ["resolved"]
    assert len(ce_notifications.sent) == 2
    assert ce_notifications.report.outcomes[0].result.status is Status.OK


def test_ce_notifications_runs_a_playbook_with_classes_by_name(ce_notifications) -> None:  # type: ignore[no-untyped-def]
    playbook = """\
- hosts: localhost
  checks:
    - {name: fine, echo: {}, notify: [capture]}
    - {name: bad, echo: {status: 1}, notify: [capture]}
"""
    sent = ce_notifications.run_playbook(playbook, plugins=[EchoCheck])
    assert [(n.check, n.status) for n in sent] == [("bad", Status.WARNING)]


@pytest.mark.parametrize(
    "status", [pytest.param(Status.WARNING, id="Status"), pytest.param("warning", id="name"), pytest.param(1, id="code")]
)
def test_assert_status_takes_a_status_its_name_or_its_code(status: object) -> None:
    assert_status(Result(Status.WARNING, "x"), status)
    with pytest.raises(AssertionError, match="expected WARNING, got OK: 'fine'"):
        assert_status(Result(Status.OK, "fine"), status)


@pytest.mark.parametrize(
    "kwargs, found",
    [
        pytest.param({}, True, id="by name"),
        pytest.param({"value": 2.0000000001}, True, id="approximately"),
        pytest.param({"value": 3}, False, id="another value"),
        pytest.param({"labels": {"disk": "sda"}}, True, id="exactly these labels"),
        pytest.param({"labels": {}}, False, id="labels are compared exactly"),
        pytest.param({"unit": "B"}, True, id="unit"),
        pytest.param({"count": 2}, False, id="count"),
    ],
)
def test_assert_metric(kwargs: dict[str, object], found: bool) -> None:
    result = Result(Status.OK, "x", [Metric("io", 2.0, "B", {"disk": "sda"}), Metric("other", None)])
    if found:
        assert assert_metric(result, "io", **kwargs).name == "io"  # type: ignore[arg-type]
    else:
        with pytest.raises(AssertionError, match=r"(?s)expected .*io.*the metrics are:\n  io = 2.0 \{'disk': 'sda'\} \[B\]"):
            assert_metric(result, "io", **kwargs)  # type: ignore[arg-type]
    assert_metric(result, "other", None)  # None: Nagios' `U`


def test_the_pytest_plugin_is_registered_and_imports_almost_nothing() -> None:
    from importlib.metadata import entry_points

    assert [ep.value for ep in entry_points(group="pytest11") if ep.name == "ce_agent"] == ["ce_agent.testing"]
    probe = ("import sys; import ce_agent.testing; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('ce_agent', 'msgspec', 'yaml', 'jinja2', 'stevedore', 'typer')))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "['ce_agent', 'ce_agent.testing']", proc.stdout + proc.stderr
