"""The `alertmanager` notifier: what it posts (pure, on a fake clock), how the pipeline re-sends to it,
its options, and its HTTP behaviour against recording receivers on 127.0.0.1 (a real Alertmanager is
in tests/test_alertmanager.py)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from ce_agent.alerting.evaluator import AlertState, Observation, Policy
from ce_agent.alerting.pipeline import AlertInput, compose, evaluate, part, resend_lookup
from ce_agent.alerting.routing import AlertingConfig, Route
from ce_agent.contracts import DeliveryError, Notification, Status
from ce_agent.notifiers.alertmanager import AlertmanagerNotifier, alert_labels, postable_alerts, rfc3339
from ce_agent.options import convert_options
from tests.receivers import Webhook

NOW = 1_700_000_000.0
STARTED = NOW - 3600
SECRET = "Bearer-Canary-0123456789"


def options(**raw: Any) -> Any:
    converted, errors = convert_options(AlertmanagerNotifier.Options, {"url": "http://127.0.0.1:9093", **raw})
    assert not errors, errors
    return converted


def record(kind: str = "firing", **extra: Any) -> dict[str, Any]:
    return {"key": 'check{check="Root disk",host="web1",play="Web"}', "kind": kind, "status": 2,
            "labels": {"check": "Root disk", "host": "web1", "play": "Web", "severity": "critical"},
            "annotations": {"summary": "/ 95% used", "description": "Root disk on web1 is CRITICAL: / 95% used"},
            "starts_at": STARTED, "ends_at": NOW - 5 if kind == "resolved" else None, **extra}


def note(*records: dict[str, Any], kind: str = "firing") -> Notification:
    return Notification(channel="am", title="[CRITICAL] Root disk on web1", body="", status=Status.CRITICAL,
                        host="web1", play="Web", check="Root disk", labels=dict(records[0]["labels"]) if records else {},
                        kind=kind, alerts=list(records))


# ---- the payload, on a fake clock --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "ttl", "ends"),
    [
        pytest.param("firing", "10m", NOW + 600, id="firing-ends-after-ttl"),
        pytest.param("resend", "10m", NOW + 600, id="resend-pushes-endsAt"),
        pytest.param("reminder", "4m", NOW + 240, id="reminder-too"),
        pytest.param("resolved", "10m", NOW - 5, id="resolved-ends-when-it-resolved"),
    ],
)
def test_one_alert_per_record_with_stable_startsAt(kind: str, ttl: str, ends: float) -> None:
    (alert,) = postable_alerts(note(record(kind)), options(ttl=ttl, resend_interval="1m"), NOW)
    assert alert == {
        "labels": {"alertname": "Root disk", "check": "Root disk", "host": "web1", "play": "Web", "severity": "critical"},
        "annotations": {"summary": "/ 95% used", "description": "Root disk on web1 is CRITICAL: / 95% used"},
        "startsAt": rfc3339(STARTED),
        "endsAt": rfc3339(ends),
    }


def test_re_sends_keep_startsAt_and_move_endsAt_with_the_clock() -> None:
    opts = options(ttl="3m", resend_interval="1m")
    first, later = (postable_alerts(note(record("resend")), opts, t)[0] for t in (NOW, NOW + 60))
    assert first["startsAt"] == later["startsAt"] == rfc3339(STARTED)
    assert (first["endsAt"], later["endsAt"]) == (rfc3339(NOW + 180), rfc3339(NOW + 240))


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0.25) == "1970-01-01T00:00:00.250Z"


def test_a_group_is_one_alert_each_and_flapping_news_is_not_posted() -> None:
    rule = record(labels={"alertname": "HighLoad", "host": "web1", "play": "Web", "severity": "warning",
                          "mountpoint": "/"}, annotations={"summary": "load 9", "runbook_url": "http://wiki/load"})
    alerts = postable_alerts(note(record(), rule, record("flapping_start")), options(), NOW)
    assert [a["labels"]["alertname"] for a in alerts] == ["Root disk", "HighLoad"]
    assert alerts[1]["labels"]["mountpoint"] == "/"
    assert alerts[1]["annotations"] == {"summary": "load 9", "runbook_url": "http://wiki/load"}
    assert postable_alerts(note(record("flapping_stop")), options(), NOW) == []


def test_channel_labels_are_added_and_the_alerts_own_win() -> None:
    opts = options(labels={"source": "ce-agent", "severity": "info"})
    (alert,) = postable_alerts(note(record()), opts, NOW)
    assert alert["labels"]["source"] == "ce-agent"
    assert alert["labels"]["severity"] == "critical"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({"check": "Root disk"}, {"alertname": "Root disk", "check": "Root disk"}, id="check-is-alertname"),
        pytest.param({"alertname": "HighLoad", "check": "x"}, {"alertname": "HighLoad", "check": "x"}, id="rule-name"),
        pytest.param({"alertname": "A", "data-center": "eu", "1st": "x"}, {"alertname": "A", "data_center": "eu",
                                                                            "_1st": "x"}, id="names-made-valid"),
        pytest.param({"alertname": "A", "empty": ""}, {"alertname": "A"}, id="empty-left-out"),
        pytest.param({}, {"alertname": "ce_agent"}, id="never-without-alertname"),
    ],
)
def test_labels_as_alertmanager_keys_them(labels: dict[str, str], expected: dict[str, str]) -> None:
    assert alert_labels(labels, {}) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param("", None, id="none-by-default"),
        pytest.param("https://status.example/{host}#{check}", "https://status.example/web1#Root%20disk", id="filled"),
        pytest.param("https://status.example/{alertname}/{nothing}", "https://status.example/Root%20disk/",
                     id="unknown-field-empty"),
    ],
)
def test_generator_url(template: str, expected: str | None) -> None:
    (alert,) = postable_alerts(note(record()), options(generator_url=template), NOW)
    assert alert.get("generatorURL") == expected


def test_a_new_severity_ends_the_alert_under_its_old_labels() -> None:
    old = {"check": "Root disk", "host": "web1", "play": "Web", "severity": "warning"}
    alerts = postable_alerts(note(record(replaces=old)), options(), NOW)
    assert [(a["labels"]["severity"], a["endsAt"]) for a in alerts] == [("critical", rfc3339(NOW + 600)),
                                                                         ("warning", rfc3339(NOW))]
    assert alerts[1]["startsAt"] == rfc3339(STARTED)


def test_notify_test_posts_a_test_alert_that_ends_within_minutes() -> None:
    drill = Notification(channel="am", title="[TEST] ce-agent test notification from web1", body="a fire drill",
                         status=Status.OK, host="web1", summary="test notification", kind="test")
    (alert,) = postable_alerts(drill, options(), NOW)
    assert alert["labels"] == {"alertname": "CeAgentTestNotification", "host": "web1", "severity": "none"}
    assert (alert["startsAt"], alert["endsAt"]) == (rfc3339(NOW), rfc3339(NOW + 300))
    assert alert["annotations"] == {"summary": "test notification", "description": "a fire drill"}


def test_a_notification_queued_before_per_alert_records_still_posts() -> None:
    stored = {"kind": "resolved", "channel": "am", "title": "[RESOLVED] Root disk on web1", "body": "b",
              "status": "OK", "host": "web1", "play": "Web", "check": "Root disk", "summary": "/ 41% used",
              "metrics": [], "labels": {"check": "Root disk", "host": "web1", "severity": "critical"}}
    loaded = Notification.from_dict(stored)
    assert loaded.alerts == []
    (alert,) = postable_alerts(loaded, options(), NOW)
    assert alert["labels"]["alertname"] == "Root disk"
    assert alert["startsAt"] == alert["endsAt"] == rfc3339(NOW)


def test_per_alert_records_round_trip_through_the_outbox_json() -> None:
    message = note(record(), record("resolved"))
    again = Notification.from_dict(json.loads(json.dumps(message.as_dict())))
    assert again.alerts == message.alerts
    assert "alerts" not in Notification("c", "t", "b", Status.OK).as_dict()  # unchanged for a plain message


# ---- the pipeline: parts, re-sends, no group_wait -----------------------------------------------------


def alert_input(active: bool, status: int = 2, severity: str = "critical", notify: tuple[str, ...] = ("am", "mail"),
                annotations: Mapping[str, str] | None = None) -> AlertInput:
    key = 'check{check="Root disk",host="web1",play="Web"}'
    return AlertInput(key=key, labels={"check": "Root disk", "host": "web1", "play": "Web", "severity": severity},
                      observation=Observation(active=active, status=status if active else 0,
                                              summary="/ 95% used" if active else "/ 41% used"),
                      policy=Policy(), host="web1", play="Web", title="Root disk on web1", notify=list(notify),
                      annotations=dict(annotations or {}))


class World:
    """What evaluate() looks up, kept as the store would keep it: what each channel was told, and when
    each group's last message was delivered (here: at once, unless the channel is `down`)."""

    def __init__(self, route: Route | None = None) -> None:
        self.states: dict[str, AlertState] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.told: dict[tuple[str, str], dict[str, Any]] = {}
        self.sent: dict[tuple[str, str], float] = {}
        self.down: set[str] = set()
        self.routes = [route] if route else []

    def evaluate(self, alert: AlertInput, now: float, resend: float | None = 60.0) -> Any:
        result = evaluate([alert], self.states, lambda host: AlertingConfig(routes=self.routes),
                          lambda key, channel: self.told.get((key, channel)),
                          lambda group, channel: self.sent.get((group, channel)), lambda labels: None, now,
                          lambda text: text, dict(self.labels),
                          (lambda channel, host, play: resend if channel == "am" else None) if resend else None)
        self.states.update(result.states)
        self.labels[alert.key] = dict(alert.labels)
        for planned in result.planned:
            if planned.kind in ("firing", "reminder", "resolved", "forget"):
                self.told[(planned.key, planned.channel)] = {"firing": planned.kind in ("firing", "reminder"),
                                                             "status": alert.observation.status, "last_sent": now}
        for notification, _host, group, _due, _parts in result.notifications:
            if notification.channel not in self.down:
                self.sent[(group, notification.channel)] = now + 0.1
        return result


