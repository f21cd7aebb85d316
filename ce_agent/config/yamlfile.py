"""Safe, bounded YAML reading that remembers where every key and value came from."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from ce_agent.errors import Location, UserError

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 256
MAX_NODES = 200_000


class LocDict(dict):
    """A mapping read from YAML: its own location, and the location of each key and value."""

    __slots__ = ("loc", "key_locs", "value_locs")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loc: Location | None = None
        self.key_locs: dict[Any, Location] = {}
        self.value_locs: dict[Any, Location] = {}

    def key_loc(self, key: Any) -> Location | None:
        return self.key_locs.get(key, self.loc)

    def value_loc(self, key: Any) -> Location | None:
        return self.value_locs.get(key, self.key_loc(key))


class LocList(list):
    """A sequence read from YAML with the location of each item."""

    __slots__ = ("loc", "item_locs")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.loc: Location | None = None
        self.item_locs: list[Location] = []

    def item_loc(self, index: int) -> Location | None:
        return self.item_locs[index] if index < len(self.item_locs) else self.loc


def _mark(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader (no python tags) that bounds depth, aliases and size, and records locations."""

    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self.name = name
        self._depth = 0
        self._aliases = 0
        self._nodes = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # The scanner reads a whole run of `[[[[...` ahead before the composer sees the first node
        # (each `[` may still start a key), quadratically: 10,000 of them took up to a second.
        if self.flow_level >= MAX_DEPTH:
            raise _Limit(f"nested deeper than {MAX_DEPTH} levels", self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Limit(f"more than {MAX_ALIASES} YAML aliases", self.peek_event().start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Limit(f"more than {MAX_NODES} YAML nodes", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Limit(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_map(self, node: yaml.MappingNode) -> Any:
        data = LocDict()
        data.loc = _mark(self.name, node)
        yield data
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise _Limit("a mapping key must be a plain value", key_node.start_mark) from None
            if key in data:
                raise _Limit(f"duplicate key {key!r}", key_node.start_mark)
            data[key] = self.construct_object(value_node, deep=True)
            data.key_locs[key] = _mark(self.name, key_node)
            data.value_locs[key] = _mark(self.name, value_node)

    def construct_yaml_seq(self, node: yaml.SequenceNode) -> Any:
        data = LocList()
        data.loc = _mark(self.name, node)
        yield data
        for child in node.value:
            data.append(self.construct_object(child, deep=True))
            data.item_locs.append(_mark(self.name, child))


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_yaml_seq)


class _Limit(Exception):
    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.mark = mark


def read_text(path: Path, what: str = "file") -> str:
    """The text of a config file, or a UserError naming the file and what is wrong with it."""
    name = str(path)
    try:
        if path.is_dir():
            raise UserError(f"is a directory, expected {_a(what)}", Location(name))
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise UserError(f"{what} is {size} bytes, larger than the limit of {MAX_BYTES}", Location(name))
        with _open_file(path, what) as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"no such {what}", Location(name)) from None
    except PermissionError:
        raise UserError(f"permission denied reading the {what}", Location(name)) from None
    except OSError as exc:
        raise UserError(f"cannot read the {what}: {exc.strerror or exc}", Location(name)) from None
    if b"\x00" in raw:
        raise UserError(f"not a text file (binary data): expected {_a('YAML ' + what)}", Location(name))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError("not UTF-8 text", Location(name, line, 1)) from None


def _open_file(path: Path, what: str) -> BinaryIO:
    """`path` opened for reading without ever waiting for a writer: a named FIFO nobody writes to would
    hang `validate` (and a daemon's reload) forever, so it is refused; an anonymous pipe (`<(cmd)`,
    `/dev/stdin`) has its writer already and is read as before."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode) and "pipe:[" not in os.path.realpath(path):
            raise UserError(f"is a named pipe (FIFO), expected {_a(what)} (a regular file)", Location(str(path)))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def load_yaml(path: Path, what: str = "file") -> Any:
    """Parse one YAML document safely; every failure is a UserError with the file, line and column."""
    text = read_text(path, what)
    return parse_yaml(text, str(path))


def parse_yaml(text: str, name: str) -> Any:
    try:
        loader = _Loader(text, name)  # reads the whole text at once: a control character fails here
    except yaml.reader.ReaderError as exc:
        raise _reader_error(text, name, exc) from None
    try:
        if not loader.check_node():
            return None
        node = loader.get_node()
        if loader.check_node():
            raise _Limit("more than one YAML document (only one is read)", loader.peek_event().start_mark)
        data = loader.construct_document(node)
        if _expanded_size(data, {}) > MAX_NODES:
            # aliases are shared when read, but everything that walks the data walks every copy
            raise _Limit(f"expands to more than {MAX_NODES} values through aliases", node.start_mark)
        return data
    except _Limit as exc:
        raise UserError(str(exc), _loc(name, exc.mark)) from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "cannot construct this value"
        if "could not determine a constructor" in problem:
            tag = problem.split("tag", 1)[-1].strip().strip("'")
            problem = f"the YAML tag {tag} is not allowed (only plain YAML is read)"
        raise UserError(problem, _loc(name, mark)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise UserError(f"invalid YAML: {message}", _loc(name, mark)) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(text, name, exc) from None
    except yaml.YAMLError as exc:
        raise UserError(f"invalid YAML: {exc}", Location(name)) from None
    except RecursionError:
        raise UserError(f"nested deeper than {MAX_DEPTH} levels", Location(name)) from None
    finally:
        loader.dispose()


def _reader_error(text: str, name: str, exc: yaml.reader.ReaderError) -> UserError:
    """A character YAML does not allow (a control character, a lone surrogate), with its line and column."""
    before = text[: exc.position]
    line = before.count("\n") + 1
    col = exc.position - (before.rfind("\n") + 1) + 1
    return UserError(f"invalid YAML: the character #x{exc.character:04x} is not allowed", Location(name, line, col))


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """How many values `value` has when every alias is written out (memoised per shared object)."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key not in memo:
        memo[key] = 0  # YAML anchors cannot recurse through the safe loader, but stay finite anyway
        children = value.values() if isinstance(value, dict) else value
        memo[key] = 1 + sum(min(_expanded_size(child, memo), MAX_NODES + 1) for child in children)
    return memo[key]


def _loc(name: str, mark: Any) -> Location:
    if mark is None:
        return Location(name)
    return Location(name, mark.line + 1, mark.column + 1)

