"""`ce-agent schema`: JSON Schema (draft 2020-12) of playbooks and inventories, with every installed plugin's options.

What comes from the loader itself, so that the two cannot drift apart:
- the key sets (plays, tasks, alert rules, SLOs, routes, inhibit rules, maintenance windows,
  delivery, channels): the loader's own tuples (PLAY_KEYS, TASK_KEYS, RULE_KEYS, ...);
- each plugin's options: its msgspec `Options` struct, read with msgspec.inspect, the way
  `plugins doc` reads it (msgspec.json.schema itself cannot be used: it fails on the defaults of
  ce-agent's own option types, Duration and Threshold).

What is hand-written here: the type of each key the loader parses by hand (`timeout` is a
duration, `retries` a whole number ...), in the `_*_KEYS` tables below. A key of the loader without
an entry there is still allowed, with any value (and the tests list such keys as gaps).

The schema is never stricter than `ce-agent validate` on values: wherever the loader renders
templates before validating, a string with `{{`/`{%` is accepted, and so are the coercions it
makes (`"8080"` for a number, a number for a string). It is as strict on keys: an unknown key
anywhere, a misspelled option included, is an error. What it cannot see (a host pattern matching
no host, an unknown channel name, a cron expression's fields) is left to `ce-agent validate`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"
KINDS = ("playbook", "inventory")

_TEMPLATE = {"$ref": "#/$defs/template"}
_DURATION = {"$ref": "#/$defs/duration"}
_NAMES = {"$ref": "#/$defs/names"}
_MAPPING = {"type": "object"}

Warn = Callable[[str], None]


def build(kind: str, registry: Any, warn: Warn) -> dict[str, Any]:
    """The schema of a playbook or an inventory, with the installed plugins; a plugin that cannot be
    loaded (or whose options cannot be described) is left out, with a warning."""
    if kind not in KINDS:
        from ce_agent.errors import UserError

        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    defs = _common_defs()
    notifiers = _plugin_defs("notifier", registry, defs, warn)
    defs["channels"] = _channels(notifiers)
    if kind == "playbook":
        checks = _plugin_defs("check", registry, defs, warn)
        collectors = _plugin_defs("collector", registry, defs, warn)
        defs.update(_playbook_defs(checks, collectors))
        return {
            "$schema": DIALECT,
            "title": "ce-agent playbook",
            "description": "A list of plays: which hosts run which checks and collectors (ce-agent schema).",
            "type": "array",
            "items": {"$ref": "#/$defs/play"},
            "$defs": defs,
        }
    defs.update(_inventory_defs())
    return {
        "$schema": DIALECT,
        "title": "ce-agent inventory",
        "description": "An Ansible-style YAML inventory: groups with hosts, vars and children (ce-agent schema).",
        "type": ["object", "null"],
        "additionalProperties": {"$ref": "#/$defs/group"},
        "$defs": defs,
    }


def render(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(text: str, path: Path | None) -> None:
    """To the file (UserError when it cannot be written), or to stdout without a path."""
    if path is None:
        import sys

        sys.stdout.write(text)
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        from ce_agent.errors import UserError

        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def hand_written_gaps() -> list[str]:
    """Keys the loader reads that have no hand-written schema here (allowed with any value)."""
    gaps: list[str] = []
    for where, keys, table in _key_tables():
        gaps += [f"{where}.{key}" for key in keys if key not in table]
    return gaps


# -- plugins ----------------------------------------------------------------------------------------


def _plugin_defs(kind: str, registry: Any, defs: dict[str, Any], warn: Warn) -> list[str]:
    """Put `KIND.NAME` (the options of each loadable plugin) into `defs`; the names, sorted."""
    from ce_agent.registry import PluginLoadError

    names = registry.names(kind)
    duplicates = registry.duplicates(kind)
    registry.load(kind, [n for n in names if n not in duplicates])
    reserved = _reserved(kind)
    chosen = []
    for name in names:
        if name in duplicates:
            warn(f"warning: {kind} plugin {name!r} is left out of the schema: it is provided more than once: "
                 + "; ".join(duplicates[name]))
            continue
        if name in reserved:
            warn(f"warning: {kind} plugin {name!r} is left out of the schema: the loader reads {name!r} as a key itself")
            continue
        try:
            plugin = registry.get(kind, name)
            options = options_schema(plugin.Options, f"{kind}.{name}", defs)
        except PluginLoadError as exc:
            warn(f"warning: {kind} plugin {name!r} is left out of the schema: {exc}")
            continue
        except (TypeError, ValueError, AttributeError) as exc:
            warn(f"warning: {kind} plugin {name!r} is left out of the schema: its options cannot be described: {exc}")
            continue
        forms: list[dict[str, Any]] = [options, {"type": "null"}]
        free_form = getattr(plugin, "FREE_FORM", None)
        if free_form:
            forms.append({"type": "string", "description": f"Free form: sets {free_form!r}."})
        entry: dict[str, Any] = {"anyOf": forms}
        doc = (plugin.__doc__ or "").strip()
        if doc:
            entry["description"] = doc.splitlines()[0]
        defs[f"{kind}.{name}"] = entry
        chosen.append(name)
    return chosen


def _reserved(kind: str) -> tuple[str, ...]:
    """Keys the loader takes for itself where the plugin's name would go."""
    from ce_agent.config.playbook import TASK_KEYS
    from ce_agent.plan import CHANNEL_KEYS

    return CHANNEL_KEYS if kind == "notifier" else TASK_KEYS


