"""Ansible-style inventories (YAML and INI), group_vars/host_vars, variable precedence, host patterns."""

from __future__ import annotations

import ast
import fnmatch
import itertools
import math
import re
import stat
import string
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_agent.config.yamlfile import LocDict, LocList, load_yaml, parse_yaml, read_text
from ce_agent.errors import Location, Problem, Problems, UserError

IMPLICIT_LOCALHOST = ("localhost", "127.0.0.1", "::1")
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")
_YAML_SUFFIXES = (".yml", ".yaml", ".json")
_GROUP_KEYS = {"hosts", "vars", "children"}
#: One INI host line may not expand to more hosts than this (a typo like [1:1000000] is not a fleet).
MAX_RANGE_HOSTS = 10_000


@dataclass
class Group:
    """An inventory group: its own variables, direct hosts and child groups."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: set[str] = field(default_factory=set)
    loc: Location | None = None
    # Membership tests on the lists above would make loading quadratic in the size of a group.
    _host_set: set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _child_set: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._host_set = set(self.hosts)
        self._child_set = set(self.children)


@dataclass
class Host:
    """An inventory host: its inline variables and where it was declared."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    loc: Location | None = None
    implicit: bool = False


@dataclass
class _Index:
    """Group memberships computed once for the whole inventory, shared by every host's variables."""

    depth: dict[str, int]
    direct: dict[str, tuple[str, ...]]  # host -> the groups that list it, in group order
    members: dict[str, list[str]]  # group -> hosts of it and its descendants, in inventory order
    closures: dict[tuple[tuple[str, ...], bool], list[str]]  # (direct groups, add all) -> sorted groups


