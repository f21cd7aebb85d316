"""Plugin options: the value types playbooks use, validation into a plugin's model, and its docs."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import msgspec.inspect as mi

from ce_agent.durations import parse_duration
from ce_agent.thresholds import Range


class Duration(float):
    """Seconds, written as a number or as `10s`, `5m`, `1h30m`, `2d`."""


class Threshold(str):
    """A Nagios range (`80`, `80%`, `10:`, `~:10`, `10:20`, `@10:20`) or a plain number."""

    @property
    def range(self) -> Range:
        return Range.parse(self)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def dec_hook(tp: type, obj: Any) -> Any:
    """Turn YAML values into the custom option types; ValueError says what was expected."""
    if tp is Duration:
        return Duration(parse_duration(obj))
    if tp is Threshold:
        if isinstance(obj, bool) or not isinstance(obj, (int, float, str)):
            raise ValueError(f"expected a number, a percentage or a Nagios range, got {obj!r}")
        text = _number_text(obj) if isinstance(obj, (int, float)) else obj.strip()
        Range.parse(text)
        return Threshold(text)
    raise NotImplementedError(f"no conversion to {tp!r}")


@dataclass(frozen=True, slots=True)
class OptionError:
    """A problem with one option: the path of keys below the plugin (may be empty) and the reason."""

    path: tuple[str | int, ...]
    message: str
    at_key: bool = False  # the key itself is wrong (unknown option), not its value


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")  # msgspec writes a dict value's key as [...]


def convert_options(model: type[msgspec.Struct], raw: Mapping[str, Any]) -> tuple[Any, list[OptionError]]:
    """Validate `raw` against `model`: (options, []) or (None, every error found)."""
    valid = option_names(model)
    errors = [
        OptionError((key,), f"unknown option {key!r}{_hint(str(key), valid)}; valid options: {', '.join(valid) or '(none)'}", at_key=True)
        for key in raw
        if key not in valid
    ]
    missing = [f.name for f in msgspec.structs.fields(model) if f.required and f.name not in raw]
    errors += [OptionError((), f"missing required option {name!r}") for name in missing]
    if errors:
        return None, errors
    data: Any = dict(raw)
    copied = False
    for _ in range(_MAX_COERCIONS):
        try:
            # strict=False: "8080" from a template or -e becomes 8080, as Ansible coerces module arguments
            return msgspec.convert(data, model, dec_hook=dec_hook, str_keys=True, strict=False), []
        except TypeError as exc:  # a model msgspec rejects is the plugin's bug: report it, don't crash
            return None, [OptionError((), f"the plugin's options model is invalid: {exc}")]
        except msgspec.ValidationError as exc:
            match = _AT.match(str(exc))
            assert match is not None
            path: tuple[str | int, ...] = tuple(
                name or (int(index) if index.isdigit() else "[...]")
                for name, index in _PATH_PART.findall(match["path"] or "")
            )
            # and a number where text is expected becomes text (`argv: [-p, "{{ port }}"]`, `env: {PORT: 80}`)
            if _NUMBER_FOR_STR.match(match["msg"]):
                if not copied:  # the playbook's own data is shared between hosts: change a copy
                    data, copied = copy.deepcopy(data), True
                if _stringify(data, path):
                    continue
            message = _friendly(match["msg"])
            named = _NAMED.match(message) if not path else None
            if named and named["name"] in raw:  # a __post_init__ check that names its option first
                return None, [OptionError((named["name"],), message)]
            return None, [OptionError(path, f"option {_dotted(path)}: {message}" if path else message)]
    return None, [OptionError((), "too many numbers where text is expected")]


_MAX_COERCIONS = 64
_NAMED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*): ")
_NUMBER_FOR_STR = re.compile(r"^Expected `str[^`]*`, got `(int|float|bool)`$")


def _stringify(data: Any, path: tuple[str | int, ...]) -> bool:
    """Turn the number at `path` into text in place; False when the path cannot be followed."""
    *parents, last = path or ("",)
    node = data
    try:
        for part in parents:
            node = node[part]
        if last == "[...]":  # a dict value whose key msgspec does not name: every number in it
            changed = False
            for key, value in list(node.items()):
                if isinstance(value, (int, float)):
                    node[key], changed = _scalar_text(value), True
            return changed
        value = node[last]
    except (KeyError, IndexError, TypeError):
        return False
    if not isinstance(value, (int, float)):
        return False
    node[last] = _scalar_text(value)
    return True


def _scalar_text(value: int | float | bool) -> str:
    """A YAML scalar as the text the user wrote: `true`, `8080`, `0.5`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number_text(value)


def _hint(name: str, valid: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += part if part == "[...]" or not out else f".{part}"
    return repr(out)


def _friendly(message: str) -> str:
    return message.replace("Expected `", "expected ").replace("`, got `", ", got ").replace("`", "")


def option_names(model: type[msgspec.Struct]) -> list[str]:
    return [f.name for f in msgspec.structs.fields(model)]


@dataclass(frozen=True, slots=True)
class OptionDoc:
    """One option as `plugins doc` shows it."""

    name: str
    type: str
    required: bool
    default: Any
    description: str


def describe_options(model: type[msgspec.Struct]) -> list[OptionDoc]:
    """The options of a model with their types, defaults and descriptions, in declaration order."""
    info = mi.type_info(model)
    assert isinstance(info, mi.StructType)
    docs = []
    for f in info.fields:
        field_type = f.type
        description = ""
        if isinstance(field_type, mi.Metadata):
            description = (field_type.extra_json_schema or {}).get("description", "")
            field_type = field_type.type
        default = None if f.required or f.default is mi.NODEFAULT else f.default
        if f.default_factory is not mi.NODEFAULT:
            default = f.default_factory()
        docs.append(OptionDoc(f.name, type_name(field_type), f.required, _plain(default), description))
    return docs


def _plain(value: Any) -> Any:
    if isinstance(value, Duration):
        return f"{_number_text(value)}s"
    if isinstance(value, Threshold):
        return str(value)
    return value


def type_name(t: mi.Type) -> str:
    """A short readable name of a msgspec type: `str`, `list[str]`, `int | null`, `duration`."""
    if isinstance(t, mi.Metadata):
        return type_name(t.type)
    if isinstance(t, mi.CustomType):
        return {Duration: "duration", Threshold: "threshold"}.get(t.cls, t.cls.__name__)
    if isinstance(t, mi.UnionType):
        return " | ".join(type_name(x) for x in t.types)
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return f"list[{type_name(t.item_type)}]"
    if isinstance(t, mi.DictType):
        return f"dict[{type_name(t.key_type)}, {type_name(t.value_type)}]"
    if isinstance(t, mi.LiteralType):
        return " | ".join(repr(v) for v in t.values)
    names = {
        mi.StrType: "str",
        mi.IntType: "int",
        mi.FloatType: "float",
        mi.BoolType: "bool",
        mi.NoneType: "null",
        mi.AnyType: "any",
    }
    return names.get(type(t), type(t).__name__.removesuffix("Type").lower())