def kinds(result: Any) -> dict[str, str]:
    return {n.channel: n.kind for n, *_ in result.notifications}


def test_only_the_alertmanager_channel_is_re_sent_to() -> None:
    world = World()
    assert kinds(world.evaluate(alert_input(True), NOW)) == {"am": "firing", "mail": "firing"}
    assert kinds(world.evaluate(alert_input(True), NOW + 30)) == {}
    assert kinds(world.evaluate(alert_input(True), NOW + 61)) == {"am": "resend"}
    assert kinds(world.evaluate(alert_input(True), NOW + 100)) == {}
    assert kinds(world.evaluate(alert_input(True), NOW + 125)) == {"am": "resend"}
    # the route's repeat_interval still reminds the people on the other channel
    assert kinds(world.evaluate(alert_input(True), NOW + 4 * 3600)) == {"am": "resend", "mail": "reminder"}
    assert kinds(world.evaluate(alert_input(False), NOW + 4 * 3600 + 10)) == {"am": "resolved", "mail": "resolved"}


def test_without_a_resend_interval_nothing_changes() -> None:
    world = World()
    world.evaluate(alert_input(True), NOW, resend=None)
    assert kinds(world.evaluate(alert_input(True), NOW + 61, resend=None)) == {}


def test_no_re_send_piles_up_behind_an_undelivered_message() -> None:
    world = World()
    world.down.add("am")
    world.evaluate(alert_input(True), NOW)
    assert kinds(world.evaluate(alert_input(True), NOW + 61)) == {}
    assert kinds(world.evaluate(alert_input(True), NOW + 600)) == {}
    world.down.clear()
    world.sent[('route-1:check{check="Root disk",host="web1",play="Web"}', "am")] = NOW + 700  # the outbox delivered it
    assert kinds(world.evaluate(alert_input(True), NOW + 761)) == {"am": "resend"}


