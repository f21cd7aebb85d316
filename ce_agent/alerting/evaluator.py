"""The alert state machine: previous state + observation + now -> new state and events, with no I/O.

It joins Prometheus alert rules (pending -> firing, `for`, `keep_firing_for`), Nagios soft/hard
states (`retries`, Nagios' max_check_attempts) and Nagios flap detection. `step()` is a pure
function: the clock is the `now` argument (seconds since the epoch), so a year of history is a
loop over floats in a test.

Rules, applied in this order by `step()`:

1. attempts: an active observation makes it `prev.attempts + 1`, an inactive one 0.
   The failure is HARD when `attempts >= retries` (the first failure counts: retries=1 is
   HARD at once), SOFT before that.
2. inactive + HARD: fires now when `for_s == 0`, else becomes pending (since = active_since = now).
   pending + HARD: fires once `now - active_since >= for_s`, else stays pending.
   pending + not HARD: back to inactive, silently (a blip shorter than `for` is never announced).
   inactive + SOFT: stays inactive, silently (the Nagios soft state).
3. firing + active: stays firing (a SOFT failure counts too: only a recovery ends a firing alert).
   firing + not active: stays firing while `now - last_active < keep_firing_for_s`, else
   becomes inactive. `last_active` is the last time an observation was active, in any state.
4. Flapping (Nagios' algorithm): `history` keeps the last `flap_window` statuses. A new alert
   (empty `history`) starts with its first observed status repeated `flap_window` times, as
   Nagios initialises a service's state history with its current state: flapping is judged from
   the first result, so a new check that flaps is called flapping after a few changes, not after
   `flap_window` results (by when it may have settled). Each change
   between consecutive entries i-1 and i (i = 1..n-1) weighs 0.8 (oldest) to 1.2 (newest):
   `0.8 + 0.4 * (i-1) / (n-2)` (1.0 when n == 2); the percent is 100 * the summed weights of the
   changes / (n-1). With flap_detection on and a full window (n == flap_window; always so, except
   for a stored alert whose history is shorter, e.g. after flap_window grew, until it fills up):
   not flapping and percent > flap_high -> "flapping_start"; flapping and percent < flap_low ->
   "flapping_stop". Between the two, the previous flapping state holds (hysteresis). Turning
   flap_detection off stops a flapping alert ("flapping_stop").
5. The channel (what was last announced) is kept apart from the state: `announced` is True when
   the last emitted firing/resolved was "firing", `notified_status` is the status it carried.
   While flapping (including the step where it starts) "firing" and "resolved" are HELD: the
   state machine moves, nothing is announced. When not flapping (including the step where
   flapping stops), every step makes the channel agree with the state:
   - firing, active, and (not announced, or the status differs from `notified_status`):
     "firing" with the observed status (Nagios notifies again on a hard state change such as
     WARNING -> CRITICAL);
   - not firing and announced: "resolved" (so a "resolved" never goes out for an alert the
     channel never saw firing), `duration_s = now - fired_at`.
   A firing alert kept only by keep_firing_for (condition clear) is not announced late: it is
   announced if the condition returns, and never if it resolves first.
6. Events of one step: flapping_start/flapping_stop first, then firing/resolved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

INACTIVE = "inactive"
PENDING = "pending"
FIRING = "firing"

RESOLVED = "resolved"
FLAPPING_START = "flapping_start"
FLAPPING_STOP = "flapping_stop"


@dataclass(frozen=True, slots=True)
class Policy:
    """How an alert reacts: Prometheus' `for`/`keep_firing_for`, Nagios' retries and flap thresholds."""

    for_s: float = 0.0
    keep_firing_for_s: float = 0.0
    retries: int = 1
    flap_window: int = 21
    flap_high: float = 20.0
    flap_low: float = 5.0
    flap_detection: bool = True

    def __post_init__(self) -> None:
        # `not x >= 0` also refuses NaN, which would silently disable every comparison below.
        if not self.for_s >= 0:
            raise ValueError(f"for must be >= 0 seconds, got {self.for_s!r}")
        if not self.keep_firing_for_s >= 0:
            raise ValueError(f"keep_firing_for must be >= 0 seconds, got {self.keep_firing_for_s!r}")
        if self.retries < 1:
            raise ValueError(f"retries must be >= 1 (the first failure counts), got {self.retries!r}")
        if self.flap_window < 2:
            raise ValueError(f"flap_window must hold at least 2 results, got {self.flap_window!r}")
        if not 0 <= self.flap_low <= self.flap_high <= 100:
            raise ValueError(
                "flap thresholds must satisfy 0 <= low <= high <= 100, "
                f"got low={self.flap_low!r} high={self.flap_high!r}"
            )


@dataclass(frozen=True, slots=True)
class Observation:
    """One evaluation: does the problem condition hold, with which Nagios status (0-3), and why."""

    active: bool
    status: int
    summary: str = ""
    value: float | None = None


@dataclass(frozen=True, slots=True)
class AlertState:
    """Everything `step()` needs to remember about one alert between evaluations (store it as is)."""

    state: str = INACTIVE
    #: when the current state was entered
    since: float | None = None
    #: when the current HARD failure run started (what `for` measures)
    active_since: float | None = None
    #: when the alert last started firing
    fired_at: float | None = None
    #: the last time an observation was active (what keep_firing_for measures)
    last_active: float | None = None
    #: consecutive active observations (SOFT below retries, HARD from it)
    attempts: int = 0
    #: the last observed status
    status: int = 0
    #: the status the last emitted "firing" carried
    notified_status: int | None = None
    #: the last flap_window statuses, oldest first
    history: tuple[int, ...] = ()
    flapping: bool = False
    flap_percent: float = 0.0
    #: True when the last emitted firing/resolved was "firing"
    announced: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """Something the channel must hear: "firing", "resolved", "flapping_start" or "flapping_stop"."""

    kind: str
    at: float
    status: int
    summary: str
    value: float | None
    #: for "resolved": how long it fired (now - fired_at)
    duration_s: float | None = None


def flap_percent(history: Sequence[int]) -> float:
    """Nagios' weighted percent state change of a status history (oldest first); 0 below 2 entries."""
    n = len(history)
    changed = [i for i in range(1, n) if history[i] != history[i - 1]]
    if n <= 2:
        return 100.0 * len(changed) if n == 2 else 0.0
    # Recent changes weigh more, so flapping is noticed (and ends) sooner. The weight of change i,
    # 0.8 + 0.4 * (i-1)/(n-2), is 0.4 * (2(n-2) + i-1) / (n-2): summing the integers and dividing
    # once makes the percent exact, so a history right at a threshold (20 %) compares as it should.
    units = sum(2 * (n - 2) + i - 1 for i in changed)
    return 40.0 * units / ((n - 2) * (n - 1))


