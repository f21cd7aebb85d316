"""The `apprise` notifier: one message to one or more Apprise URLs (e-mail, webhooks, chat, paging)."""

from __future__ import annotations

import logging
import re
import threading
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import msgspec

from ce_agent.contracts import DeliveryError, Notification, Notifier, Status, TaskContext
from ce_agent.options import Duration
from ce_agent.redact import RedactingFilter, Redactor

_NOTIFY_TYPES = {Status.OK: "success", Status.WARNING: "warning", Status.CRITICAL: "failure", Status.UNKNOWN: "info"}
#: how many of Apprise's log lines to quote when a delivery fails
_REASON_LINES = 3
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
#: the logger Apprise writes its reasons to
_APPRISE_LOGGER = "apprise"
#: loggers whose lines can show a URL path (where webhook tokens live): scrubbed while sending
_SCRUBBED_LOGGERS = (_APPRISE_LOGGER, "urllib3.connectionpool")


class AppriseNotifier(Notifier):
    """Send to one or more Apprise URLs: e-mail, webhooks, Slack, Discord, Telegram, ntfy, PagerDuty, ..."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        urls: Annotated[
            list[str],
            msgspec.Meta(min_length=1, description="One or more Apprise URLs; every one must accept the message."),
        ]
        timeout: Annotated[
            Duration,
            msgspec.Meta(description="Connect and read timeout of each request (unless a URL sets cto/rto)."),
        ] = Duration(10)
        format: Annotated[
            Literal["text", "markdown", "html"], msgspec.Meta(description="How the body is written.")
        ] = "text"

    EXAMPLES = """\
# In the inventory: a channel that is an Apprise URL, or a list of them, uses this notifier
all:
  vars:
    channels:
      ops-mail: "mailtos://alerts:{{ env.SMTP_PASSWORD | urlquote }}@smtp.example.com?to=ops@example.com"
      chat: ["slack://T000/B000/XXXX", "json://127.0.0.1:8080/alerts"]
      # the mapping form sets the other options
      pager:
        apprise:
          urls: ["ntfys://ntfy.example.com/ops-alerts"]
          timeout: 5s
          format: markdown