def test_the_alertmanager_channel_skips_group_wait() -> None:
    world = World(Route(channels=("am", "mail"), group_by=("alertname",), group_wait=30.0, group_interval=300.0))
    result = world.evaluate(alert_input(True), NOW)
    due = {n.channel: d for n, _host, _group, d, _parts in result.notifications}
    assert due == {"am": NOW, "mail": NOW + 30}


def test_a_flapping_alert_is_still_re_sent_to_alertmanager() -> None:
    world = World()
    world.evaluate(alert_input(True), NOW)
    key = alert_input(True).key
    # a history that changes at every step: it stays flapping
    world.states[key] = dataclasses.replace(world.states[key], flapping=True, history=(2, 0) * 10 + (2,))
    assert kinds(world.evaluate(alert_input(True), NOW + 61)) == {"am": "resend"}
    assert world.states[key].flapping


def test_parts_carry_what_alertmanager_needs() -> None:
    world = World()
    first = world.evaluate(alert_input(True, 1, "warning", annotations={"runbook_url": "http://wiki/disk"}), NOW)
    (am,) = [n for n, *_ in first.notifications if n.channel == "am"]
    (entry,) = am.alerts
    assert entry["starts_at"] == NOW and entry["ends_at"] is None and "replaces" not in entry
    assert entry["annotations"] == {"summary": "/ 95% used", "description": "Root disk on web1 is WARNING: / 95% used",
                                    "runbook_url": "http://wiki/disk"}
    # WARNING -> CRITICAL changes the severity label: the old labels are passed on, to be ended
    second = world.evaluate(alert_input(True, 2, "critical"), NOW + 10)
    (am,) = [n for n, *_ in second.notifications if n.channel == "am"]
    (entry,) = am.alerts
    assert entry["starts_at"] == NOW and entry["replaces"]["severity"] == "warning"
    third = world.evaluate(alert_input(False, severity="critical"), NOW + 20)
    (am,) = [n for n, *_ in third.notifications if n.channel == "am"]
    assert (am.alerts[0]["kind"], am.alerts[0]["starts_at"], am.alerts[0]["ends_at"]) == ("resolved", NOW, NOW + 20)


