"""The `alertmanager` notifier: each alert posted to Alertmanager's v2 API, kept alive by re-sends."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import msgspec

from ce_agent.contracts import DeliveryError, Notification, Notifier, TaskContext
from ce_agent.options import Duration
from ce_agent.redact import Redactor

#: the path Alertmanager takes alerts at, below its base URL (and --web.route-prefix)
API_PATH = "/api/v2/alerts"
#: how long the alert of `ce-agent notify test` stays active in Alertmanager: long enough for its
#: group_wait and a notification, short enough to end (and tell "resolved") without anyone's help
TEST_TTL = 300.0
#: message kinds that say nothing about an alert's state in Alertmanager
_NOT_POSTED = frozenset({"flapping_start", "flapping_stop"})
#: Prometheus' label names (Alertmanager 0.25 refuses others with a 400)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: statuses a retry may cure; any other 4xx is a refusal that will not change
_TRANSIENT_4XX = frozenset({408, 425, 429})
#: how much of Alertmanager's answer to quote in an error
_REASON_CHARS = 200

log = logging.getLogger(__name__)


class BasicAuth(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """HTTP basic auth, as Alertmanager's --web.config.file (or a proxy in front of it) asks for."""

    username: str
    password: str


class AlertmanagerNotifier(Notifier):
    """Post each alert to Alertmanager (`POST /api/v2/alerts`), which groups, silences, inhibits and routes."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        url: Annotated[
            str | list[str],
            msgspec.Meta(description="Alertmanager's base URL (http://am:9093), or every member of an HA cluster: "
                                     "each is posted to; delivered when one accepts."),
        ]
        timeout: Annotated[Duration, msgspec.Meta(description="Connect and read timeout of each request.")] = Duration(10)
        headers: Annotated[
            dict[str, str], msgspec.Meta(description="Extra HTTP headers (their values are treated as secrets).")
        ] = {}
        basic_auth: Annotated[
            BasicAuth | None, msgspec.Meta(description="{username, password} for HTTP basic auth.")
        ] = None
        bearer_token: Annotated[
            str | None, msgspec.Meta(description="Sent as `Authorization: Bearer TOKEN`.")
        ] = None
        resend_interval: Annotated[
            Duration, msgspec.Meta(description="A firing alert is posted again this often (Prometheus: 1m).")
        ] = Duration(60)
        ttl: Annotated[
            Duration,
            msgspec.Meta(description="endsAt of a firing alert is the time it is posted plus this: it must exceed "
                                     "the time between runs of the checks sending here; at least 2 x resend_interval."),
        ] = Duration(600)
        generator_url: Annotated[
            str,
            msgspec.Meta(description="generatorURL of each alert (a link back to its source); {host}, {play}, "
                                     "{check} and {alertname} are filled in. Empty: none sent."),
        ] = ""
        labels: Annotated[
            dict[str, str],
            msgspec.Meta(description="Labels added to every alert (an alert's own labels win), e.g. {source: ce-agent}."),
        ] = {}
        ca_file: Annotated[
            str | None, msgspec.Meta(description="CA certificates (PEM) to verify an https URL with.")
        ] = None

        def __post_init__(self) -> None:
            urls = [self.url] if isinstance(self.url, str) else self.url
            if not urls:
                raise ValueError("url: give at least one Alertmanager URL")
            for url in urls:
                problem = _url_problem(url)
                if problem:
                    raise ValueError(f"url: {problem}")
            if not self.timeout > 0:
                raise ValueError("timeout: must be more than 0s")
            if self.ca_file is not None and not os.path.isfile(self.ca_file):
                raise ValueError(f"ca_file: no such file: {self.ca_file}")
            if not self.resend_interval >= 1:
                raise ValueError("resend_interval: must be at least 1s")
            if not self.ttl >= 2 * self.resend_interval:
                raise ValueError("ttl: must be at least twice resend_interval, or an alert can end in "
                                 "Alertmanager between two re-sends")
            for name, value in self.headers.items():
                if not _HEADER_NAME.match(name):
                    raise ValueError(f"headers: {name!r} is not an HTTP header name")
                if "\r" in value or "\n" in value:  # never quote the value: headers hold credentials
                    raise ValueError(f"headers: the value of {name!r} has a line break")
            if self.basic_auth is not None and self.bearer_token is not None:
                raise ValueError("basic_auth: give basic_auth or bearer_token, not both")
            if (self.basic_auth is not None or self.bearer_token is not None) and any(
                    name.lower() == "authorization" for name in self.headers):
                raise ValueError("headers: an Authorization header and basic_auth/bearer_token: give one of them")
            for name in self.labels:
                if not _LABEL_NAME.match(name):
                    raise ValueError(f"labels: {name!r} is not a label name (letters, digits and _, not first a digit)")
            try:
                self.generator_url.format_map(_Fields({}))
            except (ValueError, IndexError, AttributeError, KeyError) as exc:
                raise ValueError(f"generator_url: {exc}") from None

    EXAMPLES = """\
