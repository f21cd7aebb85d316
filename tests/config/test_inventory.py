"""Inventories: Ansible's YAML and INI formats, group_vars/host_vars precedence, host patterns."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
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
        pytest.param(
            "solo",
            "groups",
            {"all": ["solo", "web1", "web2", "db1"], "ungrouped": ["solo"], "web": ["web1", "web2"],
             "canary": ["web2"], "db": ["db1"], "apps": ["web1"]},
            id="groups: the hosts of every group, children included, in inventory order",
        ),
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
        pytest.param("!canary", ["solo", "web1", "db1"], id="only an exclusion starts from all (as Ansible)"),
        pytest.param("&web", ["web1", "web2"], id="only an intersection starts from all"),
        pytest.param("!web:!db", ["solo"], id="only exclusions"),
        pytest.param("&web:!canary", ["web1"], id="an intersection and an exclusion"),
        pytest.param("!web1,&web", ["web2"], id="the order of the terms does not matter"),
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
    write(tmp_path, {"inv.yml": "all:\n  vars: {v: 1}\n  hosts:\n    a: {}\n"})
    inventory = load(tmp_path / "inv.yml")
    before = inventory.variables("a")  # memberships computed before localhost exists
    assert inventory.select("localhost") == ["localhost"]
    assert inventory.select("all") == ["a"]
    assert inventory.select("!a") == []
    local = inventory.variables("localhost")
    assert (local["group_names"], "v" in local, local["groups"]) == ([], False, {"all": ["a"], "ungrouped": ["a"]})
    assert inventory.variables("a")["groups"] == before["groups"]


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


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("---\nall:\n  hosts:\n    y1: {v: 1}\n", {"y1": 1}, id="YAML starting with ---"),
        pytest.param("all:\n  hosts:\n    y1: {v: 1}\n", {"y1": 1}, id="YAML without ---"),
        pytest.param('{"all": {"hosts": {"j1": {"v": 2}}}}\n', {"j1": 2}, id="JSON"),
        pytest.param("# comment\n---\nweb:\n  hosts:\n    y1:\n", {"y1": None}, id="YAML after a comment"),
        pytest.param("i1 v=3\n[web]\ni2 v=4\n", {"i1": 3, "i2": 4}, id="INI with sections"),
        pytest.param("i1 v=3\ni2\n", {"i1": 3, "i2": None}, id="INI of bare host lines (a YAML string, not a mapping)"),
        pytest.param("", {}, id="an empty file"),
    ],
)
def test_a_file_without_suffix_is_yaml_if_it_reads_as_a_yaml_mapping(tmp_path: Path, text: str, expected: dict) -> None:
    (tmp_path / "hosts").write_text(text)
    inventory = load(tmp_path / "hosts")
    assert {h: inventory.variables(h).get("v") for h in inventory.select("all")} == expected


@pytest.mark.parametrize(
    "name, text, expected",
    [
        pytest.param("hosts", "---\nall: {hosts: [\n", "hosts:3:1: invalid YAML", id="broken YAML with --- reports the YAML error"),
        pytest.param("hosts", "all:\n\thosts:\n", "hosts:2:1: read as an INI inventory since reading it as YAML failed",
                     id="broken YAML without --- says why it was read as INI"),
        pytest.param("hosts", "all:\n\thosts:\n", "hosts:1:1: invalid host name 'all:'", id="a YAML key is no INI host"),
        pytest.param("hosts.yml", "i1 v=3\n", "hosts.yml:1:1: an inventory must be a mapping", id=".yml is always YAML"),
        pytest.param("hosts.json", "i1 v=3\n", "hosts.json:1:1: an inventory must be a mapping", id=".json is always YAML"),
        pytest.param("hosts.ini", "all:\n  hosts:\n", "hosts.ini:1:1: invalid host name 'all:'", id=".ini is always INI"),
    ],
)
def test_inventory_format_errors(tmp_path: Path, name: str, text: str, expected: str) -> None:
    (tmp_path / name).write_text(text)
    problems = Problems()
    load_inventories([tmp_path / name], problems)
    messages = [str(p) for p in problems.errors]
    assert any(expected in m for m in messages), messages


@pytest.mark.parametrize(
    "files, expected_problem",
    [
        pytest.param({"a.yml": "all: {hosts: [\n"}, "a.yml:2:1: invalid YAML", id="invalid YAML"),
        pytest.param({"a.yml": "- a\n"}, "a.yml:1:1: an inventory must be a mapping", id="not a mapping"),
        pytest.param({"a": "bad\x00binary"}, "not a text file", id="binary file"),
        pytest.param({"a.yml": "x: 1\n", "b.yml": "- b\n"}, "b.yml:1:1: an inventory must be a mapping",
                     id="a bad file after a good one"),
    ],
)
def test_one_bad_file_does_not_stop_the_directory(tmp_path: Path, files: dict[str, str], expected_problem: str) -> None:
    inv = tmp_path / "inventory"
    write(inv, {**files, "m.yml": "all:\n  hosts:\n    m1: {}\n", "z.ini": "[db]\nz1\n",
                "group_vars/all.yml": "from_group_vars: 1\n", "host_vars/z1.yml": "from_host_vars: 2\n"})
    problems = Problems()
    inventory = load_inventories([inv], problems)
    assert [str(p) for p in problems.errors if expected_problem in str(p)], [str(p) for p in problems.items]
    assert {"m1", "z1"} <= set(inventory.select("all"))
    assert inventory.variables("z1")["from_group_vars"] == 1
    assert inventory.variables("z1")["from_host_vars"] == 2


def test_a_missing_source_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path, {"good/hosts.yml": "all:\n  hosts:\n    g1: {}\n", "good/group_vars/all.yml": "v: 1\n"})
    problems = Problems()
    inventory = load_inventories([tmp_path / "missing.yml", tmp_path / "good" / "hosts.yml"], problems)
    assert [str(p) for p in problems.errors] == [f"{tmp_path / 'missing.yml'}: no such inventory file"]
    assert inventory.variables("g1")["v"] == 1


@pytest.mark.parametrize(
    "line, expected",
    [
        pytest.param("web[1:10:2]", ["web1", "web3", "web5", "web7", "web9"], id="a step"),
        pytest.param("web[01:10:3].lan", ["web01.lan", "web04.lan", "web07.lan", "web10.lan"], id="leading zeros and a step"),
        pytest.param("w[001:003]", ["w001", "w002", "w003"], id="leading zeros give the width"),
        pytest.param("n[8:11]", ["n8", "n9", "n10", "n11"], id="no leading zero, no padding"),
        pytest.param("n[:2]", ["n0", "n1", "n2"], id="start defaults to 0"),
        pytest.param("db-[a:c]", ["db-a", "db-b", "db-c"], id="letters"),
        pytest.param("db-[a:g:3]", ["db-a", "db-d", "db-g"], id="letters with a step"),
        pytest.param("x[y:B]", ["xy", "xz", "xA", "xB"], id="letters run a-z then A-Z, as Ansible"),
        pytest.param("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"], id="several ranges multiply"),
        pytest.param("plain", ["plain"], id="no range"),
    ],
)
def test_ini_host_ranges(tmp_path: Path, line: str, expected: list[str]) -> None:
    write(tmp_path, {"hosts.ini": f"[web]\n{line} v=1\n"})
    inventory = load(tmp_path / "hosts.ini")
    assert inventory.select("web") == expected
    assert all(inventory.variables(h)["v"] == 1 for h in expected)


@pytest.mark.parametrize(
    "line, expected",
    [
        pytest.param("  web[5:1]", "hosts.ini:2:6: host range 'web[5:1]': start 5 is after end 1", id="start after end"),
        pytest.param("db[e:a]", "hosts.ini:2:3: host range 'db[e:a]': start 'e' is after end 'a'", id="letters backwards"),
        pytest.param("h[1:20000]", "host range 'h[1:20000]': makes 20000 hosts, more than the limit of 10000", id="too many hosts"),
        pytest.param("h[1:200][1:100]", "makes 20000 hosts, more than the limit of 10000", id="too many through two ranges"),
        pytest.param("h[1:99999999999]", "makes 99999999999 hosts, more than the limit of 10000", id="a huge range is refused without being built"),
        pytest.param("w[01:100]", "with leading zeros, start '01' and end '100' need the same number of digits",
                     id="leading zeros of another width (as Ansible)"),
        pytest.param("w[1:5:0]", "the step '0' is not a positive whole number", id="zero step"),
        pytest.param("w[1:5:-1]", "the step '-1' is not a positive whole number", id="negative step"),
        pytest.param("w[1:5", "'[' without a closing ']'", id="unclosed bracket"),
        pytest.param("w[1]", "a host range is [start:end] or [start:end:step]", id="no colon"),
        pytest.param("w[1:]", "a host range needs an end", id="no end"),
        pytest.param("w[a:5]", "start and end must be both numbers or both single letters", id="mixed kinds"),
    ],
)
def test_bad_ini_host_ranges_are_problems_at_the_line(tmp_path: Path, line: str, expected: str) -> None:
    write(tmp_path, {"hosts.ini": f"[web]\n{line}\nok1\n"})
    problems = Problems()
    inventory = load_inventories([tmp_path / "hosts.ini"], problems)
    messages = [str(p) for p in problems.errors]
    assert len(messages) == 1 and messages[0].endswith(expected), messages
    assert messages[0].startswith(str(tmp_path / "hosts.ini:2:"))
    assert inventory.select("web") == ["ok1"]  # the other lines are still read


@pytest.mark.parametrize(
    "name, text, expected",
    [
        pytest.param("inv.ini", "[a:children]\nb\n[b:children]\na\n[b]\nh1\n", "inv.ini:1:1: group cycle: a -> b -> a",
                     id="two groups children of each other"),
        pytest.param("inv.ini", "[a:children]\nb\n[b:children]\nc\n[c:children]\na\n[c]\nh1\n",
                     "inv.ini:1:1: group cycle: a -> b -> c -> a", id="three groups"),
        pytest.param("inv.ini", "[a:children]\na\n[a]\nh1\n", "inv.ini:1:1: group cycle: a -> a", id="its own child in INI"),
        pytest.param("inv.ini", "[top:children]\nweb\n[web:children]\nall\n[web]\nh1\n",
                     "inv.ini:1:1: group cycle: all -> top -> web -> all", id="all as a child"),
        pytest.param("inv.yml", "all:\n  children:\n    a:\n      hosts: {h1: {}}\n      children:\n        b:\n"
                     "          children:\n            a: {}\n", "inv.yml:3:5: group cycle: a -> b -> a", id="YAML"),
    ],
)
def test_group_cycles_are_problems_and_do_not_hang(tmp_path: Path, name: str, text: str, expected: str) -> None:
    write(tmp_path, {name: text})
    problems = Problems()
    inventory = load_inventories([tmp_path / name], problems)
    messages = [str(p) for p in problems.errors]
    assert messages == [f"{tmp_path}/{expected}"], messages
    # with the cycle broken, everything that walks the groups still ends
    assert inventory.select("all") == ["h1"]
    assert "h1" in inventory.hosts_of("all")
    assert "all" in inventory.groups_of("h1")
    assert inventory.variables("h1")["groups"]["all"] == ["h1"]


def _chain(levels: int) -> str:
    """g0 is the parent of g1 ... of g<levels>, which holds the host; each level sets `v`."""
    lines = [f"[g{i}:children]\ng{i + 1}\n[g{i}:vars]\nv={i}" for i in range(levels)]
    return "\n".join([*lines, f"[g{levels}]\nleaf", f"[g{levels}:vars]\nv={levels}"]) + "\n"


def _diamond(levels: int) -> str:
    """a<i> and b<i> are both parents of a<i+1> and b<i+1>: 2**levels paths from the top to the host."""
    lines = [f"[{p}{i}:children]\na{i + 1}\nb{i + 1}" for i in range(levels) for p in "ab"]
    return "\n".join([*lines, f"[a{levels}]\nleaf", f"[a{levels}:vars]\nv=bottom", "[b0:vars]\nv=top"]) + "\n"


@pytest.mark.parametrize(
    "text, group_count, value",
    [
        pytest.param(_chain(3000), 3001, "3000", id="a chain of 3000 groups (deeper than Python's recursion limit)"),
        pytest.param(_diamond(30), 61, "bottom", id="a 30-level diamond (a billion paths)"),
    ],
)
def test_deep_group_graphs_load(tmp_path: Path, text: str, group_count: int, value: str) -> None:
    (tmp_path / "inv.ini").write_text(text)
    started = time.perf_counter()
    inventory = load(tmp_path / "inv.ini")
    variables = inventory.variables("leaf")
    assert time.perf_counter() - started < 2
    assert len(variables["group_names"]) == group_count
    assert variables["v"] == value  # the deepest group wins: depth is the longest path from all
    assert inventory.select("all") == ["leaf"]


def test_variables_scale_linearly(tmp_path: Path) -> None:
    """5000 hosts in 100 groups under 5 regions: every host's variables in well under 2 s.

    (The `groups` magic variable is built once and shared; building it per host was quadratic.)"""
    lines = []
    for g in range(100):
        lines += [f"[g{g}]", f"h{g}-[00:49] own=h{g}", f"[g{g}:vars]", f"group=g{g}", f"[region{g % 5}:children]", f"g{g}"]
    (tmp_path / "inv.ini").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    inventory = load(tmp_path / "inv.ini")
    variables = {h: inventory.variables(h) for h in inventory.select("all")}
    elapsed = time.perf_counter() - started
    assert len(variables) == 5000
    assert elapsed < 2, f"{elapsed:.2f} s"
    sample = variables["h42-07"]
    assert (sample["group"], sample["own"], sample["group_names"]) == ("g42", "h42", ["g42", "region2"])
    assert len(sample["groups"]["region2"]) == 1000 and sample["groups"]["g42"][:2] == ["h42-00", "h42-01"]
    assert inventory.groups_of("h42-07") == ["all", "region2", "g42"]