def test_compose_of_parts_queued_by_an_older_version() -> None:
    old_part = {k: v for k, v in part(alert_input(True), AlertState(fired_at=NOW), "firing", NOW, str).items()
                if k not in ("annotations", "starts_at", "ends_at")}
    (entry,) = compose("am", [old_part]).alerts
    assert entry["starts_at"] is None and entry["annotations"] == {"summary": "/ 95% used"}


def test_resend_lookup_asks_the_channels_notifier_once() -> None:
    asked: list[str] = []

    class Channel:
        plugin = AlertmanagerNotifier
        options = options(resend_interval="30s")

    def resolve(name: str, payload: Mapping[str, Any]) -> Any:
        asked.append(name)
        return Channel() if name == "am" else None

    lookup = resend_lookup(resolve)
    assert [lookup("am", "web1", "Web"), lookup("am", "web1", "Web"), lookup("mail", "web1", "Web")] == [30.0, 30.0, None]
    assert asked == ["am", "mail"]


# ---- options -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param({"url": []}, "url: give at least one", id="no-url"),
        pytest.param({"url": "ftp://am"}, "http:// or https://", id="scheme"),
        pytest.param({"url": ["http://am:9093", "http://:x"]}, "not a URL", id="bad-port"),
        pytest.param({"url": f"http://u:{SECRET}@am"}, "use basic_auth", id="userinfo"),
        pytest.param({"url": "http://am", "ttl": "90s"}, "ttl: must be at least twice", id="ttl"),
        pytest.param({"url": "http://am", "resend_interval": "0s"}, "resend_interval: must be at least 1s", id="resend"),
        pytest.param({"url": "http://am", "timeout": 0}, "timeout: must be more than 0s", id="timeout"),
        pytest.param({"url": "http://am", "bearer_token": SECRET, "headers": {"authorization": SECRET}},
                     "headers: an Authorization header", id="two-authorizations"),
        pytest.param({"url": "http://am", "headers": {"Bad Name": SECRET}}, "not an HTTP header name", id="header-name"),
        pytest.param({"url": "http://am", "basic_auth": {"username": "u"}}, "password", id="basic-auth-incomplete"),
        pytest.param({"url": "http://am", "generator_url": "http://x/{0}"}, "generator_url:", id="generator-template"),
    ],
)
def test_bad_options_name_the_option_never_the_secret(raw: dict[str, Any], message: str) -> None:
    converted, errors = convert_options(AlertmanagerNotifier.Options, raw)
    assert converted is None and len(errors) == 1
    assert message in errors[0].message
    assert SECRET not in errors[0].message


def test_the_examples_are_valid_channels() -> None:
    channels = yaml.safe_load(AlertmanagerNotifier.EXAMPLES)["all"]["vars"]["channels"]
    for name, value in channels.items():
        raw = value["alertmanager"]
        if "basic_auth" in raw:
            raw = {**raw, "basic_auth": {"username": "u", "password": "s3cret"}}
        assert convert_options(AlertmanagerNotifier.Options, raw)[1] == [], name


def test_it_is_a_registered_notifier() -> None:
    from ce_agent.registry import Registry

    registry = Registry()
    registry.load("notifier", ["alertmanager"])
    assert registry.get("notifier", "alertmanager") is AlertmanagerNotifier


# ---- HTTP ------------------------------------------------------------------------------------------------


