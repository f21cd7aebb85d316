"""Turns problem results into notifications, one per channel, and hands them to the notifiers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ce_agent.contracts import DeliveryError, Metric, Notification, Status, TaskContext
from ce_agent.runner import Outcome

Scrub = Callable[[str], str]


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


def render(outcome: Outcome, channel_name: str) -> Notification:
    """The message for one problem result: "[CRITICAL] Root disk on web1" and a plain-text body."""
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
        title=title,
        body="\n".join(lines),
        status=result.status,
        host=job.host,
        play=job.play,
        check=job.name,
        summary=result.summary,
        metrics=list(result.metrics),
        labels=labels,
    )


def plan_notifications(outcomes: Iterable[Outcome]) -> list[Delivery]:
    """One delivery per channel named in `notify:` of every check that is not OK."""
    deliveries = []
    for outcome in outcomes:
        job = outcome.job
        if job.kind != "check" or outcome.result.status is Status.OK:
            continue
        for channel in job.notify:
            deliveries.append(Delivery(render(outcome, channel.name), channel))
    return deliveries


def send_all(deliveries: list[Delivery], scrub: Scrub) -> None:
    """Send each delivery through its channel's notifier; failures are recorded, never raised."""
    for delivery in deliveries:
        channel = delivery.channel
        context = TaskContext(task=channel.name, host=delivery.notification.host, play=delivery.notification.play)
        try:
            channel.plugin(channel.options, context).send(delivery.notification)
            delivery.sent = True
        except DeliveryError as exc:
            delivery.error = scrub(str(exc))
        except Exception as exc:  # noqa: BLE001 - a notifier bug must not lose the other notifications
            delivery.error = scrub(f"{type(exc).__name__}: {exc}")