def options_schema(model: type, prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of a plugin's Options struct; nested structs go into `defs` as `PREFIX.NAME`.

    Unknown options are always refused at the top (convert_options does so, whatever the struct
    says); below, as the nested struct's `forbid_unknown_fields` says."""
    import msgspec.inspect as mi

    info = mi.type_info(model)
    if not isinstance(info, mi.StructType):
        raise TypeError(f"Options is {getattr(model, '__name__', model)!r}, not a msgspec Struct")
    return _Describer(prefix, defs).struct(info, top=True)


class _Describer:
    """msgspec.inspect types to JSON Schema, loosened as the option conversion is (templates, coercions)."""

    def __init__(self, prefix: str, defs: dict[str, Any]) -> None:
        self.prefix = prefix
        self.defs = defs
        self.seen: set[type] = set()

    def of(self, t: Any) -> dict[str, Any]:
        import msgspec.inspect as mi

        if isinstance(t, mi.Metadata):
            schema = dict(self.of(t.type))
            schema.update(t.extra_json_schema or {})
            return schema
        if isinstance(t, mi.AnyType):
            return {}
        if isinstance(t, mi.NoneType):
            return {"type": "null"}
        if isinstance(t, mi.BoolType):
            # "true" from a template or -e: the conversion is not strict
            return {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false", "True", "False", "1", "0"]}, _TEMPLATE]}
        if isinstance(t, (mi.IntType, mi.FloatType)):
            number: dict[str, Any] = {"type": "integer" if isinstance(t, mi.IntType) else "number"}
            for attr, key in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"),
                              ("lt", "exclusiveMaximum"), ("multiple_of", "multipleOf")):
                if getattr(t, attr) is not None:
                    number[key] = getattr(t, attr)
            return {"anyOf": [number, {"$ref": "#/$defs/number_text"}, _TEMPLATE]}
        if isinstance(t, mi.StrType):
            # a number or a boolean where text is expected becomes that text (`argv: [-p, 80]`)
            text: dict[str, Any] = {"type": ["string", "number", "boolean"]}
            for attr, key in (("min_length", "minLength"), ("max_length", "maxLength"), ("pattern", "pattern")):
                if getattr(t, attr) is not None:
                    text[key] = getattr(t, attr)
            return text
        if isinstance(t, (mi.BytesType, mi.ByteArrayType, mi.MemoryViewType, mi.UUIDType, mi.DateTimeType,
                          mi.DateType, mi.TimeType, mi.TimeDeltaType)):
            return {"type": "string"}
        if isinstance(t, mi.DecimalType):
            return {"type": ["string", "number"]}
        if isinstance(t, mi.LiteralType):
            return {"anyOf": [{"enum": list(t.values)}, _TEMPLATE]}
        if isinstance(t, mi.EnumType):
            return {"anyOf": [{"enum": [m.value for m in t.cls]}, _TEMPLATE]}
        if isinstance(t, mi.CustomType):
            return self.custom(t.cls)
        if isinstance(t, mi.UnionType):
            return {"anyOf": [self.of(x) for x in t.types]}
        if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
            array: dict[str, Any] = {"type": "array", "items": self.of(t.item_type)}
            _lengths(array, t, "minItems", "maxItems")
            return {"anyOf": [array, _TEMPLATE]}
        if isinstance(t, mi.TupleType):
            items = [self.of(x) for x in t.item_types]
            return {"anyOf": [{"type": "array", "prefixItems": items, "minItems": len(items),
                               "maxItems": len(items)}, _TEMPLATE]}
        if isinstance(t, (mi.DictType, getattr(mi, "FrozenDictType", mi.DictType))):
            mapping: dict[str, Any] = {"type": "object", "additionalProperties": self.of(t.value_type)}
            _lengths(mapping, t, "minProperties", "maxProperties")
            return {"anyOf": [mapping, _TEMPLATE]}
        if isinstance(t, mi.StructType):
            return {"anyOf": [self.struct(t, top=False), _TEMPLATE]}
        if isinstance(t, (mi.DataclassType, mi.TypedDictType, mi.NamedTupleType)):
            return {"anyOf": [self.fields(t.fields, forbid=False), _TEMPLATE]}
        return {}  # a type msgspec knows and this does not: anything goes, validate still checks it

    def custom(self, cls: type) -> dict[str, Any]:
        from ce_agent.options import Duration, Threshold

        if cls is Duration:
            return {"anyOf": [_DURATION, _TEMPLATE]}
        if cls is Threshold:
            return {"$ref": "#/$defs/threshold"}
        return {}

    def struct(self, info: Any, top: bool) -> dict[str, Any]:
        forbid = True if top else bool(info.forbid_unknown_fields)
        if top:
            schema = self.fields(info.fields, forbid)
        else:
            name = f"{self.prefix}.{info.cls.__qualname__}"
            if info.cls not in self.seen:  # a struct that contains itself is described once
                self.seen.add(info.cls)
                self.defs[name] = self.fields(info.fields, forbid)
            return {"$ref": f"#/$defs/{name}"}
        doc = (info.cls.__doc__ or "").strip()
        if doc and not doc.startswith(info.cls.__name__ + "("):  # msgspec's generated signature is no help
            schema["description"] = doc.splitlines()[0]
        return schema

    def fields(self, fields: Iterable[Any], forbid: bool) -> dict[str, Any]:
        import msgspec.inspect as mi

        properties: dict[str, Any] = {}
        required = []
        for f in fields:
            prop = self.of(f.type)
            if f.required:
                required.append(f.encode_name)
            else:
                default = f.default_factory() if f.default_factory is not mi.NODEFAULT else f.default
                plain = _plain(default)
                if plain is not _UNSET:
                    prop = {**prop, "default": plain}
            properties[f.encode_name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if forbid:
            schema["additionalProperties"] = False
        return schema


_UNSET = object()


def _plain(value: Any) -> Any:
    """A default as JSON, or _UNSET when it has no JSON form."""
    import enum

    import msgspec

    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if value == value and value not in (float("inf"), float("-inf")) else _UNSET
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return _UNSET if any(i is _UNSET for i in items) else items
    if isinstance(value, Mapping):
        pairs = {str(k): _plain(v) for k, v in value.items()}
        return _UNSET if any(v is _UNSET for v in pairs.values()) else pairs
    if isinstance(value, msgspec.Struct):
        return _plain(msgspec.structs.asdict(value))
    return _UNSET


def _lengths(schema: dict[str, Any], t: Any, low: str, high: str) -> None:
    if t.min_length is not None:
        schema[low] = t.min_length
    if t.max_length is not None:
        schema[high] = t.max_length


# -- the hand-written part: what each key of the loader holds ---------------------------------------


def _common_defs() -> dict[str, Any]:
    return {
        "template": {"type": "string", "pattern": r"\{\{|\{%",
                     "description": "A Jinja2 template, rendered with the host's variables before it is checked."},
        "number_text": {"type": "string", "pattern": r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"},
        "duration": {
            "description": "Seconds, as a number or as 30s, 5m, 1h30m, 2d, 1w (ms, s, m, h, d, w).",
            "anyOf": [{"type": "number", "minimum": 0}, {"$ref": "#/$defs/duration_text"}],
        },
        "duration_text": {
            "type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$|^\s*\+?(\d+\.?\d*|\.\d+)\s*$",
        },
        "threshold": {
            "description": "A number, a percentage (\"80%\") or a Nagios range (10, 10:, ~:10, 10:20, @10:20).",
            "type": ["number", "string"],
        },
        "names": {
            "description": "Names: a list, or one string of comma-separated names.",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["string", "number"]}}],
        },
        "matchers": {
            "description": "Label matchers: {label: value}, or a list such as ['severity=critical', 'host=~web.*'].",
            "anyOf": [
                {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                {"type": "array", "items": {"anyOf": [
                    {"type": "string"},
                    {"type": "object", "minProperties": 1, "maxProperties": 1},
                ]}},
                {"type": "null"},
            ],
        },
    }


def _severity() -> dict[str, Any]:
    from ce_agent.config.playbook import SEVERITIES

    return {"enum": list(SEVERITIES)}


def _task_keys() -> dict[str, Any]:
    from ce_agent.durations import MAX_TIMEOUT

    return {
        "name": {"type": "string", "description": "The task's name in output and notifications [default: the plugin's]."},
        "schedule": {"type": ["string", "number"],
                     "description": "When the agent runs it: a cron expression such as '*/5 * * * *', or @hourly, @daily ..."},
        "interval": {"allOf": [_DURATION], "description": "Run every this long (at least 1s); instead of 'schedule'."},
        "jitter": {"allOf": [_DURATION], "description": "Start up to this much later, at random, to spread the load."},
        "timezone": {"type": ["string", "number"], "description": "The IANA time zone of 'schedule' [default: the machine's]."},
        "timeout": {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT},
                              {"$ref": "#/$defs/duration_text"}, _TEMPLATE],
                    "description": "How long the task may run before it is UNKNOWN [default: 30s, at most 1d]."},
        "retries": {"type": "integer", "minimum": 1, "description": "Runs before a problem counts (1: the first)."},
        "regression": {"$ref": "#/$defs/regression"},
        "notify": {"allOf": [_NAMES], "description": "The channels told when the status changes."},
        "tags": {"allOf": [_NAMES], "description": "For --tags and --skip-tags (always, never as in Ansible)."},
        "labels": {**_MAPPING, "description": "Labels added to the task's alerts and metrics."},
        "severity": {"anyOf": [_severity(), _TEMPLATE], "description": "The alert's severity label."},
        "vars": {"$ref": "#/$defs/play_vars"},
        "depends_on": {"allOf": [_NAMES], "description": "Checks of the play this one waits on (not run when they fail)."},
        "isolate": {"type": "boolean", "description": "Run the plugin in a child process of its own (survives os._exit, crashes)."},
        "disable_after_errors": {"type": "integer", "minimum": 1, "maximum": 10,
                                 "description": "Stop scheduling it after this many plugin errors in its last 10 runs (until a reload)."},
    }


