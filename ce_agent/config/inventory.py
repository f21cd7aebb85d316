"""Ansible-style inventories (YAML and INI), group_vars/host_vars, variable precedence, host patterns."""

from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_agent.config.yamlfile import LocDict, load_yaml, read_text
from ce_agent.errors import Location, Problems, UserError

IMPLICIT_LOCALHOST = ("localhost", "127.0.0.1", "::1")
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")
_GROUP_KEYS = {"hosts", "vars", "children"}


@dataclass
class Group:
    """An inventory group: its own variables, direct hosts and child groups."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: set[str] = field(default_factory=set)
    loc: Location | None = None


@dataclass
class Host:
    """An inventory host: its inline variables and where it was declared."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    loc: Location | None = None
    implicit: bool = False


@dataclass
class Inventory:
    """Hosts and groups from one or more inventory sources, plus their group_vars/ and host_vars/."""

    hosts: dict[str, Host] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    group_vars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    host_vars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.group("all")
        self.group("ungrouped")
        self.groups["all"].children.append("ungrouped")
        self.groups["ungrouped"].parents.add("all")

    def group(self, name: str, loc: Location | None = None) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name, loc=loc)
        return self.groups[name]

    def host(self, name: str, loc: Location | None = None) -> Host:
        if name not in self.hosts:
            self.hosts[name] = Host(name, loc=loc)
        return self.hosts[name]

    def link(self, parent: str, child: str) -> None:
        if child not in self.groups[parent].children:
            self.groups[parent].children.append(child)
        self.groups[child].parents.add(parent)

    def add_host_to(self, group: str, host: str) -> None:
        if host not in self.groups[group].hosts:
            self.groups[group].hosts.append(host)

    def finish(self) -> None:
        """Ansible's implicit structure: every group under `all`, hosts of no group in `ungrouped`."""
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self.link("all", name)
        grouped = {h for name, g in self.groups.items() if name not in ("all", "ungrouped") for h in g.hosts}
        for name in self.hosts:
            if name not in grouped:
                self.add_host_to("ungrouped", name)
            else:
                ungrouped = self.groups["ungrouped"].hosts
                if name in ungrouped:
                    ungrouped.remove(name)

    # -- membership -------------------------------------------------------------------------

    def groups_of(self, host: str) -> list[str]:
        """Every group a host belongs to, directly or through parents, sorted as Ansible merges them."""
        direct = [name for name, g in self.groups.items() if host in g.hosts]
        found: set[str] = set()
        stack = list(direct)
        while stack:
            name = stack.pop()
            if name in found:
                continue
            found.add(name)
            stack.extend(self.groups[name].parents)
        if not self.hosts.get(host, Host(host)).implicit:
            found.add("all")
        return sorted(found, key=lambda g: (self._depth(g), g))

    def _depth(self, name: str, seen: frozenset[str] = frozenset()) -> int:
        parents = [p for p in self.groups[name].parents if p not in seen]
        if not parents:
            return 0
        return 1 + max(self._depth(p, seen | {name}) for p in parents)

    def hosts_of(self, group: str) -> list[str]:
        """Hosts of a group and of all its descendants, in inventory order."""
        members: set[str] = set()
        stack, seen = [group], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            members.update(self.groups[name].hosts)
            stack.extend(self.groups[name].children)
        return [h for h in self.hosts if h in members]

    # -- variables ---------------------------------------------------------------------------

    def variables(self, host: str) -> dict[str, Any]:
        """A host's variables, merged in Ansible's order (top-level keys replace, no deep merge):
        inline group vars (all, then parents before children, then by name) < group_vars/all <
        group_vars/GROUP < inline host vars < host_vars/HOST; magic variables on top."""
        groups = self.groups_of(host)
        merged: dict[str, Any] = {}
        for name in groups:
            merged.update(self.groups[name].vars)
        for name in groups:
            for layer in self.group_vars.get(name, []):
                merged.update(layer)
        h = self.hosts.get(host) or Host(host, implicit=True)
        merged.update(h.vars)
        for layer in self.host_vars.get(host, []):
            merged.update(layer)
        merged.setdefault("address", merged.get("ansible_host", host))
        merged["inventory_hostname"] = host
        merged["inventory_hostname_short"] = host.split(".", 1)[0]
        merged["group_names"] = sorted(g for g in groups if g not in ("all", "ungrouped"))
        merged["groups"] = {name: self.hosts_of(name) for name in self.groups}
        return merged

    # -- patterns ----------------------------------------------------------------------------

    def select(self, pattern: str) -> list[str]:
        """Hosts matching an Ansible host pattern (`all`, `web`, `a:b`, `a:&b`, `a:!b`, `web*`, `~re`).

        Raises ValueError naming each term that matches nothing."""
        terms = [t.strip() for t in re.split(r"[:,]", pattern) if t.strip()]
        if not terms:
            raise ValueError("empty host pattern")
        include: list[str] = []
        intersect: list[list[str]] = []
        exclude: set[str] = set()
        unknown = []
        for term in terms:
            prefix = term[0] if term[0] in "&!" else ""
            matched = self._match_term(term[len(prefix) :])
            if matched is None:
                unknown.append(term[len(prefix) :])
                continue
            if prefix == "&":
                intersect.append(matched)
            elif prefix == "!":
                exclude.update(matched)
            else:
                include.extend(h for h in matched if h not in include)
        if unknown:
            raise ValueError(f"no host or group matches {', '.join(repr(u) for u in unknown)}")
        return [h for h in include if all(h in s for s in intersect) and h not in exclude]

    def _match_term(self, term: str) -> list[str] | None:
        if term in ("all", "*"):
            return [h for h, host in self.hosts.items() if not host.implicit]
        if term in self.groups:
            return self.hosts_of(term)
        if term in self.hosts:
            return [term]
        if term in IMPLICIT_LOCALHOST:
            self.hosts[term] = Host(term, implicit=True)
            return [term]
        if term.startswith("~"):
            try:
                regex = re.compile(term[1:])
            except re.error as exc:
                raise ValueError(f"bad regular expression in host pattern {term!r}: {exc}") from None
            names = [n for n in self.groups if regex.search(n)]
            hosts = [h for h in self.hosts if regex.search(h)]
        elif any(c in term for c in "*?["):
            names = [n for n in self.groups if fnmatch.fnmatchcase(n, term)]
            hosts = [h for h in self.hosts if fnmatch.fnmatchcase(h, term)]
        else:
            return None
        members = set(hosts)
        for name in names:
            members.update(self.hosts_of(name))
        return [h for h in self.hosts if h in members] or None

    def all_names(self) -> list[str]:
        return sorted(set(self.groups) | set(self.hosts))


