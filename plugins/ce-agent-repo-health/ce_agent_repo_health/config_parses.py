"""The `config_parses` check: every YAML, JSON and TOML file matched by the globs parses."""

from __future__ import annotations

import glob
import json
import os
import re
import tomllib
from typing import Annotated

import msgspec
import yaml

from ce_agent.contracts import Check, Metric, Result, Status

_KINDS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml"}
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
#: broken files named in the summary; all of them are in the details
_LISTED = 3


class ConfigParsesCheck(Check):
    """Each YAML, JSON and TOML file matched by the globs parses; CRITICAL names file and line of the error."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        paths: Annotated[
            list[str],
            msgspec.Meta(
                min_length=1,
                description="Files or globs (** recurses); the type comes from the extension "
                "(.yaml/.yml, .json, .toml). A plain path that is missing is CRITICAL.",
            ),
        ]
        root: Annotated[str, msgspec.Meta(description="Directory relative paths and globs start from.")] = "."

    EXAMPLES = """\
- name: Configs parse
  config_parses:
    root: /srv/app
    paths: ["config/**/*.yaml", "package.json", "pyproject.toml"]
"""

    def run(self) -> Result:
        opts = self.options
        files: dict[str, None] = {}
        errors: list[str] = []
        unmatched: list[str] = []
        for pattern in opts.paths:
            full = os.path.join(opts.root, pattern)
            if not glob.has_magic(pattern):
                if os.path.isfile(full):
                    files[pattern] = None
                else:
                    errors.append(f"{pattern}: no such file")
                continue
            matched = sorted(glob.glob(pattern, root_dir=opts.root, recursive=True))
            matched = [m for m in matched if os.path.isfile(os.path.join(opts.root, m))]
            if not matched:
                unmatched.append(pattern)
            files.update(dict.fromkeys(matched))

        parsed = skipped = 0
        for name in files:
            kind = _KINDS.get(os.path.splitext(name)[1].lower())
            if kind is None:
                skipped += 1
                continue
            error = _parse_error(os.path.join(opts.root, name), kind)
            if error is None:
                parsed += 1
            else:
                errors.append(f"{name}:{error}")

        metrics = [
            Metric("config_parses_files", float(parsed + len(errors)), "", {}, min=0),
            Metric("config_parses_errors", float(len(errors)), "", {}, "0", "0", min=0),
        ]
        extra = f" ({skipped} skipped: not YAML, JSON or TOML)" if skipped else ""
        if errors:
            more = f" and {len(errors) - _LISTED} more" if len(errors) > _LISTED else ""
            summary = f"{len(errors)} broken: " + "; ".join(errors[:_LISTED]) + more
            return Result(Status.CRITICAL, summary, metrics, details="\n".join(errors))
        if unmatched:
            return Result(Status.WARNING, f"nothing matches {', '.join(unmatched)}{extra}", metrics)
        return Result(Status.OK, f"{parsed} config files parse{extra}", metrics)


def _parse_error(path: str, kind: str) -> str | None:
    """None when the file parses, else "LINE:COL: reason" (or ": reason" when no line can be named)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return f" cannot read: {exc.strerror or exc}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return f"{line}: not UTF-8 text"
    try:
        if kind == "yaml":
            # All documents, as in Kubernetes manifests; yaml.safe_load would refuse a second one.
            for _ in yaml.safe_load_all(text):
                pass
        elif kind == "json":
            json.loads(text)
        else:
            tomllib.loads(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = ", ".join(str(p) for p in (exc.context, exc.problem) if p)
        return f"{mark.line + 1}:{mark.column + 1}: {reason}" if mark else f" {reason}"
    except yaml.YAMLError as exc:
        return f" {exc}"
    except json.JSONDecodeError as exc:
        return f"{exc.lineno}:{exc.colno}: {exc.msg}"
    except tomllib.TOMLDecodeError as exc:
        at = _TOML_AT.search(str(exc))
        reason = _TOML_AT.sub("", str(exc)).strip()
        return f"{at.group(1)}:{at.group(2)}: {reason}" if at else f" {reason}"
    return None