def _play_keys() -> dict[str, Any]:
    return {
        "name": {"type": ["string", "number"], "description": "The play's name."},
        "hosts": {"type": ["string", "number"], "minLength": 1, "description": "A host pattern: a host, a group, all, web:!web3, ~regex ..."},
        "vars": {"$ref": "#/$defs/play_vars"},
        "checks": {"type": "array", "items": {"$ref": "#/$defs/check_task"}},
        "collectors": {"type": "array", "items": {"$ref": "#/$defs/collector_task"}},
        "tags": {"allOf": [_NAMES], "description": "Tags of every task of the play."},
        "alerts": {"type": "array", "items": {"$ref": "#/$defs/alert_rule"}},
        "slos": {"type": "array", "items": {"$ref": "#/$defs/slo"}},
    }


def _rule_keys() -> dict[str, Any]:
    return {
        "name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "description": "Like HighMemory."},
        "expr": {"type": "string", "description": "A comparison on a metric, such as 'system_memory_used_percent > 90'."},
        "for": {"allOf": [_DURATION], "description": "How long it must hold before it fires."},
        "keep_firing_for": {"allOf": [_DURATION], "description": "How long it keeps firing once it stops holding."},
        "severity": _severity(),
        "labels": _MAPPING,
        "annotations": _MAPPING,
        "notify": _NAMES,
        "tags": _NAMES,
    }


