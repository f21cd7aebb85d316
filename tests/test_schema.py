"""`ce-agent schema`: valid JSON Schema that accepts every example in the repo and agrees with the loader."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from ce_agent import schema
from ce_agent.registry import Registry
from tests.conftest import ROOT, Agent, pip_install_target

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    warnings: list[str] = []
    built = {kind: schema.build(kind, Registry(), warnings.append) for kind in schema.KINDS}
    assert warnings == []  # every plugin of this environment loads
    return built


def _errors(document: dict[str, Any], data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(document)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(data)]


def _loader_errors(tmp_path: Path, playbook: str, inventory: str) -> list[str]:
    """What `ce-agent validate` says of these files (in-process, same code)."""
    from ce_agent.errors import ConfigError
    from ce_agent.oneshot import load_or_explain
    from ce_agent.plan import Selection

    (tmp_path / "site.yml").write_text(textwrap.dedent(playbook))
    (tmp_path / "inventory.yml").write_text(textwrap.dedent(inventory))
    try:
        load_or_explain([tmp_path / "site.yml"], [tmp_path / "inventory.yml"],
                        Selection(check_schedules=True, state_dir=tmp_path))
    except ConfigError as exc:
        return exc.lines
    return []


def test_both_are_valid_draft_2020_12_schemas(schemas: dict[str, dict[str, Any]]) -> None:
    for document in schemas.values():
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(document)


def _repo_examples() -> list[Any]:
    params = []
    for path in sorted([*ROOT.glob("playbooks/**/*.yml"), *ROOT.glob("inventory/*.yml")]):
        kind = "inventory" if path.parent.name == "inventory" else "playbook"
        params.append(pytest.param(kind, path.read_text(), id=str(path.relative_to(ROOT))))
    for path in sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("plugins/*/README.md")]):
        for index, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", path.read_text(), re.S)):
            if "…" in block:  # an elided example
                continue
            try:
                data = yaml.safe_load(block)
            except yaml.YAMLError:
                continue
            if isinstance(data, list) and data and all(isinstance(p, dict) and "hosts" in p for p in data):
                params.append(pytest.param("playbook", block, id=f"{path.relative_to(ROOT)}#{index}"))
            elif isinstance(data, dict) and "all" in data:
                params.append(pytest.param("inventory", block, id=f"{path.relative_to(ROOT)}#{index}"))
    return params


@pytest.mark.parametrize("kind, text", _repo_examples())
def test_every_example_in_the_repo_validates(schemas: dict[str, dict[str, Any]], kind: str, text: str) -> None:
    assert _errors(schemas[kind], yaml.safe_load(text)) == []


def _plugin_examples() -> list[Any]:
    registry = Registry()
    params = []
    for kind in ("check", "collector", "notifier"):
        for name in registry.names(kind):
            params.append(pytest.param(kind, name, id=f"{kind}/{name}"))
    return params


@pytest.mark.parametrize("kind, name", _plugin_examples())
def test_every_installed_plugins_examples_validate(schemas: dict[str, dict[str, Any]], kind: str, name: str) -> None:
    """`plugins doc` EXAMPLES: tasks for checks and collectors, an inventory for notifiers."""
    data = yaml.safe_load(Registry().get(kind, name).EXAMPLES)
    if kind == "notifier":
        assert _errors(schemas["inventory"], data) == []
    else:
        assert _errors(schemas["playbook"], [{"hosts": "localhost", f"{kind}s": data}]) == []


INVENTORY = """\
all:
  vars:
    channels:
      log: {file: {path: alerts.jsonl}}
  hosts:
    localhost: {}
"""
PLAYBOOK = """\
- hosts: localhost
  checks:
    - {name: m, memory: {}, notify: [log]}