@dataclass
class Inventory:
    """Hosts and groups from one or more inventory sources, plus their group_vars/ and host_vars/."""

    hosts: dict[str, Host] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    group_vars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    host_vars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    # Built on first use and dropped by every change of membership; implicit localhost hosts added
    # by select() belong to no group, so they leave it valid.
    _index: _Index | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.group("all")
        self.group("ungrouped")
        self.link("all", "ungrouped")

    def group(self, name: str, loc: Location | None = None) -> Group:
        if name not in self.groups:
            self.groups[name] = Group(name, loc=loc)
            self._index = None
        return self.groups[name]

    def host(self, name: str, loc: Location | None = None) -> Host:
        if name not in self.hosts:
            self.hosts[name] = Host(name, loc=loc)
            self._index = None
        return self.hosts[name]

    def link(self, parent: str, child: str) -> None:
        group = self.groups[parent]
        if child not in group._child_set:
            group._child_set.add(child)
            group.children.append(child)
        self.groups[child].parents.add(parent)
        self._index = None

    def _unlink(self, parent: str, child: str) -> None:
        group = self.groups[parent]
        if child in group._child_set:
            group._child_set.discard(child)
            group.children.remove(child)
        self.groups[child].parents.discard(parent)
        self._index = None

    def add_host_to(self, group: str, host: str) -> None:
        target = self.groups[group]
        if host not in target._host_set:
            target._host_set.add(host)
            target.hosts.append(host)
            self._index = None

    def finish(self, problems: Problems | None = None) -> None:
        """Ansible's implicit structure: every group under `all`, hosts of no group in `ungrouped`.

        Group cycles (which Ansible refuses) are reported to `problems` and broken, so that nothing
        that walks the groups afterwards can loop."""
        # `all` is the ancestor of every group, so a group listing it as a child is always a cycle.
        into_all = [name for name in self.groups if name in self.groups["all"].parents]
        for name in into_all:
            self._unlink(name, "all")
        for cycle in self._break_cycles():
            self._report_cycle(problems, cycle)
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self.link("all", name)
        for name in into_all:
            self._report_cycle(problems, [*self._path_from_all(name), "all"])
        grouped: set[str] = set()
        for name, group in self.groups.items():
            if name not in ("all", "ungrouped"):
                grouped.update(group.hosts)
        ungrouped = self.groups["ungrouped"]
        ungrouped.hosts = [h for h, host in self.hosts.items() if h not in grouped and not host.implicit]
        ungrouped._host_set = set(ungrouped.hosts)
        self._index = None

    def _break_cycles(self) -> list[list[str]]:
        """Remove every edge that closes a cycle (depth-first, iterative: chains can be thousands deep)."""
        cycles: list[list[str]] = []
        state: dict[str, bool] = {}  # False while on the current path, True when done
        for root in list(self.groups):
            if root in state:
                continue
            state[root] = False
            path = [root]
            pending = [iter(tuple(self.groups[root].children))]
            while pending:
                child = next(pending[-1], None)
                if child is None:
                    pending.pop()
                    state[path.pop()] = True
                elif child not in state:
                    state[child] = False
                    path.append(child)
                    pending.append(iter(tuple(self.groups[child].children)))
                elif state[child] is False:
                    cycles.append([*path[path.index(child) :], child])
                    self._unlink(path[-1], child)
        return cycles

    def _path_from_all(self, name: str) -> list[str]:
        """A shortest chain of groups from `all` down to `name` (the graph is acyclic by now)."""
        came_from: dict[str, str | None] = {name: None}
        queue = deque([name])
        while queue:
            current = queue.popleft()
            if current == "all":
                break
            for parent in sorted(self.groups[current].parents):
                if parent not in came_from:
                    came_from[parent] = current
                    queue.append(parent)
        path: list[str] = []
        step: str | None = "all" if "all" in came_from else name
        while step is not None:
            path.append(step)
            step = came_from[step]
        return path

    def _report_cycle(self, problems: Problems | None, cycle: list[str]) -> None:
        if problems is None:
            return
        loc = next((self.groups[g].loc for g in cycle if self.groups[g].loc is not None), None)
        problems.add(loc, "group cycle: " + " -> ".join(cycle))

    # -- membership -------------------------------------------------------------------------

    def _idx(self) -> _Index:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> _Index:
        # Depth is the longest path from a root (after finish(), from `all`), as Ansible's Group.depth:
        # groups in topological order, so each is visited once whatever the shape of the graph.
        depth = {name: 0 for name in self.groups}
        waiting = {name: len(group.parents) for name, group in self.groups.items()}
        ready = deque(name for name, count in waiting.items() if count == 0)
        while ready:
            name = ready.popleft()
            for child in self.groups[name].children:
                depth[child] = max(depth[child], depth[name] + 1)
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        direct: dict[str, list[str]] = {}
        for name, group in self.groups.items():
            for host in group.hosts:
                direct.setdefault(host, []).append(name)
        index = _Index(depth, {h: tuple(g) for h, g in direct.items()}, {name: [] for name in self.groups}, {})
        for host in self.hosts:
            for name in self._closure(index, index.direct.get(host, ()), False):
                index.members[name].append(host)
        return index

    def _closure(self, index: _Index, direct: tuple[str, ...], add_all: bool) -> list[str]:
        """The groups reached from `direct` through parents, sorted as Ansible merges them.

        Hosts listed in the same groups share one result, so this costs per combination, not per host."""
        key = (direct, add_all)
        cached = index.closures.get(key)
        if cached is None:
            found: set[str] = set()
            stack = list(direct)
            while stack:
                name = stack.pop()
                if name not in found:
                    found.add(name)
                    stack.extend(self.groups[name].parents)
            if add_all:
                found.add("all")
            cached = index.closures[key] = sorted(found, key=lambda g: (index.depth[g], g))
        return cached

    def groups_of(self, host: str) -> list[str]:
        """Every group a host belongs to, directly or through parents, sorted as Ansible merges them."""
        index = self._idx()
        implicit = self.hosts.get(host, Host(host)).implicit
        return list(self._closure(index, index.direct.get(host, ()), not implicit))

    def hosts_of(self, group: str) -> list[str]:
        """Hosts of a group and of all its descendants, in inventory order."""
        return list(self._idx().members[group])

    # -- variables ---------------------------------------------------------------------------

    def variables(self, host: str) -> dict[str, Any]:
        """A host's variables, merged in Ansible's order (top-level keys replace, no deep merge):
        inline group vars (all, then parents before children, then by name) < group_vars/all <
        group_vars/GROUP < inline host vars < host_vars/HOST; magic variables on top.

        `groups` is one mapping shared by every host (read it, never change it)."""
        index = self._idx()
        groups = self._closure(index, index.direct.get(host, ()), not self.hosts.get(host, Host(host)).implicit)
        merged: dict[str, Any] = {}
        for name in groups:
            merged.update(self.groups[name].vars)
        for name in groups:
            for layer in self.group_vars.get(name, []):
                merged.update(layer)
        merged.update((self.hosts.get(host) or Host(host, implicit=True)).vars)
        for layer in self.host_vars.get(host, []):
            merged.update(layer)
        merged.setdefault("address", merged.get("ansible_host", host))
        merged["inventory_hostname"] = host
        merged["inventory_hostname_short"] = host.split(".", 1)[0]
        merged["group_names"] = sorted(g for g in groups if g not in ("all", "ungrouped"))
        merged["groups"] = index.members
        return merged

    # -- patterns ----------------------------------------------------------------------------

    def select(self, pattern: str) -> list[str]:
        """Hosts matching an Ansible host pattern (`all`, `web`, `a:b`, `a:&b`, `a:!b`, `web*`, `~re`).

        As in Ansible, a pattern of only exclusions and intersections (`!web1`, `&db`) starts from `all`.
        Raises ValueError naming each term that matches nothing."""
        terms = [t.strip() for t in re.split(r"[:,]", pattern) if t.strip()]
        if not terms:
            raise ValueError("empty host pattern")
        include: dict[str, None] = {}  # an ordered set: a host once, where it first matched
        intersect: list[set[str]] = []
        exclude: set[str] = set()
        unknown = []
        for term in terms:
            prefix = term[0] if term[0] in "&!" else ""
            matched = self._match_term(term[len(prefix) :])
            if matched is None:
                unknown.append(term[len(prefix) :])
            elif prefix == "&":
                intersect.append(set(matched))
            elif prefix == "!":
                exclude.update(matched)
            else:
                include.update(dict.fromkeys(matched))
        if unknown:
            raise ValueError(f"no host or group matches {', '.join(repr(u) for u in unknown)}")
        if not any(term[0] not in "&!" for term in terms):
            include = dict.fromkeys(self._match_term("all") or [])
        return [h for h in include if h not in exclude and all(h in s for s in intersect)]

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
            members.update(self._idx().members[name])
        return [h for h in self.hosts if h in members] or None

    def all_names(self) -> list[str]:
        return sorted(set(self.groups) | set(self.hosts))


