"""Reading YAML safely: hostile or broken files give one located error, quickly, and run nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ce_agent.config.yamlfile import LocDict, LocList, load_yaml, parse_yaml
from ce_agent.errors import UserError

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(20)
)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("a: !!python/object/apply:os.system ['touch /tmp/x']\n",
                     "f.yml:1:4: the YAML tag tag:yaml.org,2002:python/object/apply:os.system is not allowed",
                     id="python tags"),
        pytest.param("a: !vault |\n  xyz\n", "f.yml:1:4: the YAML tag !vault is not allowed", id="custom tags"),
        pytest.param(ALIAS_BOMB, "f.yml:1:1: expands to more than 200000 values through aliases", id="alias bomb"),
        pytest.param("a: &a 1\n" + "".join(f"k{i}: *a\n" for i in range(300)), "more than 256 YAML aliases",
                     id="too many aliases"),
        pytest.param("[" * 10_000 + "]" * 10_000, "f.yml:1:65: nested deeper than 64 levels", id="10,000 deep"),
        pytest.param("a: 1\na: 2\n", "f.yml:2:1: duplicate key 'a'", id="duplicate keys"),
        pytest.param("a: [1, 2\n", "f.yml:2:1: invalid YAML: while parsing a flow sequence", id="unclosed list"),
        pytest.param("a: 1\n---\nb: 2\n", "f.yml:2:1: more than one YAML document", id="two documents"),
        pytest.param("? [1, 2]\n: x\n", "f.yml:1:3: a mapping key must be a plain value", id="list as a key"),
        pytest.param("a:\n\tb: 1\n", "f.yml:2:1: invalid YAML:", id="a tab for indentation"),
    ],
)
def test_refused(text: str, expected: str) -> None:
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        parse_yaml(text, "f.yml")
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "content, expected",
    [
        pytest.param(b"\x00\x01\x02binary", "not a text file (binary data)", id="binary junk"),
        pytest.param(b"a: 1\n\xff\xfe: 2\n", ":2:1: not UTF-8 text", id="not UTF-8"),
        pytest.param(b"x" * (8 * 1024 * 1024 + 1), "larger than the limit", id="over 8 MiB"),
    ],
)
def test_refused_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "f.yml"
    path.write_bytes(content)
    with pytest.raises(UserError, match="f.yml") as caught:
        load_yaml(path, "playbook")
    assert expected in str(caught.value)


def test_a_directory_and_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory, expected a playbook"):
        load_yaml(tmp_path, "playbook")
    with pytest.raises(UserError, match="no such playbook"):
        load_yaml(tmp_path / "missing.yml", "playbook")


def test_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "f.yml"
    path.write_text("a: 1\n")
    path.chmod(0)
    try:
        import os

        if os.geteuid() == 0:
            pytest.skip("root reads files whatever their mode")
        with pytest.raises(UserError, match="permission denied reading the playbook"):
            load_yaml(path, "playbook")
    finally:
        path.chmod(0o600)


def test_locations_are_kept() -> None:
    data = parse_yaml("top:\n  - name: one\n    disk: {path: /}\n", "f.yml")
    assert isinstance(data, LocDict) and isinstance(data["top"], LocList)
    task = data["top"][0]
    assert str(task.loc) == "f.yml:2:5"
    assert str(task.key_loc("disk")) == "f.yml:3:5"
    assert str(task["disk"].value_loc("path")) == "f.yml:3:18"
    assert str(data["top"].item_loc(0)) == "f.yml:2:5"


def test_plain_yaml_still_works() -> None:
    assert parse_yaml("a: [1, 2.5, true, null, 'x']\nb: {c: d}\n", "f.yml") == {
        "a": [1, 2.5, True, None, "x"],
        "b": {"c": "d"},
    }
    assert parse_yaml("", "f.yml") is None
    assert parse_yaml("x: &anchor {a: 1}\ny: *anchor\n", "f.yml") == {"x": {"a": 1}, "y": {"a": 1}}