def test_posts_json_to_the_v2_api_with_credentials(make_notifier, webhook: Webhook) -> None:
    base = f"http://127.0.0.1:{webhook.port}/prefix/"
    notifier = make_notifier(AlertmanagerNotifier, url=base, headers={"X-Scope-OrgID": "tenant-1"},
                             basic_auth={"username": "ce-agent", "password": SECRET})
    notifier.send(note(record()))
    (request,) = webhook.requests
    assert request.path == "/prefix/api/v2/alerts"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Scope-OrgID"] == "tenant-1"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"ce-agent:{SECRET}".encode()).decode()
    assert request.headers["User-Agent"].startswith("ce-agent/")
    (alert,) = request.json()
    assert alert["labels"]["alertname"] == "Root disk"

    make_notifier(AlertmanagerNotifier, url=webhook.url("http", "/api/v2/alerts"), bearer_token=SECRET).send(note(record()))
    assert webhook.requests[1].path == "/api/v2/alerts"
    assert webhook.requests[1].headers["Authorization"] == f"Bearer {SECRET}"


def test_only_flapping_news_posts_nothing(make_notifier, webhook: Webhook) -> None:
    make_notifier(AlertmanagerNotifier, url=webhook.url("http", "")).send(note(record("flapping_start")))
    assert webhook.requests == []


@pytest.mark.parametrize(
    ("status", "transient", "said"),
    [
        pytest.param(400, False, "refused: HTTP 400", id="bad-alert-permanent"),
        pytest.param(401, False, "refused: HTTP 401", id="unauthorized-permanent"),
        pytest.param(404, False, "refused: HTTP 404", id="wrong-path-permanent"),
        pytest.param(429, True, "HTTP 429", id="rate-limited-transient"),
        pytest.param(500, True, "HTTP 500", id="server-error-transient"),
        pytest.param(503, True, "HTTP 503", id="unavailable-transient"),
    ],
)
def test_refusals_are_permanent_and_outages_transient(make_notifier, webhook: Webhook, status: int, transient: bool,
                                                      said: str) -> None:
    webhook.status = status
    notifier = make_notifier(AlertmanagerNotifier, url=webhook.url("http", ""), bearer_token=SECRET)
    with pytest.raises(DeliveryError) as caught:
        notifier.send(note(record()))
    assert caught.value.transient is transient
    assert said in str(caught.value) and SECRET not in str(caught.value)


def test_a_closed_port_is_transient(make_notifier, dead_port: int) -> None:
    notifier = make_notifier(AlertmanagerNotifier, url=f"http://127.0.0.1:{dead_port}", timeout="2s")
    with pytest.raises(DeliveryError) as caught:
        notifier.send(note(record()))
    assert caught.value.transient and "cannot connect" in str(caught.value)
    assert f"127.0.0.1:{dead_port}" in str(caught.value)


def test_ha_one_member_accepting_is_enough_and_the_others_are_logged(make_notifier, webhook: Webhook, dead_port: int,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    notifier = make_notifier(AlertmanagerNotifier, url=[f"http://127.0.0.1:{dead_port}", webhook.url("http", "")],
                             timeout="2s", headers={"X-Api-Key": SECRET})
    with caplog.at_level(logging.WARNING, logger="ce_agent.notifiers.alertmanager"):
        notifier.send(note(record()))
    assert len(webhook.requests) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"127.0.0.1:{dead_port}" in line and "cannot connect" in line and SECRET not in line


def test_ha_a_member_that_hangs_does_not_hold_the_others(make_notifier, webhook: Webhook) -> None:
    webhook.delay = 10
    with _recorder() as healthy:
        notifier = make_notifier(AlertmanagerNotifier, url=[webhook.url("http", ""), healthy], timeout="1s")
        started = time.monotonic()
        notifier.send(note(record()))
        assert time.monotonic() - started < 4
        assert len(healthy.requests) == 1  # type: ignore[attr-defined]


def test_ha_every_member_failing_is_one_error(make_notifier, webhook: Webhook, dead_port: int) -> None:
    webhook.status = 400
    notifier = make_notifier(AlertmanagerNotifier, url=[f"http://127.0.0.1:{dead_port}", webhook.url("http", "")],
                             timeout="2s")
    with pytest.raises(DeliveryError) as caught:
        notifier.send(note(record()))
    assert "cannot connect" in str(caught.value) and "HTTP 400" in str(caught.value)
    assert caught.value.transient  # the member that is down may come back


class _Url(str):
    requests: list[bytes]


@contextlib.contextmanager
def _recorder() -> Iterator[_Url]:
    """A second recording receiver on 127.0.0.1 that answers 200 (the `webhook` fixture is only one)."""
    url = _Url("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            url.requests.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    url = _Url(f"http://127.0.0.1:{server.server_address[1]}")
    url.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