def _regression_keys() -> dict[str, Any]:
    return {
        "duration": {"type": "boolean", "description": "Watch the task's run time."},
        "metric": {"type": "string", "minLength": 1, "description": "Watch this metric instead."},
        "labels": _MAPPING,
        "threshold": {"type": ["number", "string"], "description": "The % change of p95 that counts [default: 20%]."},
        "window": {"allOf": [_DURATION], "description": "How far back the recent p95 looks [default: 1h]."},
    }


#: baseline.py keeps its key tuple private; tests compare this one with the parser's behaviour
REGRESSION_KEYS = ("duration", "metric", "labels", "threshold", "window")


def _percentage() -> dict[str, Any]:
    return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\s*[0-9.]+\s*%?\s*$"}]}


def _slo_keys() -> dict[str, Any]:
    return {
        "name": {"type": "string", "minLength": 1},
        "objective": {**_percentage(), "description": "The target percentage of good events, such as 99.9."},
        "window": {"allOf": [_DURATION], "description": "The period it is measured over, such as 30d (at least 1d)."},
        "sli": {"$ref": "#/$defs/sli"},
        "labels": _MAPPING,
        "alerts": {"type": "boolean"},
        "notify": _NAMES,
        "budget_policy": {"$ref": "#/$defs/budget_policy"},
    }