# -- loading ---------------------------------------------------------------------------------


def load_inventories(paths: list[Path], problems: Problems) -> Inventory:
    """Read every inventory source (file or directory) into one Inventory; problems are collected.

    A broken file is reported and skipped: the other files, and the group_vars/ and host_vars/
    next to them, are still read, so one pass reports everything."""
    inventory = Inventory()
    vars_dirs: set[Path] = set()
    for path in paths:
        if path.is_dir():
            try:
                files = sorted(
                    p
                    for p in path.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix in ("", ".yml", ".yaml", ".ini", ".json")
                )
            except OSError as exc:
                problems.add(Location(str(path)), f"cannot read the inventory directory: {exc.strerror or exc}")
                continue
            for file in files:
                _load_source_reporting(inventory, file, problems)
            base = path
        else:
            _load_source_reporting(inventory, path, problems)
            if not path.exists():
                continue
            base = path.parent
        if base.resolve() not in vars_dirs:
            vars_dirs.add(base.resolve())
            _load_vars_dirs(inventory, base, problems)
    inventory.finish(problems)
    _check_connection_vars(inventory, problems)
    return inventory


def _check_connection_vars(inventory: Inventory, problems: Problems) -> None:
    """`connection: telnet`, `ansible_port: abc` and the like, located; templates are checked at run time."""
    from ce_agent.remote import variable_problems

    layers: list[tuple[dict[str, Any], Location | None]] = [(g.vars, g.loc) for g in inventory.groups.values()]
    layers += [(h.vars, h.loc) for h in inventory.hosts.values()]
    layers += [(layer, None) for found in (inventory.group_vars, inventory.host_vars) for ls in found.values() for layer in ls]
    for variables, loc in layers:
        for key, message in variable_problems(variables):
            where = variables.value_loc(key) if isinstance(variables, LocDict) else loc
            problems.add(where, f"{key}: {message}")


