"""Plugin discovery through entry points: list them cheaply, load only the ones a playbook names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KINDS = {"check": "ce_agent.checks", "collector": "ce_agent.collectors", "notifier": "ce_agent.notifiers"}


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One discovered plugin as `plugins list` shows it (loaded only when asked)."""

    kind: str
    name: str
    target: str
    distribution: str
    version: str


class PluginLoadError(Exception):
    """A plugin named by a playbook could not be imported; says which distribution provides it."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    plugin: type | None
    error: str | None


class Registry:
    """Entry points of the three groups, through stevedore, with load failures kept, never skipped."""

    def __init__(self) -> None:
        self._entry_points: dict[str, list[Any]] = {}
        self._loaded: dict[tuple[str, str], _Loaded] = {}
        self._duplicates: dict[str, dict[str, list[str]]] = {}

    def _eps(self, kind: str) -> list[Any]:
        if kind not in self._entry_points:
            from stevedore import _cache  # stevedore's on-disk entry-point cache: no metadata scan per run

            self._entry_points[kind] = list(_cache.get_group_all(KINDS[kind]))
        return self._entry_points[kind]

    def names(self, kind: str) -> list[str]:
        return sorted({ep.name for ep in self._eps(kind)})

    def has(self, kind: str, name: str) -> bool:
        return any(ep.name == name for ep in self._eps(kind))

    def suggest(self, kind: str, name: str) -> str | None:
        """The closest known name, for a "did you mean" hint."""
        close = difflib.get_close_matches(name, self.names(kind), n=1, cutoff=0.6)
        return close[0] if close else None

    def duplicates(self, kind: str) -> dict[str, list[str]]:
        """Names provided by more than one entry point, with each provider's distribution."""
        if kind not in self._duplicates:
            self._duplicates[kind] = self._find_duplicates(kind)
        return self._duplicates[kind]

    def _find_duplicates(self, kind: str) -> dict[str, list[str]]:
        targets: dict[str, set[str]] = {}
        for ep in self._eps(kind):
            targets.setdefault(ep.name, set()).add(ep.value)
        return {
            name: [f"{_distribution_of(KINDS[kind], name, value)} ({value})" for value in sorted(values)]
            for name, values in targets.items()
            if len(values) > 1
        }

    def load(self, kind: str, names: Iterable[str]) -> None:
        """Import the named plugins through stevedore; failures are kept for `get` to report."""
        wanted = sorted({n for n in names if (kind, n) not in self._loaded and self.has(kind, n)})
        if not wanted:
            return
        from stevedore.named import NamedExtensionManager

        failures: dict[str, str] = {}

        def on_failure(_manager: Any, ep: Any, exc: Exception) -> None:
            dist = _distribution_of(KINDS[kind], ep.name, ep.value)
            failures[ep.name] = f"{dist} failed to load {ep.value}: {type(exc).__name__}: {exc}"

        manager = NamedExtensionManager(
            KINDS[kind],
            wanted,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=None,
        )
        for ext in manager.extensions:
            self._loaded[(kind, ext.name)] = _Loaded(ext.plugin, None)
        for name in wanted:
            if name in failures:
                self._loaded[(kind, name)] = _Loaded(None, failures[name])

    def get(self, kind: str, name: str) -> type:
        """The plugin class; PluginLoadError with the reason when it failed to import."""
        self.load(kind, [name])
        loaded = self._loaded.get((kind, name))
        if loaded is None:
            raise PluginLoadError(f"no {kind} plugin named {name!r}")
        if loaded.plugin is None:
            raise PluginLoadError(loaded.error or f"{name} failed to load")
        return loaded.plugin

    def describe(self, kind: str) -> list[PluginInfo]:
        """Every plugin of a kind with its distribution and version, without importing any."""
        import importlib.metadata as md

        out = []
        for dist in md.distributions():
            for ep in dist.entry_points:
                if ep.group == KINDS[kind]:
                    out.append(PluginInfo(kind, ep.name, ep.value, dist.metadata["Name"], dist.version))
        seen: set[tuple[str, str]] = set()
        unique = []
        for info in sorted(out, key=lambda i: (i.name, i.distribution)):
            if (info.name, info.target) not in seen:
                seen.add((info.name, info.target))
                unique.append(info)
        return unique


def _distribution_of(group: str, name: str, value: str) -> str:
    """The distribution providing an entry point (a metadata scan: only on error paths)."""
    import importlib.metadata as md

    for dist in md.distributions():
        for ep in dist.entry_points:
            if ep.group == group and ep.name == name and ep.value == value:
                return f"{dist.metadata['Name']} {dist.version}"
    return "an unknown distribution"
