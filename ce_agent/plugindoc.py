"""`plugins list` and `plugins doc`: what is installed, and each plugin's options from its model."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass

from ce_agent.errors import UserError
from ce_agent.options import describe_options
from ce_agent.registry import KINDS, PluginLoadError, Registry


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    name: str
    distribution: str
    version: str
    target: str
    status: str
    description: str


def listing(registry: Registry, kinds: list[str], load: bool) -> list[Row]:
    rows = []
    for kind in kinds:
        duplicates = registry.duplicates(kind)
        for info in registry.describe(kind):
            status, description = "not loaded", ""
            if info.name in duplicates:
                status = "error: name provided more than once: " + "; ".join(duplicates[info.name])
            elif load:
                try:
                    plugin = registry.get(kind, info.name)
                    status, description = "ok", _first_line(plugin.__doc__)
                except PluginLoadError as exc:
                    status = f"error: {exc}"
            rows.append(Row(kind, info.name, info.distribution, info.version, info.target, status, description))
    return rows


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def listing_text(rows: list[Row]) -> str:
    if not rows:
        return "no plugins found"
    width = max(len(r.name) for r in rows)
    dist_width = max(len("DISTRIBUTION"), *(len(f"{r.distribution} {r.version}") for r in rows))
    lines = [f"{'KIND':<10} {'NAME':<{width}}  {'DISTRIBUTION':<{dist_width}}  DESCRIPTION OR LOAD ERROR"]
    for r in rows:
        dist = f"{r.distribution} {r.version}"
        detail = r.description if r.status == "ok" else r.status
        lines.append(f"{r.kind:<10} {r.name:<{width}}  {dist:<{dist_width}}  {detail}")
    return "\n".join(lines)


def listing_json(rows: list[Row]) -> str:
    return json.dumps({"plugins": [asdict(r) for r in rows]}, indent=2)


def document(registry: Registry, name: str) -> str:
    """ansible-doc for one plugin; UserError when there is no such plugin or it cannot load."""
    kind_hint, _, bare = name.rpartition("/")
    if kind_hint and kind_hint not in KINDS:
        raise UserError(f"{name!r}: the kind before '/' must be one of {', '.join(KINDS)}")
    kinds = [kind_hint] if kind_hint else list(KINDS)
    found = [k for k in kinds if registry.has(k, bare)]
    if not found:
        hints = {h for k in kinds if (h := registry.suggest(k, bare))}
        hint = f"; did you mean {', '.join(sorted(hints))}?" if hints else ""
        raise UserError(f"no plugin named {bare!r}{hint} (see 'ce-agent plugins list')")
    sections = []
    for kind in found:
        duplicates = registry.duplicates(kind).get(bare)
        if duplicates:
            raise UserError(f"{kind} plugin {bare!r} is provided more than once: {'; '.join(duplicates)}")
        try:
            plugin = registry.get(kind, bare)
        except PluginLoadError as exc:
            raise UserError(f"{kind} plugin {bare!r} cannot be loaded: {exc}") from None
        sections.append(_document_one(kind, bare, plugin))
    return "\n\n".join(sections)


def _document_one(kind: str, name: str, plugin: type) -> str:
    doc = (plugin.__doc__ or "").strip()
    lines = [f"{name} ({kind}, {plugin.__module__}.{plugin.__qualname__})", "", textwrap.indent(doc, "  "), ""]
    try:
        options = describe_options(plugin.Options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{kind} plugin {name!r} has an invalid options model: {exc}") from None
    lines.append("OPTIONS" + ("" if options else "  (none)"))
    for opt in options:
        req = "required" if opt.required else f"default: {json.dumps(opt.default)}"
        lines.append(f"  {opt.name}  ({opt.type}, {req})")
        if opt.description:
            lines += textwrap.wrap(opt.description, 96, initial_indent="      ", subsequent_indent="      ")
    if getattr(plugin, "FREE_FORM", None):
        lines += ["", f"FREE FORM: a plain string after '{name}:' sets '{plugin.FREE_FORM}'."]
    examples = getattr(plugin, "EXAMPLES", "")
    if examples:
        lines += ["", "EXAMPLES", textwrap.indent(textwrap.dedent(examples).rstrip(), "  ")]
    return "\n".join(lines)
