"""Plain-data stand-ins for a run's outcomes, for the exporters' tests (they read only these fields)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ce_agent.contracts import Metric, Result


@dataclass
class Job:
    """The fields of a plan's job that the exporters read."""

    name: str
    kind: str = "check"
    host: str = "web1"
    play: str = "Site"
    plugin_name: str = "fixed"


@dataclass
class Outcome:
    job: Job
    result: Result
    duration_s: float = 0.25
    samples: list[Metric] = field(default_factory=list)
    timed_out: bool = False