# -- loading ---------------------------------------------------------------------------------


def load_inventories(paths: list[Path], problems: Problems) -> Inventory:
    """Read every inventory source (file or directory) into one Inventory; problems are collected."""
    inventory = Inventory()
    vars_dirs: set[Path] = set()
    for path in paths:
        try:
            if path.is_dir():
                files = sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix in ("", ".yml", ".yaml", ".ini", ".json")
                )
                for file in files:
                    _load_source(inventory, file, problems)
                base = path
            else:
                _load_source(inventory, path, problems)
                base = path.parent
            if base.resolve() not in vars_dirs:
                vars_dirs.add(base.resolve())
                _load_vars_dirs(inventory, base, problems)
        except UserError as exc:
            problems.items.append(exc.problem)
    inventory.finish()
    return inventory


def _load_source(inventory: Inventory, path: Path, problems: Problems) -> None:
    inventory.sources.append(str(path))
    if path.suffix == ".ini":
        _load_ini(inventory, path, read_text(path, "inventory file"), problems)
        return
    if path.suffix in ("", ".cfg"):
        text = read_text(path, "inventory file")
        if _looks_like_ini(text):
            _load_ini(inventory, path, text, problems)
            return
    data = load_yaml(path, "inventory file")
    if data is None:
        return
    if not isinstance(data, dict):
        raise UserError("an inventory must be a mapping of groups (all: {hosts: ..., vars: ...})", Location(str(path), 1, 1))
    for name, body in data.items():
        _load_yaml_group(inventory, str(name), body, data, problems)


