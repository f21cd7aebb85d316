"""Jinja2 templating in a sandbox, with lazily resolved variables, `env` and `file()` lookups."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_MARKERS = ("{{", "{%", "{#")
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)
_ENV_MISSING = re.compile(r"EnvironmentVariables object'? has no (?:attribute|element) '([^']+)'")
MAX_FILE_BYTES = 64 * 1024


class TemplateError(Exception):
    """A template that cannot be rendered: undefined variable, syntax error, unreadable file."""


def has_template(value: Any) -> bool:
    if isinstance(value, str):
        return any(m in value for m in _MARKERS)
    if isinstance(value, Mapping):
        return any(has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(has_template(v) for v in value)
    return False


#: variables that name places, not secrets: masking them would mask those words in every message
#: (`{{ file(env.CREDENTIALS_DIRECTORY ~ '/smtp') }}` reads a secret; the directory is none)
NOT_SECRET_ENV = frozenset({
    "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CACHE_DIRECTORY", "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY", "HOME", "USER", "LOGNAME", "HOSTNAME", "PWD", "TMPDIR", "XDG_RUNTIME_DIR",
})


class EnvironmentVariables:
    """`{{ env.NAME }}`: one environment variable at a time; every value read is reported as a secret
    (but those of NOT_SECRET_ENV, which name places).

    Not a dict on purpose: nothing in a template can list the environment or read it unreported."""

    def __init__(self, environ: Mapping[str, str], on_secret: Callable[[str], None]) -> None:
        self._environ = environ
        self._on_secret = on_secret

    def __getitem__(self, name: str) -> str:
        value = self._environ[name]
        if name not in NOT_SECRET_ENV:
            self._on_secret(value)
        return value

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._environ

    def get(self, name: str, default: str | None = None) -> str | None:
        return self[name] if name in self._environ else default


def _urlquote(value: object) -> str:
    """`{{ env.PASSWORD | urlquote }}`: percent-encode everything, `/` included, for URL user-info."""
    from urllib.parse import quote

    return quote(str(value), safe="")


MAX_RESULT = 1_000_000  # characters or items one template operation may produce
MAX_INT_BITS = 1 << 16  # about 20,000 digits: far beyond any size, count or duration in a playbook


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounded_sandbox() -> type:
    """Jinja2's immutable sandbox, with `*` and `**` bounded: `{{ 'a' * 10**9 }}` is an error, not 1 GB."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            # Integers grow without bound: a small exponent of a big number (`((9 ** 999) ** 999) ** 999`)
            # or a product of two big ones is refused by its size in bits before it is computed.
            if _is_int(left) and _is_int(right) and abs(left) > 1:
                grows_to = left.bit_length() * right if operator == "**" else left.bit_length() + right.bit_length()
                if grows_to > MAX_INT_BITS:
                    raise SecurityError(f"the result would have more than {MAX_INT_BITS} bits")
            if operator == "**":
                if isinstance(right, (int, float)) and abs(right) > 1000 and not isinstance(left, float):
                    raise SecurityError(f"exponent {right!r} is too large")
                return left**right
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_RESULT:
                    raise SecurityError(f"the result would be longer than {MAX_RESULT}")
            return left * right

    return BoundedSandbox