def _sli_keys() -> dict[str, Any]:
    return {
        "check": {"type": "string", "description": "A check of the play: its OK runs are the good events."},
        "metric": {"type": "string", "description": "A metric whose samples are judged by 'good'."},
        "good": {"type": "string", "description": "'<= 0.5' with 'metric'; the good counter with 'total'."},
        "total": {"type": "string", "description": "The counter of all events (with 'good')."},
    }


def _policy_keys() -> dict[str, Any]:
    return {"below": _percentage(), "notify": _NAMES}


def _route_keys() -> dict[str, Any]:
    return {
        "match": {"$ref": "#/$defs/matchers"},
        "matchers": {"$ref": "#/$defs/matchers"},
        "channels": _NAMES,
        "continue": {"type": "boolean"},
        "group_by": _NAMES,
        "group_wait": _DURATION,
        "group_interval": _DURATION,
        "repeat_interval": _DURATION,
        "send_resolved": {"type": "boolean"},
    }


def _inhibit_keys() -> dict[str, Any]:
    return {"source": {"$ref": "#/$defs/matchers"}, "target": {"$ref": "#/$defs/matchers"}, "equal": _NAMES}


def _maintenance_keys() -> dict[str, Any]:
    return {
        "schedule": {"type": "string", "description": "When each window starts (cron)."},
        "duration": _DURATION,
        "match": {"$ref": "#/$defs/matchers"},
        "matchers": {"$ref": "#/$defs/matchers"},
        "comment": {"type": "string"},
    }


def _delivery_keys() -> dict[str, Any]:
    return {
        "attempts": {"type": "integer", "minimum": 1, "description": "Tries of one notification per flush [3]."},
        "retry_after": {"allOf": [_DURATION], "description": "Wait after a failed flush, doubled each time [1m]."},
        "max_retry_after": {"allOf": [_DURATION], "description": "The longest wait between flushes [1h]."},
        "outbox_size": {"type": "integer", "minimum": 1, "description": "Notifications kept at most [10000]."},
    }


def _channel_keys() -> dict[str, Any]:
    return {
        "fallback": {"type": "string", "description": "The channel that takes over after 'fallback_after' failures."},
        "fallback_after": {"type": "integer", "minimum": 1},
    }


_GROUP_KEYS = ("children", "hosts", "vars")  # inventory.py keeps its set private; the tests compare them


def _key_tables() -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """(where, the loader's keys, the hand-written schema of each) for every mapping the loader reads."""
    from ce_agent.alerting.routing import INHIBIT_KEYS, MAINTENANCE_KEYS, ROUTE_KEYS
    from ce_agent.config.playbook import PLAY_KEYS, RULE_KEYS, TASK_KEYS
    from ce_agent.outbox import DELIVERY_KEYS
    from ce_agent.plan import CHANNEL_KEYS
    from ce_agent.slo import POLICY_KEYS, SLI_KEYS, SLO_KEYS

    return [
        ("play", tuple(PLAY_KEYS), _play_keys()),
        ("task", tuple(TASK_KEYS), _task_keys()),
        ("alert_rule", tuple(RULE_KEYS), _rule_keys()),
        ("regression", REGRESSION_KEYS, _regression_keys()),
        ("slo", tuple(SLO_KEYS), _slo_keys()),
        ("sli", tuple(SLI_KEYS), _sli_keys()),
        ("budget_policy", tuple(POLICY_KEYS), _policy_keys()),
        ("route", tuple(ROUTE_KEYS), _route_keys()),
        ("inhibit", tuple(INHIBIT_KEYS), _inhibit_keys()),
        ("maintenance", tuple(MAINTENANCE_KEYS), _maintenance_keys()),
        ("delivery", tuple(DELIVERY_KEYS), _delivery_keys()),
        ("channel", tuple(CHANNEL_KEYS), _channel_keys()),
    ]


