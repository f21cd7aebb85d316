"""`version_consistency`: the version each file's regex captures is the same in every file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ce_agent.contracts import Status
from ce_agent_repo_health.version_consistency import VersionConsistencyCheck

PYPROJECT = {"path": "pyproject.toml", "pattern": r'^version = "([^"]+)"'}
INIT = {"path": "src/app/__init__.py", "pattern": r'^__version__ = "([^"]+)"'}
CHANGELOG = {"path": "CHANGELOG.md", "pattern": r"^## \[?v?(\d+\.\d+\.\d+)"}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


TREE = {
    "pyproject.toml": '[project]\nname = "app"\n# not this: version = "0.0.0" is indented below\n'
    'version = "1.4.2"\n\n[tool.x]\n  version = "9.9.9"\n',
    "src/app/__init__.py": '"""App."""\n\n__version__ = "1.4.2"\n',
    "CHANGELOG.md": "# Changes\n\n## [1.4.2] - 2024-05-01\n\n## [1.4.1]\n",
}


@pytest.mark.parametrize(
    ("changes", "files", "status", "summary"),
    [
        pytest.param(
            {}, [PYPROJECT, INIT, CHANGELOG], Status.OK,
            "version 1.4.2 (pyproject.toml, src/app/__init__.py, CHANGELOG.md)", id="all-agree",
        ),
        pytest.param(
            {"src/app/__init__.py": '__version__ = "1.4.3"\n'}, [PYPROJECT, INIT, CHANGELOG], Status.CRITICAL,
            "versions differ: 1.4.2 (pyproject.toml, CHANGELOG.md) vs 1.4.3 (src/app/__init__.py)", id="one-differs",
        ),
        pytest.param(
            {"CHANGELOG.md": "# Changes\nnothing released yet\n"}, [PYPROJECT, CHANGELOG], Status.CRITICAL,
            "CHANGELOG.md: no match for", id="pattern-not-found",
        ),
        pytest.param(
            {}, [PYPROJECT, {"path": "VERSION", "pattern": "(.+)"}], Status.CRITICAL,
            "VERSION: No such file or directory", id="file-missing",
        ),
        pytest.param(
            {}, [PYPROJECT, {"path": "pyproject.toml", "pattern": r'^name = "(\w+)"'}], Status.CRITICAL,
            "1.4.2 (pyproject.toml#1) vs app (pyproject.toml#2)", id="same-file-twice-named-apart",
        ),
    ],
)
def test_versions(tmp_path, run_check, changes, files, status, summary) -> None:
    write_tree(tmp_path, {**TREE, **changes})

    result = run_check(VersionConsistencyCheck, root=str(tmp_path), files=files)

    assert result.status is status, result.summary
    assert summary in result.summary


def test_absolute_paths_ignore_root(tmp_path, run_check) -> None:
    write_tree(tmp_path, TREE)
    absolute = {**INIT, "path": str(tmp_path / INIT["path"])}

    result = run_check(VersionConsistencyCheck, root="/nonexistent", files=[absolute, {**absolute}])

    assert result.status is Status.OK, result.summary


def test_distinct_versions_metric(tmp_path, run_check) -> None:
    write_tree(tmp_path, {**TREE, "src/app/__init__.py": '__version__ = "2.0.0"\n'})

    result = run_check(VersionConsistencyCheck, root=str(tmp_path), files=[PYPROJECT, INIT, CHANGELOG])

    metrics = {m.name: m for m in result.metrics}
    assert metrics["version_consistency_distinct_versions"].value == 2
    assert metrics["version_consistency_unreadable_files"].value == 0


@pytest.mark.parametrize(
    ("files", "error"),
    [
        pytest.param([PYPROJECT], "length >= 2", id="two-files-at-least"),
        pytest.param([PYPROJECT, {"path": "x", "pattern": "version"}], "exactly one group (it has 0)", id="no-group"),
        pytest.param([PYPROJECT, {"path": "x", "pattern": "(a)(b)"}], "exactly one group (it has 2)", id="two-groups"),
        pytest.param([PYPROJECT, {"path": "x", "pattern": "(unclosed"}], "not a valid regex", id="bad-regex"),
        pytest.param([PYPROJECT, {"path": "x"}], "pattern", id="pattern-required"),
        pytest.param([PYPROJECT, {**INIT, "regex": "(x)"}], "regex", id="unknown-field"),
    ],
)
def test_invalid_options(option_errors, files, error) -> None:
    assert error in option_errors(VersionConsistencyCheck, files=files)[0]
