"""`ce-agent plugins new`: writes a plugin distribution (pyproject, class, README, a passing test) from templates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ce_agent.errors import UserError

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_NAME = 40
#: where the template of each file is (ce_agent/templates/scaffold/), per kind where it differs
_FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "{package}/__init__.py": "{kind}.py.tmpl",
    "tests/test_{name}.py": "test_{kind}.py.tmpl",
}
_SUMMARY = {
    "check": "CRITICAL when a path does not exist, else OK with its size.",
    "collector": "the number of entries in a directory, as a metric.",
    "notifier": "POSTs each notification as JSON to a URL.",
}
_USAGE = {
    "check": """\
```yaml
# site.yml; run it with: ce-agent run site.yml
- hosts: localhost
  checks:
    - name: The data directory exists
      {name}: {{path: /var/lib/app}}
```""",
    "collector": """\
```yaml
# site.yml; run it with: ce-agent run site.yml -v
- hosts: localhost
  collectors:
    - name: Spool size
      {name}: {{path: /var/spool/app}}
  alerts:
    - name: SpoolFilling
      expr: {name}_entries > 1000
```""",
    "notifier": """\
A channel of the inventory names the notifier; a check's `notify:` names the channel.

```yaml
# inventory.yml; try it with: ce-agent notify test ops -i inventory.yml
all:
  vars:
    channels:
      ops: {{{name}: {{url: "https://hooks.example.com/ce-agent"}}}}
  hosts:
    localhost: {{}}
```""",
}


@dataclass(frozen=True, slots=True)
class Scaffold:
    """What `plugins new` wrote."""

    root: Path
    files: list[Path]
    distribution: str
    package: str
    class_name: str


def create(name: str, kind: str, directory: Path, force: bool = False) -> Scaffold:
    """Write DIRECTORY/ce-agent-NAME/; UserError (one line) when the name or the place is refused."""
    from ce_agent.registry import KINDS

    if kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    check_name(name, kind)
    distribution = "ce-agent-" + name.replace("_", "-")
    _refuse_taken(name, kind, distribution)
    package = "ce_agent_" + name
    camel = "".join(part.capitalize() for part in name.split("_") if part)
    class_name = camel if camel.endswith(kind.capitalize()) else camel + kind.capitalize()  # not DiskCheckCheck
    root = directory / distribution
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise UserError(f"{root} already exists and is not empty; use --force to overwrite its generated files")
    values = {
        "name": name, "kind": kind, "group": KINDS[kind], "package": package, "distribution": distribution,
        "class_name": class_name, "ce_agent_version": _version(), "summary": _SUMMARY[kind],
        "usage": _USAGE[kind].format(name=name),
    }
    files = []
    for target, template in _FILES.items():
        path = root / target.format(package=package, name=name)
        text = _render(template.format(kind=kind), values)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        files.append(path)
    return Scaffold(root, files, distribution, package, class_name)


def check_name(name: str, kind: str) -> None:
    """A plugin name is a playbook key and part of a Python package name: lower snake_case, and not a
    key the loader reads itself (a check named `timeout` would never be found)."""
    from ce_agent.config.playbook import TASK_KEYS
    from ce_agent.plan import CHANNEL_KEYS

    if not _NAME.match(name) or len(name) > MAX_NAME:
        suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
        hint = f" (did you mean {suggestion!r}?)" if suggestion and _NAME.match(suggestion) and suggestion != name else ""
        raise UserError(f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter, "
                        f"at most {MAX_NAME} characters{hint}")
    reserved = CHANNEL_KEYS if kind == "notifier" else TASK_KEYS
    if name in reserved:
        where = "a channel" if kind == "notifier" else "a task"
        raise UserError(f"plugin name {name!r} is a key of {where} itself ({', '.join(reserved)}); choose another name")


def _refuse_taken(name: str, kind: str, distribution: str) -> None:
    """Two distributions providing one name make every playbook that uses it fail: refuse a name that
    another distribution already provides for this kind (the same distribution again is a re-scaffold)."""
    from ce_agent.registry import Registry

    for info in Registry().describe(kind):
        if info.name == name and _normalized(info.distribution) != _normalized(distribution):
            raise UserError(f"{kind} plugin {name!r} is already provided by {info.distribution} {info.version}; "
                            "two plugins with one name break every playbook that uses it: choose another name")


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()  # PEP 503


def _version() -> str:
    from ce_agent import __version__

    return __version__


def _render(template: str, values: dict[str, str]) -> str:
    import string
    from importlib.resources import files

    text = files("ce_agent").joinpath("templates", "scaffold", template).read_text(encoding="utf-8")
    return string.Template(text).substitute(values)


def describe(scaffold: Scaffold) -> str:
    """What `plugins new` prints: the files, and what to do next."""
    lines = [f"created {scaffold.root}: the {scaffold.distribution} distribution, class {scaffold.class_name} "
             f"in {scaffold.package}/__init__.py"]
    lines += [f"  {path}" for path in scaffold.files]
    lines += ["next:", f"  cd {scaffold.root}", "  pip install -e '.[test]'   # registers the entry point",
              "  pytest                     # the generated tests pass as they are",
              "  ce-agent plugins list      # shows it, with its distribution"]
    return "\n".join(lines)
