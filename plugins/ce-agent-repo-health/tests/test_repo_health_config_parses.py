"""`config_parses`: every YAML, JSON and TOML file matched parses; errors name file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from ce_agent.contracts import Status
from ce_agent_repo_health.config_parses import ConfigParsesCheck

GOOD = {
    "app.yaml": "name: app\nports: [80, 443]\n",
    "manifests.yml": "kind: A\n---\nkind: B\n",
    "package.json": '{"name": "app", "version": "1.0.0"}\n',
    "pyproject.toml": '[project]\nname = "app"\n',
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A directory of its own (tmp_path holds the tests' git config, which "*" would match)."""
    return tmp_path / "tree"


@pytest.mark.parametrize(
    ("extra", "paths", "status", "summary"),
    [
        pytest.param({}, ["*.yaml", "*.yml", "*.json", "*.toml"], Status.OK, "4 config files parse", id="all-good"),
        pytest.param({}, ["app.yaml", "package.json"], Status.OK, "2 config files parse", id="plain-paths"),
        pytest.param(
            {"bad.yaml": "name: app\nports:\n  - 80\n bad: indent\n"}, ["*.yaml"], Status.CRITICAL,
            "bad.yaml:4:2: ", id="yaml-error-line",
        ),
        pytest.param(
            {"bad.json": '{\n  "name": "app",\n  "version": \n}\n'}, ["*.json"], Status.CRITICAL,
            "bad.json:4:1: Expecting value", id="json-error-line",
        ),
        pytest.param(
            {"bad.toml": '[project]\nname = "app"\nversion = 1.0.0\n'}, ["*.toml"], Status.CRITICAL,
            "bad.toml:3:", id="toml-error-line",
        ),
        pytest.param(
            {"evil.yaml": "x: !!python/object/apply:os.system ['true']\n"}, ["evil.yaml"], Status.CRITICAL,
            "evil.yaml:1:4: could not determine a constructor", id="yaml-is-loaded-safely",
        ),
        pytest.param(
            {"latin1.yaml": b"a: 1\nb: caf\xe9\n"}, ["latin1.yaml"], Status.CRITICAL, "latin1.yaml:2: not UTF-8",
            id="not-utf8",
        ),
        pytest.param({}, ["missing.yaml"], Status.CRITICAL, "missing.yaml: no such file", id="plain-path-missing"),
        pytest.param({}, ["conf.d/*.yaml"], Status.WARNING, "nothing matches conf.d/*.yaml", id="glob-matches-nothing"),
        pytest.param(
            {"conf.d/a/b/deep.yaml": "a: [\n"}, ["**/*.yaml"], Status.CRITICAL, "conf.d/a/b/deep.yaml:2:1: ",
            id="recursive-glob",
        ),
        pytest.param(
            {"README.md": "# hi\n"}, ["*"], Status.OK, "4 config files parse (1 skipped: not YAML, JSON or TOML)",
            id="other-types-skipped",
        ),
        pytest.param(
            {"b1.json": "{", "b2.json": "[", "b3.json": "x", "b4.json": "]"}, ["*.json"], Status.CRITICAL,
            "4 broken: b1.json:1:2: Expecting property name enclosed in double quotes; b2.json", id="several-broken",
        ),
    ],
)
def test_config_files(tree, run_check, extra, paths, status, summary) -> None:
    write_tree(tree, {**GOOD, **extra})

    result = run_check(ConfigParsesCheck, root=str(tree), paths=paths)

    assert result.status is status, result.summary
    assert summary in result.summary


def test_every_error_is_in_the_details_and_the_metrics(tree, run_check) -> None:
    write_tree(tree, {**GOOD, **{f"b{n}.json": "{" for n in range(5)}})

    result = run_check(ConfigParsesCheck, root=str(tree), paths=["*.json", "*.yaml"])

    assert result.summary.endswith("and 2 more")
    assert len(result.details.splitlines()) == 5
    assert {m.name: m.value for m in result.metrics} == {"config_parses_files": 7, "config_parses_errors": 5}


def test_absolute_globs(tree, run_check) -> None:
    write_tree(tree, GOOD)

    result = run_check(ConfigParsesCheck, paths=[str(tree / "*.json")])

    assert (result.status, result.summary) == (Status.OK, "1 config files parse")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'paths'", id="paths-required"),
        pytest.param({"paths": []}, "length >= 1", id="paths-not-empty"),
    ],
)
def test_invalid_options(option_errors, raw, error) -> None:
    assert error in option_errors(ConfigParsesCheck, **raw)[0]