# In the inventory's channels; a check (or a route) then names it: notify: [am]
all:
  vars:
    channels:
      am:
        alertmanager:
          url: http://alertmanager.example.com:9093
      am-ha:                      # an HA cluster: every member is posted to
        alertmanager:
          url: [http://am1.example.com:9093, http://am2.example.com:9093]
          basic_auth: {username: ce-agent, password: "{{ env.AM_PASSWORD }}"}
          labels: {source: ce-agent, datacenter: eu-1}
          generator_url: "https://status.example.com/hosts/{host}#{check}"
          resend_interval: 1m
          ttl: 10m                # longer than the time between two runs of the checks
"""

    def __init__(self, options: Any, context: TaskContext) -> None:
        super().__init__(options, context)
        self.redactor = Redactor(self.secrets(options))
        for url in members(options):
            self.redactor.add_url(url)  # a token in a query (?api_key=...) is a secret too

    @classmethod
    def secrets(cls, options: Any) -> list[str]:
        """What must never be printed: the password, the token, every header value, URL credentials."""
        out = [value for value in options.headers.values()]
        if options.basic_auth is not None:
            out.append(options.basic_auth.password)
        if options.bearer_token is not None:
            out.append(options.bearer_token)
        return [s for s in out if s]

    @classmethod
    def resend_interval(cls, options: Any) -> float | None:
        return float(options.resend_interval)

    def send(self, notification: Notification) -> None:
        now = time.time()
        alerts = postable_alerts(notification, self.options, now)
        if not alerts:
            return  # only flapping news: Alertmanager has nothing to learn from it
        body = json.dumps(alerts).encode()
        urls = members(self.options)
        outcomes = post_all(urls, body, self._headers(), float(self.options.timeout),
                            self.options.ca_file)
        failures = [(url, error) for url, error in zip(urls, outcomes) if error is not None]
        if len(failures) < len(outcomes):
            # One member is enough: each one that took the alerts notifies, the cluster's gossip (of
            # notifications sent, not of alerts) keeps the others from notifying twice, and a member
            # that missed this gets the alert with the next re-send.
            for url, error in failures:
                log.warning("alertmanager %s did not take the alerts of %s: %s", self._shown(url),
                            notification.channel, self.redactor.scrub(str(error)))
            return
        reasons = "; ".join(f"{self._shown(url)}: {error}" for url, error in failures)
        raise DeliveryError(self.redactor.scrub(reasons), transient=any(e.transient for _, e in failures))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": _user_agent(), **self.options.headers}
        if self.options.basic_auth is not None:
            import base64

            pair = f"{self.options.basic_auth.username}:{self.options.basic_auth.password}".encode()
            token = base64.b64encode(pair).decode()
            self.redactor.add(token)
            headers["Authorization"] = f"Basic {token}"
        elif self.options.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.options.bearer_token}"
        return headers

    def _shown(self, url: str) -> str:
        return self.redactor.scrub(self.redactor.privacy_url(url))


# ---- what is posted (pure) ---------------------------------------------------------------------------


def postable_alerts(notification: Notification, options: Any, now: float) -> list[dict[str, Any]]:
    """The JSON list of Alertmanager's postableAlert for one notification, as of `now` (posting time).

    Labels are the alert's (alertname being the rule's name, or the check's for a check alert) over
    the channel's `labels`; a firing alert ends `ttl` after now unless re-sent, a resolved one at the time
    it resolved; startsAt is when it started firing, the same in every re-send."""
    records = notification.alerts or [_record_of(notification, now)]
    out = []
    for record in records:
        kind = str(record.get("kind") or "firing")
        if kind in _NOT_POSTED:
            continue
        labels = alert_labels(record.get("labels") or {}, options.labels)
        if kind == "test":
            ends = now + TEST_TTL
        elif kind == "resolved":
            ends = _number(record.get("ends_at"), now)
        else:
            ends = now + float(options.ttl)
        starts = min(_number(record.get("starts_at"), now), ends)
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {str(k): str(v) for k, v in (record.get("annotations") or {}).items() if str(v)},
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(ends),
        }
        link = generator_url(options.generator_url, labels)
        if link:
            alert["generatorURL"] = link
        out.append(alert)
        replaced = record.get("replaces")
        if replaced and kind != "resolved":
            old = alert_labels(replaced, options.labels)
            if old != labels:  # the alert under the labels it had (another severity) ends now
                out.append({**alert, "labels": old, "endsAt": rfc3339(max(now, starts))})
    return out


def alert_labels(labels: Mapping[str, Any], extra: Mapping[str, str]) -> dict[str, str]:
    """An alert's labels as Alertmanager keys it: `alertname` (the check's name for a check alert),
    names made valid (other characters become `_`), empty values left out as Alertmanager does."""
    out: dict[str, str] = {}
    for name, value in {**extra, **labels}.items():
        text = str(value)
        if text:
            out[label_name(str(name))] = text
    if "alertname" not in out:
        out["alertname"] = out.get("check") or "ce_agent"
    return out


def label_name(name: str) -> str:
    fixed = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return fixed if fixed and not fixed[0].isdigit() else f"_{fixed}"


def generator_url(template: str, labels: Mapping[str, str]) -> str:
    """The generator_url option with {host}, {play}, {check}, {alertname} (any label) filled in, quoted."""
    if not template:
        return ""
    return template.format_map(_Fields({k: quote(v, safe="") for k, v in labels.items()}))


class _Fields(dict):  # type: ignore[type-arg]
    """str.format_map's mapping: a label the alert does not have is empty, not an error."""

    def __missing__(self, key: str) -> str:
        return ""