def step(prev: AlertState, obs: Observation, policy: Policy, now: float) -> tuple[AlertState, list[Event]]:
    """Apply one observation at time `now` to an alert: its new state and the events to announce."""
    attempts = prev.attempts + 1 if obs.active else 0
    hard = attempts >= policy.retries
    last_active = now if obs.active else prev.last_active
    active_since: float | None = None
    if hard:
        # A new HARD run starts the `for` clock; one already running (pending, firing) keeps it.
        fresh = prev.state == INACTIVE or prev.active_since is None
        active_since = now if fresh else prev.active_since

    state, since, fired_at = prev.state, prev.since, prev.fired_at
    if prev.state == FIRING:
        kept = (
            policy.keep_firing_for_s > 0
            and prev.last_active is not None
            and now - prev.last_active < policy.keep_firing_for_s
        )
        if not obs.active and not kept:
            state, since = INACTIVE, now
    elif hard and active_since is not None:
        if prev.state == INACTIVE:
            state, since = PENDING, now
        if now - active_since >= policy.for_s:
            state, since, fired_at = FIRING, now, now
    elif prev.state == PENDING:
        state, since = INACTIVE, now

    events: list[Event] = []
    # Nagios starts a new service's state history filled with its first state, so flapping is judged
    # from the first result: waiting for flap_window real results would announce every change of a
    # new check that flaps and then call it flapping long after it had settled.
    seed = prev.history or (obs.status,) * policy.flap_window
    history = (seed + (obs.status,))[-policy.flap_window :]
    percent = flap_percent(history)
    flapping = prev.flapping
    if flapping and not policy.flap_detection:
        flapping = False
        events.append(Event(FLAPPING_STOP, now, obs.status, obs.summary, obs.value))
    elif policy.flap_detection and len(history) >= policy.flap_window:
        if not flapping and percent > policy.flap_high:
            flapping = True
            events.append(Event(FLAPPING_START, now, obs.status, obs.summary, obs.value))
        elif flapping and percent < policy.flap_low:
            flapping = False
            events.append(Event(FLAPPING_STOP, now, obs.status, obs.summary, obs.value))

    announced, notified_status = prev.announced, prev.notified_status
    if not flapping:
        if state == FIRING and obs.active and (not announced or obs.status != notified_status):
            events.append(Event(FIRING, now, obs.status, obs.summary, obs.value))
            announced, notified_status = True, obs.status
        elif state != FIRING and announced:
            duration = now - fired_at if fired_at is not None else None
            events.append(Event(RESOLVED, now, obs.status, obs.summary, obs.value, duration))
            announced = False

    new = AlertState(
        state=state,
        since=since,
        active_since=active_since,
        fired_at=fired_at,
        last_active=last_active,
        attempts=attempts,
        status=obs.status,
        notified_status=notified_status,
        history=history,
        flapping=flapping,
        flap_percent=percent,
        announced=announced,
    )
    return new, events