"""


def _play(task: str, extra: str = "") -> str:
    return f"- hosts: localhost\n{extra}  checks:\n    - {task}\n"


REFUSED = [
    pytest.param(_play("disk: {pth: /}"), INVENTORY, id="a typo in an option"),
    pytest.param(_play("dsik: {path: /}"), INVENTORY, id="an unknown plugin"),
    pytest.param(_play("{disk: {path: /}, timout: 5s}"), INVENTORY, id="a typo in a task key"),
    pytest.param(_play("{disk: {}, memory: {}}"), INVENTORY, id="two plugins in one task"),
    pytest.param(_play("disk: {path: [a, b]}"), INVENTORY, id="a list for text"),
    pytest.param(_play("tcp: {port: eighty}"), INVENTORY, id="text for a number"),
    pytest.param(_play("{memory: {}, severity: urgent}"), INVENTORY, id="an unknown severity"),
    pytest.param(_play("{memory: {}, retries: 0}"), INVENTORY, id="retries below 1"),
    pytest.param(_play("{memory: {}, timeout: 5 minutes}"), INVENTORY, id="not a duration"),
    pytest.param(_play("memory: {}", "  task: []\n"), INVENTORY, id="an unknown play key"),
    pytest.param(_play("memory: {}", "  alerts: [{name: High}]\n"), INVENTORY, id="a rule without expr"),
    pytest.param(_play("memory: {}", "  slos: [{name: a, objective: 99, window: 30d, sli: {check: m}, widow: 1d}]\n"),
                 INVENTORY, id="a typo in an SLO"),
    pytest.param(PLAYBOOK, INVENTORY.replace("{path: alerts.jsonl}", "{pth: alerts.jsonl}"), id="a typo in a channel"),
    pytest.param(PLAYBOOK, INVENTORY.replace("{file: {path: alerts.jsonl}}", "{fiel: {path: alerts.jsonl}}"),
                 id="an unknown notifier"),
    pytest.param(PLAYBOOK, INVENTORY.replace("  hosts:", "  host:"), id="a typo in a group key"),
    pytest.param(PLAYBOOK, INVENTORY.replace("  vars:\n", "  vars:\n    delivery: {attempt: 3}\n"),
                 id="a typo in delivery"),
    pytest.param(PLAYBOOK, INVENTORY.replace("  vars:\n", "  vars:\n    routes: [{chanels: [log]}]\n"),
                 id="a typo in a route"),
    pytest.param(PLAYBOOK, INVENTORY.replace("  vars:\n", "  vars:\n    maintenance: [{schedule: '0 2 * * *'}]\n"),
                 id="maintenance without duration"),
]


@pytest.mark.parametrize("playbook, inventory", REFUSED)
def test_what_the_loader_refuses_the_schema_refuses(schemas: dict[str, dict[str, Any]], tmp_path: Path,
                                                     playbook: str, inventory: str) -> None:
    assert _loader_errors(tmp_path, playbook, inventory), "the loader accepts it: the case is wrong"
    errors = _errors(schemas["playbook"], yaml.safe_load(playbook)) + _errors(schemas["inventory"], yaml.safe_load(inventory))
    assert errors, "the schema accepts it"


ACCEPTED = [
    pytest.param(_play("tcp: {port: '{{ ssh_port }}'}", "  vars: {ssh_port: 22}\n"), INVENTORY,
                 id="a template for a number"),
    pytest.param(_play("tcp: {port: '22'}"), INVENTORY, id="text for a number, coerced"),
    pytest.param(_play("command: {argv: [echo, 5, true]}"), INVENTORY, id="numbers for text, coerced"),
    pytest.param(_play("command: echo hello"), INVENTORY, id="free form"),
    pytest.param(_play("memory:"), INVENTORY, id="no options at all"),
    pytest.param(_play("{memory: {}, tags: 'a, b', notify: log, timeout: 1m30s, retries: 2}"), INVENTORY,
                 id="names as one string, a duration"),
    pytest.param(_play("{memory: {}, interval: 90, jitter: 5s, severity: '{{ sev }}'}", "  vars: {sev: page}\n"),
                 INVENTORY, id="interval in seconds, templated severity"),
    pytest.param(_play("{name: l, memory: {}, notify: [c]}", "  vars: {channels: {c: {console: {}}}}\n"), INVENTORY,
                 id="channels in play vars"),
    pytest.param(PLAYBOOK, INVENTORY.replace("{file: {path: alerts.jsonl}}",
                                             "[\"json://127.0.0.1:9/a\", \"json://127.0.0.1:9/b\"]"),
                 id="a list of Apprise URLs"),
    pytest.param(PLAYBOOK, INVENTORY.replace("{file: {path: alerts.jsonl}}",
                                             "{file: {path: a.jsonl}, fallback: other, fallback_after: 2}\n"
                                             "      other: {console: {}}"),
                 id="a fallback channel"),
    pytest.param(PLAYBOOK, INVENTORY + "  children:\n    web:\n      hosts: {web1: ~, web2: {address: 10.0.0.2}}\n",
                 id="hosts without variables"),
]


@pytest.mark.parametrize("playbook, inventory", ACCEPTED)
def test_what_the_loader_accepts_the_schema_accepts(schemas: dict[str, dict[str, Any]], tmp_path: Path,
                                                     playbook: str, inventory: str) -> None:
    assert _loader_errors(tmp_path, playbook, inventory) == []
    assert _errors(schemas["playbook"], yaml.safe_load(playbook)) == []
    assert _errors(schemas["inventory"], yaml.safe_load(inventory)) == []


@pytest.mark.parametrize(
    "text, ok",
    [pytest.param(t, ok, id=repr(t)) for t, ok in [
        ("30s", True), ("1h30m", True), ("250ms", True), (" 2d ", True), ("1.5h", True), ("90", True), ("0.5", True),
        ("5 minutes", False), ("-5", False), ("1x", False), ("", False), ("s", False),
    ]],
)
def test_the_duration_pattern_agrees_with_the_parser(text: str, ok: bool) -> None:
    from ce_agent.durations import parse_duration

    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed is ok
    assert (re.search(schema._common_defs()["duration_text"]["pattern"], text) is not None) is ok


def test_every_key_of_the_loader_has_a_hand_written_schema() -> None:
    from ce_agent import baseline
    from ce_agent.config import inventory

    assert schema.hand_written_gaps() == []
    # the key sets the loader keeps private, copied in schema.py
    assert schema.REGRESSION_KEYS == baseline._RULE_KEYS
    assert set(schema._GROUP_KEYS) == set(inventory._GROUP_KEYS)


def test_a_pip_installed_plugins_options_are_in_the_schema(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    projects = tmp_path_factory.mktemp("scaffold-schema")
    assert Agent(projects)("plugins", "new", "schema_probe", "--kind", "check").code == 0
    site = pip_install_target(tmp_path_factory.mktemp("site-schema"), projects / "ce-agent-schema-probe")
    agent = Agent(tmp_path, [site])
    ran = agent("schema", "-o", "playbook.schema.json")
    assert ran.code == 0 and ran.out == "", ran.err
    document = json.loads((tmp_path / "playbook.schema.json").read_text())
    options = document["$defs"]["check.schema_probe"]["anyOf"][0]
    assert options["properties"]["path"]["description"] == "The file or directory that must exist."
    assert options["additionalProperties"] is False
    good = [{"hosts": "localhost", "checks": [{"schema_probe": {"path": "/srv"}}]}]
    assert _errors(document, good) == []
    assert _errors(document, [{"hosts": "localhost", "checks": [{"schema_probe": {"pth": "/srv"}}]}])


def test_a_plugin_that_fails_to_load_is_left_out_with_a_warning(agent: Agent) -> None:
    ran = agent("schema")
    assert ran.code == 0
    assert ("warning: check plugin 'broken' is left out of the schema: ce-agent-broken 0.0.1 failed to load "
            "ce_agent_broken:BrokenCheck: ModuleNotFoundError") in ran.err, ran.err
    document = json.loads(ran.out)
    assert "check.broken" not in document["$defs"]
    assert "check.fixed" in document["$defs"]  # ce-agent-testplugins, which loads
    inventory = agent("schema", "--kind", "inventory")
    assert inventory.code == 0 and json.loads(inventory.out)["title"] == "ce-agent inventory"


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--kind", "site"], "error: --kind must be one of playbook, inventory, got 'site'", id="kind"),
        pytest.param(["-o", "missing/dir/x.json"], "error: cannot write missing/dir/x.json: No such file or directory",
                     id="an unwritable file"),
    ],
)
def test_schema_user_errors(tmp_path: Path, args: list[str], message: str) -> None:
    ran = Agent(tmp_path)("schema", *args)
    assert (ran.code, ran.err.strip()) == (2, message)