def _looks_like_ini(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        return stripped.startswith("[") or ("=" in stripped and ":" not in stripped.split("=", 1)[0]) or ":" not in stripped
    return False


def _load_yaml_group(inventory: Inventory, name: str, body: Any, parent: Any, problems: Problems) -> None:
    loc = parent.key_loc(name) if isinstance(parent, LocDict) else None
    group = inventory.group(name, loc)
    if body is None:
        return
    if not isinstance(body, dict):
        problems.add(loc, f"group {name!r} must be a mapping with hosts, vars or children")
        return
    for key in body:
        if key not in _GROUP_KEYS:
            problems.add(
                body.key_loc(key) if isinstance(body, LocDict) else loc,
                f"unknown key {key!r} in group {name!r}; valid keys: children, hosts, vars",
            )
    group_vars = body.get("vars")
    if group_vars is not None:
        if isinstance(group_vars, dict):
            group.vars.update(group_vars)
        else:
            problems.add(body.value_loc("vars"), f"vars of group {name!r} must be a mapping")
    hosts = body.get("hosts")
    if hosts is not None:
        if not isinstance(hosts, dict):
            problems.add(body.value_loc("hosts"), f"hosts of group {name!r} must be a mapping of host names")
        else:
            for host_name, host_vars in hosts.items():
                host = inventory.host(str(host_name), hosts.key_loc(host_name))
                if host_vars is not None and not isinstance(host_vars, dict):
                    problems.add(hosts.value_loc(host_name), f"variables of host {host_name!r} must be a mapping")
                elif host_vars:
                    host.vars.update(host_vars)
                inventory.add_host_to(name, str(host_name))
    children = body.get("children")
    if children is not None:
        if not isinstance(children, dict):
            problems.add(body.value_loc("children"), f"children of group {name!r} must be a mapping of groups")
        else:
            for child_name, child_body in children.items():
                if child_name == name:
                    problems.add(children.key_loc(child_name), f"group {name!r} cannot be its own child")
                    continue
                _load_yaml_group(inventory, str(child_name), child_body, children, problems)
                inventory.link(name, str(child_name))


_INI_SECTION = re.compile(r"^\[([^\]:]+)(?::(vars|children))?\]\s*$")
_RANGE = re.compile(r"\[(\d+):(\d+)\]|\[([a-z]):([a-z])\]")


def _load_ini(inventory: Inventory, path: Path, text: str, problems: Problems) -> None:
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        loc = Location(str(path), number, len(raw) - len(raw.lstrip()) + 1)
        if not line or line.startswith(("#", ";")):
            continue
        header = _INI_SECTION.match(line)
        if header:
            section, kind = header.group(1).strip(), header.group(2) or "hosts"
            inventory.group(section, loc)
            continue
        if line.startswith("["):
            problems.add(loc, f"bad section header {line!r}; expected [group], [group:vars] or [group:children]")
            continue
        try:
            words = _ini_split(line)
        except ValueError as exc:
            problems.add(loc, f"cannot parse line: {exc}")
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                problems.add(loc, f"expected key=value in [{section}:vars]")
                continue
            # Ansible reads values in a :vars section as strings.
            inventory.group(section).vars[key.strip()] = value.strip()
        elif kind == "children":
            child = words[0]
            inventory.group(child, loc)
            inventory.link(section, child)
        else:
            host_vars: dict[str, Any] = {}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    problems.add(loc, f"expected key=value after the host name, got {word!r}")
                    continue
                host_vars[key] = _ini_value(value)
            for name in _expand_ranges(words[0]):
                host = inventory.host(name, loc)
                host.vars.update(host_vars)
                if section != "ungrouped":
                    inventory.add_host_to(section, name)


def _ini_split(line: str) -> list[str]:
    import shlex

    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def _ini_value(value: str) -> Any:
    # Inline host variables are Python literals in Ansible's INI format; anything else stays a string.
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def _expand_ranges(pattern: str) -> list[str]:
    """`web[01:03]` → web01, web02, web03 (Ansible's host ranges)."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if match.group(1) is not None:
        start, end = match.group(1), match.group(2)
        width = len(start) if start.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(start), int(end) + 1)]
    else:
        items = [chr(c) for c in range(ord(match.group(3)), ord(match.group(4)) + 1)]
    return [name for item in items for name in _expand_ranges(head + item + tail)]


def _load_vars_dirs(inventory: Inventory, base: Path, problems: Problems) -> None:
    for folder, target in (("group_vars", inventory.group_vars), ("host_vars", inventory.host_vars)):
        directory = base / folder
        if not directory.is_dir():
            continue
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith("."):
                continue
            name = entry.name
            for suffix in _VARS_SUFFIXES[1:]:
                if entry.is_file() and name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            files = sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else [entry]
            for file in files:
                if file.name.startswith(".") or (file.suffix not in _VARS_SUFFIXES):
                    continue
                try:
                    data = load_yaml(file, "variables file")
                except UserError as exc:
                    problems.items.append(exc.problem)
                    continue
                if data is None:
                    continue
                if not isinstance(data, dict):
                    problems.add(Location(str(file), 1, 1), "a variables file must be a mapping of names to values")
                    continue
                target.setdefault(name, []).append(data)
