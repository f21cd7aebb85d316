"""Durable delivery: a notification waits in the outbox until its channel accepted it, in order."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ce_agent.contracts import DeliveryError, Notification, TaskContext
from ce_agent.durations import format_duration
from ce_agent.errors import FaultError

#: (channel name, outbox payload) -> the channel as configured now, or None when it no longer exists
Resolve = Callable[[str, Mapping[str, Any]], Any]
Scrub = Callable[[str], str]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one flush tries (tenacity), and when the next flush tries again.

    Set in the inventory as `delivery: {attempts: 3, retry_after: 1m, max_retry_after: 1h, outbox_size: 10000}`."""

    attempts: int = 3  # tries of one notification within a flush
    initial_wait: float = 0.2  # exponential backoff with jitter between those tries (a blip, not an outage)
    max_wait: float = 1.0
    default_timeout: float = 30.0  # per attempt, for notifiers without a `timeout` option
    later: float = 60.0  # after a failed flush: later * 2**(failed flushes - 1), at most `latest`
    latest: float = 3600.0
    outbox_size: int = 10_000  # the oldest notifications are dropped (and counted) beyond this


DELIVERY_KEYS = ("attempts", "retry_after", "max_retry_after", "outbox_size")


def policy_from(spec: Any) -> RetryPolicy:
    """The inventory's `delivery:` mapping as a RetryPolicy; ValueError naming the key at fault."""
    from ce_agent.durations import parse_duration

    if spec is None:
        return RetryPolicy()
    if not isinstance(spec, Mapping):
        raise ValueError("'delivery' must be a mapping (attempts, retry_after, max_retry_after, outbox_size)")
    for key in spec:
        if key not in DELIVERY_KEYS:
            raise ValueError(f"unknown key {key!r} in delivery; valid keys: {', '.join(DELIVERY_KEYS)}")
    values: dict[str, Any] = {}
    for key, attr in (("attempts", "attempts"), ("outbox_size", "outbox_size")):
        if key in spec:
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"delivery.{key} must be a whole number of at least 1, got {value!r}")
            values[attr] = value
    for key, attr in (("retry_after", "later"), ("max_retry_after", "latest")):
        if key in spec:
            try:
                values[attr] = parse_duration(spec[key])
            except ValueError as exc:
                raise ValueError(f"delivery.{key}: {exc}") from None
    return RetryPolicy(**values)


@dataclass
class Delivery:
    """A notification and what became of it: sent, not sent (`--check`), or failed with a reason."""

    notification: Notification
    channel: str
    sent: bool = False
    error: str | None = None
    dropped: bool = False
    via: str | None = None  # the fallback channel that took it
    item_id: int | None = None
    retry_at: float | None = None  # failed and kept: when it is tried again
    unsaved: BaseException | None = None  # sent, but the state could not record it (still in the outbox there)

    def as_dict(self) -> dict[str, object]:
        n = self.notification
        return {"channel": self.channel, "title": n.title, "body": n.body, "sent": self.sent, "error": self.error}


@dataclass
class FlushReport:
    attempted: list[Delivery] = field(default_factory=list)
    # the state could not be written (disk full, read-only, locked): the flush stopped where it
    # happened; the caller carries on from a copy in memory (see Store.memory_copy)
    state_error: BaseException | None = None

    @property
    def failures(self) -> int:
        return sum(1 for a in self.attempted if not a.sent)


def _attempt_timeout(channel: Any, policy: RetryPolicy) -> float:
    timeout = getattr(channel.options, "timeout", None)
    return 2 * float(timeout) + 1 if timeout else policy.default_timeout


def _send_once(channel: Any, notification: Notification, timeout: float) -> None:
    """One attempt, bounded in time: a notifier that hangs is abandoned (its thread is a daemon)."""
    result: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

    def worker() -> None:
        try:
            context = TaskContext(task=channel.name, host=notification.host, play=notification.play)
            channel.plugin(channel.options, context).send(notification)
            result.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.put(exc)

    threading.Thread(target=worker, name=f"send-{channel.name}", daemon=True).start()
    try:
        error = result.get(timeout=timeout)
    except queue.Empty:
        raise DeliveryError(f"no answer within {format_duration(timeout)}", transient=True) from None
    if isinstance(error, DeliveryError):
        raise error
    if error is not None:
        raise DeliveryError(f"{type(error).__name__}: {error}", transient=False) from None


def _backoff(tenacity: Any, policy: RetryPolicy) -> Any:
    """Exponential backoff with jitter from `initial_wait`: tenacity 9.2 calls that `multiplier` (and warns
    about `initial`), the 8.x we also accept knows only `initial`."""
    import inspect

    first = "multiplier" if "multiplier" in inspect.signature(tenacity.wait_exponential_jitter).parameters else "initial"
    return tenacity.wait_exponential_jitter(max=policy.max_wait, **{first: policy.initial_wait})


def send_with_retries(channel: Any, notification: Notification, policy: RetryPolicy, sleep: Callable[[float], None]) -> None:
    """tenacity: retry only transient failures, with exponential backoff and jitter, then give up."""
    import tenacity

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_backoff(tenacity, policy),
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.transient),
        sleep=sleep,
        reraise=True,
    )
    timeout = _attempt_timeout(channel, policy)
    retrying(_send_once, channel, notification, timeout)


