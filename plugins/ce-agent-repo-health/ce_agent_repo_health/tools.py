"""The `tools` check: required programs are on PATH, optionally at a minimum version."""

from __future__ import annotations

import re
import shutil
from typing import Annotated

import msgspec

from ce_agent.contracts import Metric, Result, Status, worst
from ce_agent_repo_health._process import CommandsCheck, CommandTimeout

#: the first dotted number in `--version` output ("git version 2.39.5", "GNU bash, version 5.2.15(1)")
_VERSION = re.compile(r"(?<![\d.])(\d+(?:\.\d+)+)")
_MIN_VERSION = r"^\d+(\.\d+)*$"

#: a version as text; a bare float is refused, as YAML turns 2.30 into 2.3 (a bare integer is fine)
MinVersion = Annotated[str, msgspec.Meta(pattern=_MIN_VERSION)]


class ToolsCheck(CommandsCheck):
    """Programs are on PATH; those given a minimum version report at least that in `NAME --version`."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        names: Annotated[
            list[str], msgspec.Meta(min_length=1, description="Programs that must be found on PATH.")
        ]
        min_versions: Annotated[
            dict[str, MinVersion | int],
            msgspec.Meta(
                description='Minimum versions, e.g. {git: "2.30"} (quoted: YAML reads 2.30 as 2.3); '
                "checked with `NAME --version`. A name here is required even if not in `names`."
            ),
        ] = msgspec.field(default_factory=dict)

    EXAMPLES = """\
- name: Build tools
  tools:
    names: [git, make, python3]
    min_versions: {git: "2.30", python3: "3.11"}
"""

    def run(self) -> Result:
        opts = self.options
        names = list(dict.fromkeys([*opts.names, *opts.min_versions]))
        self.start_commands()
        statuses: list[Status] = []
        problems: list[str] = []
        versions: list[str] = []
        metrics: list[Metric] = []
        for name in names:
            program = shutil.which(name)
            metrics.append(Metric("tools_found", float(program is not None), "", {"tool": name}, min=0, max=1))
            if program is None:
                statuses.append(Status.CRITICAL)
                problems.append(f"{name} not found on PATH")
                continue
            wanted = opts.min_versions.get(name)
            if wanted is None:
                continue
            status, said = self._version_check(name, program, str(wanted))
            statuses.append(status)
            (versions if status is Status.OK else problems).append(said)

        status = worst(statuses)
        if status is not Status.OK:
            return Result(status, "; ".join(problems), metrics)
        found = f" ({', '.join(versions)})" if versions else ""
        return Result(Status.OK, f"{len(names)} tools found{found}", metrics)

    def _version_check(self, name: str, program: str, wanted: str) -> tuple[Status, str]:
        """(status, what to say): the problem, or the version found when it is recent enough."""
        assert self._commands is not None
        try:
            done = self._commands.run([program, "--version"])
        except CommandTimeout as exc:
            return Status.UNKNOWN, f"{name} --version: {exc}"
        except OSError as exc:
            return Status.UNKNOWN, f"{name} --version: {exc.strerror or exc}"
        # Some tools print their version on stderr, or exit non-zero after printing it.
        match = _VERSION.search(done.stdout) or _VERSION.search(done.stderr)
        if match is None:
            return Status.UNKNOWN, f"{name} --version shows no version number ({done.first_error_line[:80]})"
        found = match.group(1)
        if _as_tuple(found) < _as_tuple(wanted):
            return Status.CRITICAL, f"{name} {found} is older than {wanted}"
        return Status.OK, f"{name} {found}"


def _as_tuple(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    # 2.30 == 2.30.0: trailing zeros do not make a version newer.
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)