def _load_source_reporting(inventory: Inventory, path: Path, problems: Problems) -> None:
    try:
        _load_source(inventory, path, problems)
    except UserError as exc:
        problems.items.append(exc.problem)


def _load_source(inventory: Inventory, path: Path, problems: Problems) -> None:
    inventory.sources.append(str(path))
    if path.suffix == ".ini":
        text = read_text(path, "inventory file")
        _load_ini(inventory, path, text, problems)
        _warn_if_exposed(path, problems, text=text)
        return
    if path.suffix in _YAML_SUFFIXES:
        data = load_yaml(path, "inventory file")
        _warn_if_exposed(path, problems, data=data)
    else:
        # As Ansible: a file without a known suffix is YAML when it reads as a YAML mapping, else INI.
        text = read_text(path, "inventory file")
        try:
            data = parse_yaml(text, str(path))
            yaml_error = None
        except UserError as exc:
            data, yaml_error = None, exc
        if not isinstance(data, dict):
            if yaml_error is not None and _first_line(text).startswith(("---", "{")):
                raise yaml_error  # clearly meant as YAML: its syntax error is the useful message
            before = len(problems.items)
            _load_ini(inventory, path, text, problems)
            if yaml_error is not None and len(problems.items) > before:
                message = f"read as an INI inventory since reading it as YAML failed: {yaml_error.problem.message}"
                problems.items.append(Problem(yaml_error.problem.location, message))
            _warn_if_exposed(path, problems, text=text)
            return
        _warn_if_exposed(path, problems, data=data)
    if data is None:
        return
    if not isinstance(data, dict):
        raise UserError("an inventory must be a mapping of groups (all: {hosts: ..., vars: ...})", Location(str(path), 1, 1))
    for name, body in data.items():
        _load_yaml_group(inventory, str(name), body, data, problems)


def _first_line(text: str) -> str:
    """The first line that is not blank or a comment."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return stripped
    return ""


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
            _merge_vars(group, group_vars)
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
                    _merge_vars(host, host_vars)
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


def _merge_vars(owner: Any, new: dict[str, Any]) -> None:
    """Add variables, keeping where each was written (errors in `routes:` etc. then name the line)."""
    if not isinstance(owner.vars, LocDict):
        owner.vars = LocDict(owner.vars)
    owner.vars.update(new)
    if isinstance(new, LocDict):
        owner.vars.key_locs.update(new.key_locs)
        owner.vars.value_locs.update(new.value_locs)


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
            # kept with its line, so that an error about the value (`ansible_port=abc`) names it
            _merge_vars(inventory.group(section), _located({key.strip(): value.strip()}, loc))
        elif kind == "children":
            child = words[0]
            inventory.group(child, loc)
            inventory.link(section, child)
        else:
            pattern = words[0]
            if pattern.endswith(":"):
                # Ansible refuses it too; usually a YAML inventory that was read as INI
                problems.add(loc, f"invalid host name {pattern!r}")
                continue
            try:
                names = _expand_ranges(pattern)
            except _RangeError as exc:
                col = loc.col + exc.offset if line.startswith(pattern) else loc.col
                problems.add(Location(str(path), number, col), f"host range {pattern!r}: {exc}")
                continue
            host_vars: dict[str, Any] = {}
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep:
                    problems.add(loc, f"expected key=value after the host name, got {word!r}")
                    continue
                host_vars[key] = _ini_value(value)
            for name in names:
                host = inventory.host(name, loc)
                host.vars.update(host_vars)
                if section != "ungrouped":
                    inventory.add_host_to(section, name)


def _located(variables: dict[str, Any], loc: Location) -> LocDict:
    located = LocDict(variables)
    located.loc = loc
    located.key_locs.update(dict.fromkeys(variables, loc))
    return located


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


class _RangeError(ValueError):
    """A host range that cannot be expanded; `offset` is where it starts in the host pattern."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


