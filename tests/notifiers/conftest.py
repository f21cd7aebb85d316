"""Fixtures of the notifier tests: build a notifier as the runner does."""

from __future__ import annotations

from typing import Any

import pytest

from ce_agent.contracts import Notifier, TaskContext
from ce_agent.options import convert_options


def _make_notifier(cls: type[Notifier], **raw: Any) -> Any:
    options, errors = convert_options(cls.Options, raw)
    assert not errors, errors
    return cls(options, TaskContext(task="notify", host="localhost"))


@pytest.fixture
def make_notifier() -> Any:
    """Build a notifier the way the runner does: options validated from playbook values."""
    return _make_notifier
