"""Fixtures of the check tests: building a check from playbook-style options, Nagios plugins, scripts."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ce_agent.contracts import Check, TaskContext
from ce_agent.options import convert_options

NAGIOS_PLUGINS = Path("/usr/lib/nagios/plugins")


@pytest.fixture
def make_check() -> Callable[..., Check]:
    """`make_check(CommandCheck, {"cmd": "..."}, timeout=5)`: options validated as a playbook's are."""

    def make(cls: type[Check], raw: Mapping[str, Any], *, timeout: float = 10.0) -> Check:
        options, errors = convert_options(cls.Options, raw)
        assert not errors, errors
        return cls(options, TaskContext(task="test", host="localhost", timeout=timeout))

    return make


@pytest.fixture
def nagios_plugins() -> Path:
    """Debian's monitoring-plugins directory; skipped when missing unless CE_AGENT_REQUIRE_NAGIOS=1."""
    if not (NAGIOS_PLUGINS / "check_dummy").exists():
        if os.environ.get("CE_AGENT_REQUIRE_NAGIOS") == "1":
            pytest.fail(f"{NAGIOS_PLUGINS}/check_dummy is missing and CE_AGENT_REQUIRE_NAGIOS=1")
        pytest.skip(f"the Nagios plugins are not installed ({NAGIOS_PLUGINS}/check_dummy is missing)")
    return NAGIOS_PLUGINS


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], str]:
    """`script("echo hi")`: the path of an executable /bin/sh script with that body."""
    count = 0

    def write(body: str) -> str:
        nonlocal count
        count += 1
        path = tmp_path / f"script{count}.sh"
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    return write
