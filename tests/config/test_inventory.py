"""Inventories: Ansible's YAML and INI formats, group_vars/host_vars precedence, host patterns."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from ce_agent.config.inventory import Inventory, load_inventories
from ce_agent.errors import Problems


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


#: One tree that exercises every layer of Ansible's variable precedence.
PRECEDENCE_TREE = {
    "hosts.yml": """\
        all:
          vars: {layer: all-inline, only_all: 1, role: none}
          hosts:
            solo: {}
          children:
            web:
              vars: {layer: web-inline, role: web}
              hosts:
                web1: {layer: web1-inline}
                web2: {}
              children:
                canary:
                  vars: {layer: canary-inline, role: canary}
                  hosts:
                    web2: {}
            db:
              vars: {layer: db-inline, role: db, tier: data}
              hosts:
                db1: {address: 10.0.0.9}
            apps:
              vars: {layer: apps-inline, role: apps}
              hosts:
                web1: {}
        """,
    "group_vars/all.yml": "layer: all-file\nfrom_all_file: yes\n",
    "group_vars/web.yml": "layer: web-file\n",
    "group_vars/db/main.yml": "tier: data-file\n",
    "group_vars/db/more.yml": "extra: 1\n",
    "host_vars/web2.yml": "layer: web2-file\n",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write(tmp_path, PRECEDENCE_TREE)
    return tmp_path


def load(*paths: Path) -> Inventory:
    problems = Problems()
    inventory = load_inventories(list(paths), problems)
    assert not problems, [str(p) for p in problems.items]
    return inventory


@pytest.mark.parametrize(
    "host, key, expected",
    [
        pytest.param("solo", "layer", "all-file", id="group_vars/all beats the inline vars of all"),
        pytest.param("web1", "layer", "web1-inline", id="inline host vars beat group_vars files"),
        pytest.param("web2", "layer", "web2-file", id="host_vars file beats everything"),
        pytest.param("db1", "layer", "all-file", id="inline group vars lose to group_vars/all"),
        pytest.param("db1", "tier", "data-file", id="group_vars/GROUP beats the inline group var"),
        pytest.param("db1", "extra", 1, id="a group_vars directory is read file by file"),
        pytest.param("web2", "role", "canary", id="children override parents"),
        pytest.param("web1", "role", "web", id="same depth groups merge alphabetically (web after apps)"),
        pytest.param("solo", "only_all", 1, id="all vars reach every host"),
        pytest.param("db1", "address", "10.0.0.9", id="address from the host"),
        pytest.param("solo", "address", "solo", id="address defaults to the host name"),
        pytest.param("web2", "group_names", ["canary", "web"], id="group_names without all"),
        pytest.param("web1", "inventory_hostname", "web1", id="inventory_hostname"),
    ],
)
def test_variable_precedence(tree: Path, host: str, key: str, expected: object) -> None:
    assert load(tree / "hosts.yml").variables(host)[key] == expected


@pytest.mark.skipif(shutil.which("ansible-inventory") is None and not Path(".venv/bin/ansible-inventory").exists(),
                    reason="ansible-core is not installed")
def test_variables_match_ansible_inventory(tree: Path) -> None:
    """The reference: what `ansible-inventory --list` says for the same tree."""
    exe = shutil.which("ansible-inventory") or str(Path(".venv/bin/ansible-inventory").resolve())
    proc = subprocess.run(
        [exe, "-i", str(tree / "hosts.yml"), "--list"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "ANSIBLE_LOCAL_TEMP": str(tree / ".tmp"),
                                                          "HOME": str(tree), "ANSIBLE_NOCOLOR": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)["_meta"]["hostvars"]
    inventory = load(tree / "hosts.yml")
    magic = {"inventory_hostname", "inventory_hostname_short", "group_names", "groups", "address"}
    for host in ("solo", "web1", "web2", "db1"):
        ours = {k: v for k, v in inventory.variables(host).items() if k not in magic}
        expected = {k: v for k, v in theirs[host].items()}
        if "address" in expected:
            ours["address"] = inventory.variables(host)["address"]
        assert ours == expected, host


@pytest.mark.parametrize(
    "pattern, expected",
    [
        pytest.param("all", ["solo", "web1", "web2", "db1"], id="all"),
        pytest.param("*", ["solo", "web1", "web2", "db1"], id="star"),
        pytest.param("web", ["web1", "web2"], id="a group with its children"),
        pytest.param("canary", ["web2"], id="a child group"),
        pytest.param("db1", ["db1"], id="one host"),
        pytest.param("web:db", ["web1", "web2", "db1"], id="union"),
        pytest.param("web,db", ["web1", "web2", "db1"], id="union with a comma"),
        pytest.param("web:&apps", ["web1"], id="intersection"),
        pytest.param("web:!canary", ["web1"], id="exclusion"),
        pytest.param("all:!web", ["solo", "db1"], id="all but a group"),
        pytest.param("web*", ["web1", "web2"], id="wildcard"),
        pytest.param("~^(db|solo)", ["solo", "db1"], id="regular expression"),
        pytest.param("ungrouped", ["solo"], id="ungrouped hosts"),
        pytest.param("localhost", ["localhost"], id="implicit localhost"),
    ],
)
def test_host_patterns(tree: Path, pattern: str, expected: list[str]) -> None:
    assert load(tree / "hosts.yml").select(pattern) == expected


@pytest.mark.parametrize(
    "pattern",
    [pytest.param("nosuch", id="unknown name"), pytest.param("web:!nosuch", id="unknown in an exclusion"),
     pytest.param("nope*", id="wildcard matching nothing")],
)
def test_unknown_pattern_is_an_error(tree: Path, pattern: str) -> None:
    with pytest.raises(ValueError, match="no host or group matches"):
        load(tree / "hosts.yml").select(pattern)


def test_implicit_localhost_is_not_in_all(tmp_path: Path) -> None:
    write(tmp_path, {"inv.yml": "all:\n  hosts:\n    a: {}\n"})
    inventory = load(tmp_path / "inv.yml")
    assert inventory.select("localhost") == ["localhost"]
    assert inventory.select("all") == ["a"]


INI = """\
    # Ansible's INI format
    solo ansible_host=192.0.2.1 port=8080 enabled=True name="two words"

    [web]
    web[01:03] tier=front

    [web:vars]
    port=8443

    [db]
    db1

    [backends:children]
    web
    db

    [backends:vars]
    backend=true
    """


@pytest.mark.parametrize(
    "host, key, expected",
    [
        pytest.param("solo", "port", 8080, id="inline host values are Python literals"),
        pytest.param("solo", "enabled", True, id="booleans too"),
        pytest.param("solo", "name", "two words", id="quoted strings"),
        pytest.param("solo", "address", "192.0.2.1", id="address from ansible_host"),
        pytest.param("web02", "port", "8443", id=":vars values are strings"),
        pytest.param("web03", "tier", "front", id="host ranges expand"),
        pytest.param("db1", "backend", "true", id="vars of a parent group from :children"),
    ],
)
def test_ini_inventory(tmp_path: Path, host: str, key: str, expected: object) -> None:
    write(tmp_path, {"hosts.ini": INI})
    assert load(tmp_path / "hosts.ini").variables(host)[key] == expected


def test_ini_groups(tmp_path: Path) -> None:
    write(tmp_path, {"hosts": INI})  # no suffix: recognised by its content
    inventory = load(tmp_path / "hosts")
    assert inventory.select("backends") == ["web01", "web02", "web03", "db1"]
    assert inventory.select("ungrouped") == ["solo"]


@pytest.mark.parametrize(
    "files, expected",
    [
        pytest.param({"inv.yml": "all:\n  hostz: {}\n"}, "inv.yml:2:3: unknown key 'hostz' in group 'all'", id="unknown group key"),
        pytest.param({"inv.yml": "all:\n  hosts: [a, b]\n"}, "inv.yml:2:10: hosts of group 'all' must be a mapping", id="hosts as a list"),
        pytest.param({"inv.yml": "all:\n  hosts:\n    a: 3\n"}, "inv.yml:3:8: variables of host 'a' must be a mapping", id="host vars not a mapping"),
        pytest.param({"inv.yml": "- a\n"}, "inv.yml:1:1: an inventory must be a mapping", id="a list"),
        pytest.param({"inv.yml": "all: {hosts: {a: {}}}\n", "group_vars/all.yml": "- x\n"}, "all.yml:1:1: a variables file must be a mapping", id="bad group_vars"),
        pytest.param({"inv.ini": "[web\nx\n"}, "inv.ini:1:1: bad section header", id="bad INI header"),
    ],
)
def test_inventory_errors_name_file_and_line(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    write(tmp_path, files)
    problems = Problems()
    load_inventories([tmp_path / next(iter(files))], problems)
    messages = [str(p) for p in problems.errors]
    assert any(expected in m for m in messages), messages