def _strict(keys: tuple[str, ...], table: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """An object of exactly the loader's keys (one without a schema here takes any value)."""
    return {"type": "object", "properties": {k: table.get(k, {}) for k in keys}, "additionalProperties": False, **extra}


def _tables() -> dict[str, tuple[tuple[str, ...], dict[str, Any]]]:
    return {where: (keys, table) for where, keys, table in _key_tables()}


def _one_plugin(names: list[str]) -> dict[str, Any]:
    """Exactly one of the plugin keys (the loader's rule: a task names one plugin)."""
    return {"oneOf": [{"required": [name]} for name in names]} if names else {}


def _playbook_defs(checks: list[str], collectors: list[str]) -> dict[str, Any]:
    tables = _tables()
    defs: dict[str, Any] = {"play": _strict(*tables["play"], required=["hosts"])}
    task_keys, task_table = tables["task"]
    for kind, names in (("check", checks), ("collector", collectors)):
        task = _strict(task_keys, task_table, **_one_plugin(names))
        task["properties"].update({name: {"$ref": f"#/$defs/{kind}.{name}"} for name in names})
        task["description"] = f"A {kind}: one {kind} plugin's key with its options, and the common task keys."
        defs[f"{kind}_task"] = task
    defs["alert_rule"] = _strict(*tables["alert_rule"], required=["name", "expr"])
    defs["regression"] = _strict(*tables["regression"])
    defs["slo"] = _strict(*tables["slo"], required=["name", "objective", "window", "sli"])
    defs["sli"] = _strict(*tables["sli"], minProperties=1)
    defs["budget_policy"] = _strict(*tables["budget_policy"], required=["below"])
    # play and task vars may set `channels` (the rest of the alerting setup is read from the inventory)
    defs["play_vars"] = {"type": ["object", "null"], "properties": {"channels": {"$ref": "#/$defs/channels"}}}
    return defs


def _inventory_defs() -> dict[str, Any]:
    tables = _tables()
    lists = {name: {"anyOf": [{"type": "array", "items": _strict(*tables[name])}, {"type": "null"}, _TEMPLATE]}
             for name in ("route", "inhibit")}
    maintenance = _strict(*tables["maintenance"], required=["schedule", "duration"])
    return {
        "group": {
            "type": ["object", "null"],
            "properties": {
                "hosts": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/$defs/vars"}},
                "vars": {"$ref": "#/$defs/vars"},
                "children": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/$defs/group"}},
            },
            "additionalProperties": False,
        },
        "vars": {
            "description": "Variables; these names configure ce-agent itself.",
            "type": ["object", "null"],
            "properties": {
                "channels": {"$ref": "#/$defs/channels"},
                "routes": lists["route"],
                "inhibit": lists["inhibit"],
                "maintenance": {"anyOf": [{"type": "array", "items": maintenance}, {"type": "null"}, _TEMPLATE]},
                "delivery": {"anyOf": [_strict(*tables["delivery"]), {"type": "null"}]},
            },
        },
    }


def _channels(notifiers: list[str]) -> dict[str, Any]:
    keys, table = _tables()["channel"]
    mapping = _strict(keys, table, **_one_plugin(notifiers))
    mapping["properties"].update({name: {"$ref": f"#/$defs/notifier.{name}"} for name in notifiers})
    channel = {
        "description": "An Apprise URL, a list of them, or {NOTIFIER: {options}} (with fallback, fallback_after).",
        "anyOf": [
            {"type": "string", "pattern": r"://|\{\{|\{%"},
            {"type": "array", "items": {"type": "string", "pattern": r"://|\{\{|\{%"}, "minItems": 1},
            mapping,
        ],
    }
    return {"description": "Where notifications go: channel name -> channel.", "type": ["object", "null"],
            "additionalProperties": channel}
