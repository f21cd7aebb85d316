"""The distribution as ce-agent finds it: six entry points, each a documented check with valid examples."""

from __future__ import annotations

import re
from importlib.metadata import distribution, entry_points
from pathlib import Path

import pytest
import yaml

from ce_agent.contracts import Check
from ce_agent.options import convert_options

NAMES = {"git_repo", "git_hooks", "tools", "version_consistency", "stale_locks", "config_parses"}
README = Path(__file__).parent.parent / "README.md"


def checks() -> dict[str, type[Check]]:
    found = {ep.name: ep for ep in entry_points(group="ce_agent.checks") if ep.dist.name == "ce-agent-repo-health"}
    return {name: ep.load() for name, ep in found.items()}


def test_installed_with_its_six_checks() -> None:
    assert distribution("ce-agent-repo-health").version == "0.1.0"
    assert set(checks()) == NAMES


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_check_is_documented_and_its_examples_validate(name: str) -> None:
    cls = checks()[name]
    assert issubclass(cls, Check)
    assert cls.__doc__ and "\n" not in cls.__doc__.strip()
    tasks = yaml.safe_load(cls.EXAMPLES)
    assert tasks, "no examples"
    for task in tasks:
        _, errors = convert_options(cls.Options, task[name])
        assert errors == [], (task, errors)


def test_readme_documents_every_check_and_its_playbook_validates() -> None:
    text = README.read_text()
    for name in NAMES:
        assert f"### `{name}`" in text
    block = re.search(r"## Example playbook\n\n```yaml\n(.*?)```", text, re.S)
    assert block is not None
    [play] = yaml.safe_load(block.group(1))
    plugins = checks()
    used = set()
    for task in play["checks"]:
        [name] = [key for key in task if key in plugins]
        used.add(name)
        _, errors = convert_options(plugins[name].Options, task[name])
        assert errors == [], (task, errors)
    assert used == NAMES
