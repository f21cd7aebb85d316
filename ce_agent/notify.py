"""Turns problem results into notifications, one per channel, and hands them to the notifiers."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ce_agent.contracts import DeliveryError, Metric, Notification, Status, TaskContext
from ce_agent.durations import format_duration
from ce_agent.runner import Outcome

Scrub = Callable[[str], str]
DEFAULT_SEND_TIMEOUT = 30.0


@dataclass
class Delivery:
    """A notification and what became of it: sent, not sent (`--check`), or failed with a reason."""

    notification: Notification
    channel: object
    sent: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        n = self.notification
        return {"channel": n.channel, "title": n.title, "body": n.body, "sent": self.sent, "error": self.error}


def _metric_text(metric: Metric) -> str:
    value = "U" if metric.value is None else f"{metric.value:g}"
    labels = ",".join(f"{k}={v}" for k, v in metric.labels.items())
    return f"{metric.name}{'{' + labels + '}' if labels else ''}={value}{metric.unit}"


def render(outcome: Outcome, channel_name: str, scrub: Scrub) -> Notification:
    """The message for one problem result: "[CRITICAL] Root disk on web1" and a plain-text body.

    Everything in it is scrubbed: a task's name or labels may have been templated from a secret."""
    job, result = outcome.job, outcome.result
    title = f"[{result.status.name}] {job.name} on {job.host}"
    lines = [result.summary, "", f"Host: {job.host}", f"Play: {job.play}", f"Check: {job.name} ({job.plugin_name})"]
    if job.severity:
        lines.append(f"Severity: {job.severity}")
    if result.metrics:
        lines.append("Metrics: " + ", ".join(_metric_text(m) for m in result.metrics[:12]))
    if result.details:
        lines += ["", result.details]
    labels = {"check": job.name, "host": job.host, "play": job.play, **job.labels}
    if job.severity:
        labels["severity"] = job.severity
    return Notification(
        channel=channel_name,
        title=scrub(title),
        body=scrub("\n".join(lines)),
        status=result.status,
        host=job.host,
        play=job.play,
        check=scrub(job.name),
        summary=result.summary,
        metrics=list(result.metrics),
        labels={k: scrub(str(v)) for k, v in labels.items()},
    )


def plan_notifications(outcomes: Iterable[Outcome], scrub: Scrub) -> list[Delivery]:
    """One delivery per channel named in `notify:` of every check that is not OK."""
    deliveries = []
    for outcome in outcomes:
        job = outcome.job
        if job.kind != "check" or outcome.result.status is Status.OK:
            continue
        for channel in job.notify:
            deliveries.append(Delivery(render(outcome, channel.name, scrub), channel))
    return deliveries


def send_all(deliveries: list[Delivery], scrub: Scrub, parallel: int = 10) -> None:
    """Send every delivery through its channel's notifier, several at a time, each within a bound.

    A notifier that overruns its own `timeout` option (default 30s) by more than that again is
    reported as timed out and not waited for; failures are recorded, never raised."""
    results: queue.SimpleQueue[tuple[int, str | None]] = queue.SimpleQueue()

    def worker(index: int, delivery: Delivery) -> None:
        channel = delivery.channel
        context = TaskContext(task=channel.name, host=delivery.notification.host, play=delivery.notification.play)
        try:
            channel.plugin(channel.options, context).send(delivery.notification)
            results.put((index, None))
        except DeliveryError as exc:
            results.put((index, scrub(str(exc)) or "delivery failed"))
        except BaseException as exc:  # noqa: BLE001 - a notifier bug must not lose the other notifications
            results.put((index, scrub(f"{type(exc).__name__}: {exc}")))

    pending = list(enumerate(deliveries))
    running: dict[int, float] = {}
    while pending or running:
        while pending and len(running) < parallel:
            index, delivery = pending.pop(0)
            running[index] = time.monotonic() + _bound(delivery)
            threading.Thread(target=worker, args=(index, delivery), name="notify", daemon=True).start()
        try:
            index, error = results.get(timeout=max(0.0, min(running.values()) - time.monotonic()))
        except queue.Empty:
            index, error = -1, None
        if running.pop(index, None) is not None:
            deliveries[index].sent = error is None
            deliveries[index].error = error
        now = time.monotonic()
        for late in [i for i, deadline in running.items() if deadline <= now]:
            del running[late]
            deliveries[late].error = f"timed out after {format_duration(_bound(deliveries[late]))}"


def _bound(delivery: Delivery) -> float:
    timeout = getattr(delivery.channel.options, "timeout", None) or DEFAULT_SEND_TIMEOUT
    return 2 * float(timeout) + 1