def _record_of(notification: Notification, now: float) -> dict[str, Any]:
    """An alert made from a notification without per-alert entries: `notify test`, or one queued by a
    version before them (then startsAt is unknown: Alertmanager keeps the one it has)."""
    labels = dict(notification.labels)
    if notification.kind == "test":
        labels = {"alertname": "CeAgentTestNotification", "host": notification.host, "severity": "none"}
    summary = notification.summary or notification.title
    return {"kind": notification.kind, "labels": labels, "starts_at": now if notification.kind == "test" else None,
            "ends_at": now if notification.kind == "resolved" else None,
            "annotations": {"summary": summary, "description": notification.body or notification.title}}


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- how it is posted ---------------------------------------------------------------------------------


def _url_problem(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "not a URL (expected http://HOST:PORT)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL with a host (http://HOST:9093)"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not sent: use basic_auth"
    if parts.query or parts.fragment:  # the API path goes after the URL's path: a query would swallow it
        return "a query (?...) or fragment (#...) has no place in an Alertmanager URL: use headers for a token"
    return ""


def members(options: Any) -> list[str]:
    """The channel's Alertmanagers. Not an option named `urls`: the outbox delivers each of a channel's
    `urls` on its own, but the members of an HA cluster are one receiver (see `send`)."""
    return [options.url] if isinstance(options.url, str) else list(options.url)


def endpoint(url: str) -> str:
    """The alerts endpoint below a base URL (a URL that already names it is kept)."""
    base = url.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


def post_all(urls: Sequence[str], body: bytes, headers: Mapping[str, str], timeout: float,
             ca_file: str | None = None) -> list[DeliveryError | None]:
    """POST to every URL at once (a member that hangs must not delay the others); each one's error or None.

    A member that has not answered within the timeout (and a second of grace) is counted as failed."""
    results: list[DeliveryError | None] = [DeliveryError("no answer", transient=True)] * len(urls)

    def one(index: int, url: str) -> None:
        try:
            post(url, body, headers, timeout, ca_file)
            results[index] = None
        except DeliveryError as exc:
            results[index] = exc
        except Exception as exc:  # noqa: BLE001 - whatever it was, that member did not take the alerts
            results[index] = DeliveryError(f"{type(exc).__name__}: {exc}", transient=True)

    if len(urls) == 1:
        one(0, urls[0])
        return results
    threads = [threading.Thread(target=one, args=(i, url), name=f"alertmanager-{i}", daemon=True)
               for i, url in enumerate(urls)]
    deadline = time.monotonic() + timeout + 1
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [results[i] if not t.is_alive() else DeliveryError(f"no answer within {timeout:g}s", transient=True)
            for i, t in enumerate(threads)]


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float, ca_file: str | None = None) -> None:
    """One POST to one Alertmanager; DeliveryError says why it did not take the alerts (no secrets in it:
    neither the headers nor the URL's credentials are ever quoted)."""
    import http.client

    target = urlsplit(endpoint(url))
    path = target.path + (f"?{target.query}" if target.query else "")
    connection: http.client.HTTPConnection
    if target.scheme == "https":
        import ssl

        context = ssl.create_default_context(cafile=ca_file)
        connection = http.client.HTTPSConnection(target.hostname or "", target.port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=dict(headers))
        response = connection.getresponse()
        answer = response.read(64 * 1024)
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout:g}s", transient=True) from None
    except OSError as exc:  # refused, reset, unreachable, TLS: the member may be back soon
        raise DeliveryError(f"cannot connect: {exc.strerror or exc}", transient=True) from None
    except http.client.HTTPException as exc:
        raise DeliveryError(f"bad answer: {type(exc).__name__}", transient=True) from None
    finally:
        connection.close()
    status = response.status
    if 200 <= status < 300:
        return
    reason = _reason(answer)
    text = f"HTTP {status} {response.reason}".rstrip() + (f": {reason}" if reason else "")
    if 400 <= status < 500 and status not in _TRANSIENT_4XX:
        raise DeliveryError(f"refused: {text}", transient=False)
    raise DeliveryError(text, transient=status >= 500 or status in _TRANSIENT_4XX)


def _reason(answer: bytes) -> str:
    """Alertmanager's error, as it writes it (a JSON string), shortened to one line."""
    text = answer.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(text)
        if isinstance(decoded, str):
            text = decoded
        elif isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
            text = decoded["message"]
    except ValueError:
        pass
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def _user_agent() -> str:
    from ce_agent import __version__

    return f"ce-agent/{__version__}"