def flush(
    store: Any,
    resolve: Resolve,
    scrub: Scrub,
    now: float,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    limit: int = 1000,
) -> FlushReport:
    """Deliver what is due, channel by channel in parallel, each channel's items in order.

    An item is removed only once its channel accepted it. A channel that fails keeps the item and
    everything queued behind it for a later flush (order matters: a "resolved" must never overtake
    its "firing"); after `fallback_after` failed flushes the item goes to the channel's fallback."""
    report = FlushReport()
    by_channel: dict[str, list[Any]] = {}
    for item in store.due(now, limit=limit):
        by_channel.setdefault(item.channel, []).append(item)
    if not by_channel:
        return report
    lock = threading.Lock()

    def deliver_channel(items: list[Any]) -> None:
        for index, item in enumerate(items):
            try:
                outcome = _deliver(store, item, resolve, scrub, now, policy, sleep)
            except FaultError as exc:  # writing down a failed attempt failed: the item stays as it was
                with lock:
                    report.state_error = report.state_error or exc
                break
            with lock:
                report.attempted.append(outcome)
                if outcome.unsaved is not None:
                    report.state_error = report.state_error or outcome.unsaved
            if outcome.unsaved is not None or (not outcome.sent and not outcome.dropped):
                if outcome.retry_at is not None:
                    _back_off_behind(store, items[index + 1:], outcome)
                break  # keep the order: the rest of this channel waits for the next flush

    threads = [
        threading.Thread(target=deliver_channel, args=(items,), name=f"flush-{name}", daemon=True)
        for name, items in by_channel.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.attempted.sort(key=lambda d: d.item_id or 0)
    return report


def _deliver(store: Any, item: Any, resolve: Resolve, scrub: Scrub, now: float, policy: RetryPolicy,
             sleep: Callable[[float], None]) -> Delivery:
    notification = Notification.from_dict(item.payload["notification"])
    host = str(item.payload.get("host", notification.host))
    channel = resolve(item.channel, item.payload)
    if channel is not None and "url_index" in item.payload:
        channel = one_url(channel, int(item.payload["url_index"]))
    if channel is None:
        store.dropped(item, now)
        return Delivery(notification, item.channel, False,
                        f"channel {item.channel!r} is no longer configured for {host}; notification dropped",
                        dropped=True, item_id=item.id)
    try:
        send_with_retries(channel, notification, policy, sleep)
    except DeliveryError as exc:
        error = scrub(str(exc)) or "delivery failed"
        failed_flushes = item.attempts + 1
        fallback = getattr(channel, "fallback", None)
        if fallback and failed_flushes >= getattr(channel, "fallback_after", 3):
            backup = resolve(fallback, item.payload)
            if backup is not None:
                try:
                    send_with_retries(backup, notification, policy, sleep)
                except DeliveryError as backup_exc:
                    error = f"{error}; fallback {fallback!r}: {scrub(str(backup_exc))}"
                else:
                    return Delivery(notification, item.channel, True, error, via=fallback, item_id=item.id,
                                    unsaved=_mark_sent(store, item, now))
        store.add_delivery(item.channel, item.key, item.kind, now, False)
        if not exc.transient:
            store.dropped(item, now)  # a permanent refusal (4xx, a bad URL) is not retried
            return Delivery(notification, item.channel, False, f"{error} (not retried)", dropped=True, item_id=item.id)
        delay = min(policy.latest, policy.later * 2 ** min(failed_flushes - 1, 16))
        store.retry_later(item.id, error, now + delay)
        return Delivery(notification, item.channel, False, error, item_id=item.id, retry_at=now + delay)
    return Delivery(notification, item.channel, True, item_id=item.id, unsaved=_mark_sent(store, item, now))


def _back_off_behind(store: Any, waiting: list[Any], failed: Delivery) -> None:
    """The items queued behind one that failed on their channel back off with it (a failed flush for
    them too, so a failing channel's queue is what a full outbox drops first): else every later
    flush would try the next one in line at once, and a down channel with a queue is hammered."""
    for item in waiting:
        try:
            store.retry_later(item.id, f"waiting behind a failed delivery: {failed.error}", failed.retry_at)
        except FaultError:
            return  # the state cannot be written: they are simply tried again next time


def one_url(channel: Any, index: int) -> Any:
    """The channel narrowed to one of its Apprise URLs: each URL of a list is delivered on its own,
    so a failing one is retried without repeating the message to the others."""
    import dataclasses

    import msgspec

    urls = list(getattr(channel.options, "urls", None) or [])
    if index >= len(urls):
        return None
    return dataclasses.replace(channel, options=msgspec.structs.replace(channel.options, urls=[urls[index]]))


def _mark_sent(store: Any, item: Any, now: float) -> FaultError | None:
    """Remove a sent item; the state's error when that cannot be written (it was sent all the same:
    the caller must not lose that, and takes the item out of its copy in memory)."""
    # What each alert told the channel was recorded when it was queued (so a second run does not
    # queue it again); here only the group's last delivery is kept, for `group_interval`.
    try:
        with store.transaction():
            group = item.payload.get("group")
            if group:
                store.set_notified(group, item.channel, True, 0, now)
            store.delivered(item.id)
            store.add_delivery(item.channel, item.key, item.kind, now, True)
    except FaultError as exc:
        return exc
    return None