_DIGITS = re.compile(r"[0-9]+")


def _expand_ranges(pattern: str) -> list[str]:
    """Ansible's host ranges: `web[01:03]` → web01, web02, web03; `[1:9:2]` takes every second
    number; `[a:f]` letters (a-z then A-Z, as Ansible); several ranges multiply.

    Unlike Ansible, a range whose start is after its end is an error rather than no host at all,
    and so is a pattern making more than MAX_RANGE_HOSTS hosts."""
    segments: list[tuple[range | str | list[str], int]] = []  # (values, zero-padded width)
    pos = 0
    first = pattern.find("[")
    while (start := pattern.find("[", pos)) >= 0:
        end = pattern.find("]", start)
        if end < 0:
            raise _RangeError("'[' without a closing ']'", start)
        segments.append(([pattern[pos:start]], 0))
        segments.append(_range_values(pattern[start + 1 : end], start))
        pos = end + 1
    if not segments:
        return [pattern]
    segments.append(([pattern[pos:]], 0))
    # Count before expanding: a range like [1:100000000] must not be built to be refused.
    total = math.prod(len(values) for values, _ in segments)
    if total > MAX_RANGE_HOSTS:
        raise _RangeError(f"makes {total} hosts, more than the limit of {MAX_RANGE_HOSTS}", first)
    columns = [[str(v).zfill(width) for v in values] for values, width in segments]
    return ["".join(parts) for parts in itertools.product(*columns)]


def _range_values(body: str, offset: int) -> tuple[range | str, int]:
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise _RangeError("a host range is [start:end] or [start:end:step]", offset)
    start, end = bounds[0] or "0", bounds[1]
    if not end:
        raise _RangeError("a host range needs an end", offset)
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not _DIGITS.fullmatch(step_text) or int(step_text) == 0:
        raise _RangeError(f"the step {step_text!r} is not a positive whole number", offset)
    step = int(step_text)
    if len(start) == 1 and len(end) == 1 and start in string.ascii_letters and end in string.ascii_letters:
        first, last = string.ascii_letters.index(start), string.ascii_letters.index(end)
        if first > last:
            raise _RangeError(f"start {start!r} is after end {end!r}", offset)
        return string.ascii_letters[first : last + 1 : step], 0
    if not (_DIGITS.fullmatch(start) and _DIGITS.fullmatch(end)):
        raise _RangeError("start and end must be both numbers or both single letters", offset)
    width = len(start) if start.startswith("0") and len(start) > 1 else 0
    if width and len(end) != width:
        # Ansible's rule: the leading zeros give the width of every name
        raise _RangeError(f"with leading zeros, start {start!r} and end {end!r} need the same number of digits", offset)
    if int(start) > int(end):
        raise _RangeError(f"start {start} is after end {end}", offset)
    return range(int(start), int(end) + 1, step), width


