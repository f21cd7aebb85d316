"""The three built-in notifiers document themselves: a one-line description and examples that validate."""

from __future__ import annotations

import pytest
import yaml

from ce_agent.contracts import Notifier
from ce_agent.notifiers.apprise import AppriseNotifier
from ce_agent.notifiers.console import ConsoleNotifier
from ce_agent.notifiers.file import FileNotifier
from ce_agent.options import convert_options


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        pytest.param("apprise", AppriseNotifier, id="apprise"),
        pytest.param("console", ConsoleNotifier, id="console"),
        pytest.param("file", FileNotifier, id="file"),
    ],
)
def test_description_and_examples(name: str, cls: type[Notifier]) -> None:
    assert cls.__doc__ and "\n" not in cls.__doc__.strip()
    tasks = yaml.safe_load(cls.EXAMPLES)
    assert tasks
    for task in tasks:
        _, errors = convert_options(cls.Options, task[name])
        assert errors == [], (task, errors)