class Templar:
    """Renders values for one host: variables may refer to each other and are resolved on demand."""

    def __init__(self, environ: Mapping[str, str], on_secret: Callable[[str], None] = lambda _s: None) -> None:
        self._environ = environ
        self._on_secret = on_secret
        self._env: Any = None
        self._compiled: dict[str, Any] = {}
        self._referenced: dict[str, set[str]] = {}

    def _jinja(self) -> Any:
        if self._env is None:
            # Imported on first use: a playbook without templates never pays for Jinja2.
            from jinja2 import StrictUndefined

            env = _bounded_sandbox()(undefined=StrictUndefined, keep_trailing_newline=True)
            # lipsum(n=999999) writes placeholder text for minutes; no playbook needs it
            env.globals.pop("lipsum", None)
            env.globals["env"] = EnvironmentVariables(self._environ, self._on_secret)
            env.globals["file"] = self._read_file
            env.filters["urlquote"] = _urlquote
            self._env = env
        return self._env

    def _read_file(self, path: str) -> str:
        try:
            with open(Path(path), "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise TemplateError(f"file({path!r}): {exc.strerror or exc}") from None
        if len(data) > MAX_FILE_BYTES:
            raise TemplateError(f"file({path!r}): larger than {MAX_FILE_BYTES} bytes")
        text = data.decode("utf-8", errors="replace").rstrip("\r\n")
        self._on_secret(text)
        return text

    def scope(self, layers: list[Mapping[str, Any]]) -> VarScope:
        """Variables from the given layers, later layers winning, rendered when first read."""
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer)
        return VarScope(self, merged)

    def render(self, value: Any, scope: VarScope) -> Any:
        """`value` with every template in it rendered against `scope`; TemplateError on failure."""
        if isinstance(value, str):
            return self._render_str(value, scope) if has_template(value) else value
        if isinstance(value, Mapping):
            return {k: self.render(v, scope) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, scope) for v in value]
        return value

    def _render_str(self, text: str, scope: VarScope) -> Any:
        env = self._jinja()
        from jinja2 import TemplateSyntaxError, Undefined, UndefinedError
        from jinja2.exceptions import SecurityError

        try:
            compiled, names = self._compile(env, text)
            context = {name: scope[name] for name in names if name in scope}
            if hasattr(compiled, "render"):
                return compiled.render(**context)
            result = compiled(**context)
            if isinstance(result, Undefined):
                str(result)  # StrictUndefined raises the UndefinedError that names the variable
            return result
        except TemplateSyntaxError as exc:
            raise TemplateError(f"template syntax error: {exc.message}") from None
        except UndefinedError as exc:
            message = str(exc)
            missing = _ENV_MISSING.search(message)
            if missing:
                raise TemplateError(f"environment variable {missing.group(1)} is not set") from None
            raise TemplateError(f"undefined variable: {message}") from None
        except SecurityError as exc:
            raise TemplateError(f"not allowed in a template: {exc}") from None
        except TemplateError:
            raise
        except Exception as exc:  # a filter or test failing on a value: still the user's template
            raise TemplateError(f"template error: {type(exc).__name__}: {exc}") from None

    def _compile(self, env: Any, text: str) -> tuple[Any, set[str]]:
        if text not in self._compiled:
            from jinja2 import meta

            single = _SINGLE_EXPRESSION.match(text)
            source = text
            if single:
                # A value that is one expression keeps its type (a number stays a number), as in Ansible.
                compiled: Any = env.compile_expression(single["expr"], undefined_to_none=False)
                source = "{{" + single["expr"] + "}}"
            else:
                compiled = env.from_string(text)
            self._compiled[text] = compiled
            self._referenced[text] = meta.find_undeclared_variables(env.parse(source))
        return self._compiled[text], self._referenced[text]


class VarScope(Mapping[str, Any]):
    """A variable mapping whose templated values are rendered on first read, with cycle detection."""

    def __init__(self, templar: Templar, raw: dict[str, Any]) -> None:
        self._templar = templar
        self._raw = raw
        self._done: dict[str, Any] = {}
        self._resolving: list[str] = []

    def __getitem__(self, name: str) -> Any:
        if name in self._done:
            return self._done[name]
        value = self._raw[name]
        if has_template(value):
            if name in self._resolving:
                chain = " -> ".join([*self._resolving[self._resolving.index(name) :], name])
                raise TemplateError(f"variables refer to each other in a loop: {chain}")
            self._resolving.append(name)
            try:
                value = self._templar.render(value, self)
            except TemplateError as exc:
                raise TemplateError(f"in variable {name!r}: {exc}") from None
            finally:
                self._resolving.pop()
        self._done[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def raw(self, name: str, default: Any = None) -> Any:
        """The value as written, templates not rendered (to render only the part that is needed)."""
        return self._raw.get(name, default)

    def __iter__(self) -> Any:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def child(self, layers: list[Mapping[str, Any]]) -> VarScope:
        """A scope with more layers on top (task vars, extra vars)."""
        merged = dict(self._raw)
        for layer in layers:
            merged.update(layer)
        return VarScope(self._templar, merged)