# In a playbook, a check names its channels: notify: [ops-mail, chat]
"""

    def __init__(self, options: Any, context: TaskContext) -> None:
        super().__init__(options, context)
        self.redactor = Redactor()
        for url in options.urls:
            self.redactor.add_url(url)

    @classmethod
    def config_problems(cls, options: Any) -> list[str]:
        """What `ce-agent validate` reports about a channel: each URL Apprise cannot use, and why.

        Only builds Apprise's service objects from the URLs: nothing is sent, no network is used.
        Messages show a URL as `SCHEME://****` and Apprise's reasons scrubbed of the URLs' secrets.
        """
        import apprise

        redactor = Redactor()
        for url in options.urls:
            redactor.add_url(url)
        asset = _asset(apprise, options.timeout, hasattr(apprise, "AppriseResult"))
        problems = []
        with _Scrubbing(redactor):
            for index, url in enumerate(options.urls):
                with _ThreadLog(_APPRISE_LOGGER) as log:
                    plugin = apprise.Apprise.instantiate(url, asset=asset)
                if plugin is not None:
                    continue
                # lines quoting the URL only repeat it (with more of it than we show): kept out
                reason = _reason_text(redactor, [line for line in log.lines if not _URL_IN_TEXT.search(line)])
                where = f"urls[{index}]: " if len(options.urls) > 1 else ""
                problems.append(f"{where}not a URL Apprise knows: {redactor.scheme_only(url)}{reason}")
        return problems

    def send(self, notification: Notification) -> None:
        # Imported here: Apprise costs ~0.3 s and 30 MB, which a run with nothing to send must not pay.
        import apprise

        with _Scrubbing(self.redactor):
            self._send(apprise, notification)

    def _send(self, apprise: Any, notification: Notification) -> None:
        opts = self.options
        asset = _asset(apprise, opts.timeout, hasattr(apprise, "AppriseResult"))
        sender = apprise.Apprise(asset=asset)
        # Apprise's privacy form of each service -> the URL as the user wrote it, in our privacy form
        names: dict[str, str] = {}
        for url in opts.urls:
            with _ThreadLog(_APPRISE_LOGGER) as log:
                plugin = apprise.Apprise.instantiate(url, asset=asset)
            if plugin is None or not sender.add(plugin):
                name = plugin.url(privacy=True) if plugin is not None else self.redactor.scheme_only(url)
                raise DeliveryError(
                    f"invalid Apprise URL {self.redactor.scrub(name)}{self._reason(log.lines)}", transient=False
                )
            # Apprise may have decoded a secret our URL rules did not see as one.
            self.redactor.add(getattr(plugin, "password", None))
            self._apply_timeout(plugin, url)
            names[plugin.url(privacy=True)] = self.redactor.privacy_url(url)

        kwargs = {
            "body": notification.body or notification.title,
            "title": notification.title,
            "notify_type": _NOTIFY_TYPES[notification.status],
            "body_format": opts.format,
        }
        if hasattr(apprise, "AppriseResult"):
            # Apprise 2 keeps each call's log lines on its result: nothing shared between threads.
            result = sender.notify(**kwargs)
            lines = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
            failed = [names.get(r.url, self.redactor.scrub(r.url)) for r in result if not r]
        else:
            with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
                result = sender.notify(**kwargs)
            lines = [line for line in captured.getvalue().splitlines() if line.strip()]
            failed = []
        if not result:
            where = ", ".join(failed or names.values())
            # Apprise tells the HTTP status only in its log line ("... error=400."): a refusal (4xx but
            # timeouts and rate limits) will not change on a retry, anything else might
            codes = {int(c) for line in lines for c in re.findall(r"error=(\d{3})\b", line)}
            refused = bool(codes) and all(400 <= c < 500 and c not in (408, 425, 429) for c in codes)
            raise DeliveryError(f"delivery to {where} failed{self._reason(lines)}", transient=not refused)

    def _reason(self, lines: list[str]) -> str:
        return _reason_text(self.redactor, lines)

    def _apply_timeout(self, plugin: Any, url: str) -> None:
        query = parse_qs(url.partition("?")[2].lower())
        seconds = float(self.options.timeout)
        # The URL's own cto/rto win: someone wrote them for that endpoint on purpose.
        if "cto" not in query:
            plugin.socket_connect_timeout = seconds
        if "rto" not in query:
            plugin.socket_read_timeout = seconds


def _reason_text(redactor: Redactor, lines: list[str]) -> str:
    """": reason; reason" from Apprise's last log lines, safe to print ("" when there are none)."""
    # Apprise quotes URLs in its own masked form, which keeps a password's first and last letter.
    lines = [_URL_IN_TEXT.sub(lambda m: redactor.privacy_url(m.group(0)), line) for line in lines]
    reason = "; ".join(redactor.scrub(line.strip()) for line in lines[-_REASON_LINES:] if line.strip())
    return f": {reason}" if reason else ""


class _Scrubbing:
    """While active, the redactor's secrets are scrubbed from what Apprise (and urllib3) log."""

    def __init__(self, redactor: Redactor) -> None:
        self._filter = RedactingFilter(redactor)
        self._loggers = [logging.getLogger(name) for name in _SCRUBBED_LOGGERS]

    def __enter__(self) -> _Scrubbing:
        # Apprise masks passwords in its logs, but its debug lines (and urllib3's) show URL paths.
        for logger in self._loggers:
            logger.addFilter(self._filter)
        return self

    def __exit__(self, *_: object) -> None:
        for logger in self._loggers:
            logger.removeFilter(self._filter)


class _ThreadLog(logging.Handler):
    """Apprise's warnings logged by this thread inside the `with` block (other threads' stay out)."""

    def __init__(self, logger_name: str) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self._logger = logging.getLogger(logger_name)
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.lines.append(record.getMessage())

    def __enter__(self) -> _ThreadLog:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        self._logger.removeHandler(self)


def _asset(apprise: Any, timeout: float, v2: bool) -> Any:
    # Memory storage: no persistent-store files under anyone's home; no plugin paths scanned.
    settings: dict[str, Any] = {"storage_mode": "memory", "plugin_paths": []}
    if v2:
        # Apprise 2 also bounds a whole service call (retries included): room for connect + read.
        settings["service_timeout"] = 2 * timeout + 1
    return apprise.AppriseAsset(**settings)
