"""The built-in notifiers document themselves: a one-line description, and examples that are
inventory snippets (notifiers are used through the inventory's channels) whose channels validate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ce_agent.contracts import Notifier
from ce_agent.notifiers.alertmanager import AlertmanagerNotifier
from ce_agent.notifiers.apprise import AppriseNotifier
from ce_agent.notifiers.console import ConsoleNotifier
from ce_agent.notifiers.file import FileNotifier
from ce_agent.options import convert_options

NOTIFIERS = [
    pytest.param("alertmanager", AlertmanagerNotifier, id="alertmanager"),
    pytest.param("apprise", AppriseNotifier, id="apprise"),
    pytest.param("console", ConsoleNotifier, id="console"),
    pytest.param("file", FileNotifier, id="file"),
]
_TEMPLATE = re.compile(r"\{\{.*?\}\}")


def example_channels(cls: type[Notifier]) -> dict[str, Any]:
    """The channels of a notifier's EXAMPLES, which must be an inventory: all -> vars -> channels."""
    inventory = yaml.safe_load(cls.EXAMPLES)
    assert list(inventory) == ["all"] and list(inventory["all"]) == ["vars"], inventory
    channels = inventory["all"]["vars"]["channels"]
    assert isinstance(channels, dict) and channels
    return channels


def channel_notifier(value: Any) -> tuple[str, dict[str, Any]]:
    """What a channel's value means: an Apprise URL, a list of them, or {NOTIFIER: {options}}."""
    if isinstance(value, str):
        return "apprise", {"urls": [value]}
    if isinstance(value, list):
        return "apprise", {"urls": value}
    [(name, options)] = value.items()
    return name, options or {}


@pytest.mark.parametrize(("name", "cls"), NOTIFIERS)
def test_description_is_one_line(name: str, cls: type[Notifier]) -> None:
    assert cls.__doc__ and "\n" not in cls.__doc__.strip()


@pytest.mark.parametrize(("name", "cls"), NOTIFIERS)
def test_examples_are_channels_of_this_notifier_with_valid_options(name: str, cls: type[Notifier]) -> None:
    for channel, value in example_channels(cls).items():
        notifier, raw = channel_notifier(value)
        assert notifier == name, channel
        # a template stands for a secret from the environment: any value will do here
        if "urls" in raw:
            raw = {**raw, "urls": [_TEMPLATE.sub("s3cret", url) for url in raw["urls"]]}
        options, errors = convert_options(cls.Options, raw)
        assert errors == [], (channel, errors)
        if cls is AppriseNotifier:
            assert AppriseNotifier.config_problems(options) == [], channel


def test_examples_validate_as_an_inventory(tmp_path: Path) -> None:
    channels: dict[str, Any] = {}
    for param in NOTIFIERS:
        channels.update(example_channels(param.values[1]))
    inventory = {"all": {"vars": {"channels": channels}, "hosts": {"localhost": {}}}}
    check = {"name": "Root disk", "disk": {"path": "/"}, "notify": sorted(channels)}
    playbook = [{"name": "Examples", "hosts": "localhost", "checks": [check]}]
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "site.yml").write_text(yaml.safe_dump(playbook))

    done = subprocess.run(
        [sys.executable, "-m", "ce_agent", "validate", "site.yml", "-i", "inventory.yml"],
        cwd=tmp_path, env={**os.environ, "SMTP_PASSWORD": "p@ss/w:rd", "AM_PASSWORD": "s3cret"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