def _load_vars_dirs(inventory: Inventory, base: Path, problems: Problems) -> None:
    for folder, target in (("group_vars", inventory.group_vars), ("host_vars", inventory.host_vars)):
        directory = base / folder
        if not directory.is_dir():
            continue
        try:
            entries = sorted(directory.iterdir())
        except OSError as exc:
            problems.add(Location(str(directory)), f"cannot read the directory: {exc.strerror or exc}")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = entry.name
            for suffix in _VARS_SUFFIXES[1:]:
                if entry.is_file() and name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            try:
                files = sorted(p for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else [entry]
            except OSError as exc:
                problems.add(Location(str(entry)), f"cannot read the directory: {exc.strerror or exc}")
                continue
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
                _warn_if_exposed(file, problems, data=data)
                target.setdefault(name, []).append(data)


# -- secrets written out in files others can read --------------------------------------------

#: words of a variable name whose literal value is a credential (`smtp_password`, `ansible_ssh_pass`)
_SECRET_WORDS = frozenset({"password", "passwd", "pass", "passphrase", "secret", "token", "apikey"})
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def _warn_if_exposed(path: Path, problems: Problems, data: Any = None, text: str | None = None) -> None:
    """A warning, not an error (every existing setup would break): a file any local user can read
    holds a credential written out, and how to fix it. Secrets read through {{ env.X }} or
    {{ file(...) }} are not in the file, so they are fine."""
    mode = _readable_by_others(path)
    if mode is None:
        return
    found = _secret_in_ini(text, str(path)) if text is not None else _secret_in(data, Location(str(path), 1, 1))
    if found is not None:
        where, what = found
        problems.warn(where, f"{what} is written in this file, which other users can read (mode {mode}): run "
                             f"`chmod 600 {path}` (or `chmod o-r`), or read the secret with "
                             "{{ env.NAME }} or {{ file('PATH') }}")


def _readable_by_others(path: Path) -> str | None:
    """The file's mode (`0644`) when any local user can read it: its own bits allow it and every
    directory above it can be entered by others; None otherwise, or when that cannot be told."""
    try:
        real = path.resolve()
        info = real.stat()
        if not stat.S_ISREG(info.st_mode) or not info.st_mode & stat.S_IROTH:
            return None
        if any(not parent.stat().st_mode & stat.S_IXOTH for parent in real.parents):
            return None
    except OSError:
        return None
    return f"{stat.S_IMODE(info.st_mode):04o}"


def _secret_words(key: str) -> bool:
    lowered = key.lower()
    return bool(_SECRET_WORDS.intersection(re.split(r"[^a-z]+", lowered))) or lowered.endswith("api_key")


def _secret_literal(key: str, value: str) -> str | None:
    """What credential `value` writes out (templates in it are not written out), or None."""
    from ce_agent.redact import url_credentials

    literal = _TEMPLATE.sub("", value).strip()
    if "://" in literal:
        parts = url_credentials(literal)
        return f"the {' and '.join(parts)} of a URL" if parts else None
    if literal and literal == value.strip() and _secret_words(key):
        return f"the value of {key!r}"
    return None


def _secret_in(value: Any, loc: Location | None, key: str = "") -> tuple[Location | None, str] | None:
    """Where the first credential written out in YAML data is, and what it is."""
    if isinstance(value, dict):
        for name, item in value.items():
            where = value.value_loc(name) if isinstance(value, LocDict) else loc
            found = _secret_in(item, where, str(name))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _secret_in(item, value.item_loc(index) if isinstance(value, LocList) else loc, key)
            if found is not None:
                return found
    elif isinstance(value, str):
        what = _secret_literal(key, value)
        if what is not None:
            return loc, what
    return None


def _secret_in_ini(text: str, file: str) -> tuple[Location | None, str] | None:
    """The same for an INI inventory: URLs anywhere on a line, `name=value` pairs by their name."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        candidates = [("", match.group()) for match in _URL_IN_TEXT.finditer(line)]
        candidates += [(key, value.strip("'\"")) for key, _, value in (w.partition("=") for w in line.split()) if value]
        key, _, value = line.partition("=")
        candidates.append((key.strip(), value.strip().strip("'\"")))
        for key, value in candidates:
            what = _secret_literal(key, value) if value else None
            if what is not None:
                return Location(file, number, 1), what
    return None
