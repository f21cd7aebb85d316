"""Secrets out of text: collect them from channel URLs, scrub them, and print URLs in a privacy form."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_plus


MASK = "****"

#: query keys whose value is a credential whatever it looks like (matched as substrings, lowercased)
_SECRET_KEY_PARTS = ("pass", "pwd", "token", "key", "secret", "webhook", "auth", "sig", "credential", "hash")
#: query keys of Apprise URLs that never hold a credential: their values stay readable
_PLAIN_KEYS = frozenset(
    {
        "to", "cc", "bcc", "from", "name", "reply", "user", "mode", "format", "overflow", "cto", "rto",
        "verify", "image", "avatar", "priority", "method", "lang", "tz", "footer", "smtp", "port",
        "emojis", "store", "interpret", "discovery", "batch", "color", "tags", "tag", "click",
    }
)
#: schemes whose URL is a plain web address: only values that look random are treated as tokens there
_WEB_SCHEMES = frozenset({"http", "https"})
#: below this length a path segment or query value of an Apprise URL is taken to be a name, not a token
_TOKEN_MIN = 8
#: in http(s) URLs a path segment or query value must be this long, with letters and digits, to be a
#: token; elsewhere a user name this long is taken for a key (pagerduty://INTEGRATIONKEY@APIKEY)
_WEB_TOKEN_MIN = 16
#: env/file values shorter than this are taken for settings (`prod`, `eu-1`), not secrets
_LOOKUP_MIN = 6
#: secrets shorter than this are masked only where not part of a longer word
_SHORT = 4

_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_EMAIL = re.compile(r"^[^@\s/]+@[^@\s/]+\.[^@\s/]+$")
_HOSTNAME = re.compile(r"^(localhost|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\.?)$")


@dataclass(frozen=True, slots=True)
class _Parts:
    """A URL cut the way Apprise URLs are written: scheme://user:password@host:port/path?query."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    path: list[str]
    query: list[tuple[str, str | None]]


def _split(url: str) -> _Parts | None:
    match = _SCHEME.match(url)
    if match is None:
        return None
    scheme, rest = match.group(1).lower(), match.group(2)
    # No fragment handling: Apprise paths legitimately hold '#' (Slack channels).
    rest, _, query_text = rest.partition("?")
    # User-info ends at the last '@' of the authority, so a mailto path may still hold '@'.
    netloc, _, path_text = rest.partition("/")
    userinfo: str | None = None
    before, at, after = netloc.rpartition("@")
    if at:
        userinfo, netloc = before, after
    user: str | None = None
    password: str | None = None
    if userinfo is not None:
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    query = []
    for item in query_text.split("&") if query_text else []:
        key, eq, value = item.partition("=")
        query.append((key, value if eq else None))
    return _Parts(scheme, user or None, password, netloc, path_text.split("/") if path_text else [], query)


def _host_only(netloc: str) -> str:
    if netloc.startswith("["):
        return netloc.split("]", 1)[0] + "]"
    host, _, port = netloc.rpartition(":")
    return host if host and port.isdigit() else netloc


def _looks_random(text: str) -> bool:
    value = unquote(text)
    return (
        len(value) >= _WEB_TOKEN_MIN
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def _is_secret_key(key: str) -> bool:
    name = key.lower().lstrip("+-:")
    return any(part in name for part in _SECRET_KEY_PARTS)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """Which parts of one URL are secret."""

    password: bool
    user: bool
    host: bool
    path: list[bool]
    query: list[bool]


def _judge(parts: _Parts) -> _Verdict:
    web = parts.scheme in _WEB_SCHEMES

    def tokenish(value: str) -> bool:
        # Addresses, Slack/Discord #channels and @users name a target; they open nothing.
        if not value or value[0] in "#@" or unquote(value)[0] in "#@" or _EMAIL.match(unquote(value)):
            return False
        return _looks_random(value) if web else len(unquote(value)) >= _TOKEN_MIN

    host = _host_only(parts.host)
    # In Apprise URLs the "host" is often a credential (tgram://BOTTOKEN/, discord://ID/TOKEN).
    host_secret = not web and not _HOSTNAME.match(host) and len(host) >= _TOKEN_MIN
    query = []
    for key, value in parts.query:
        if value is None or value == "":
            query.append(False)
        elif _is_secret_key(key):
            query.append(True)
        elif key.lower().lstrip("+-:") in _PLAIN_KEYS:
            query.append(False)
        else:
            query.append(tokenish(value))
    # Some services put a key where the user goes (pagerduty://INTEGRATIONKEY@APIKEY): a long one, or
    # any user without a password beside it (then it is the credential itself).
    user_secret = not web and parts.user is not None and (
        len(unquote(parts.user)) >= _WEB_TOKEN_MIN or (not parts.password and len(unquote(parts.user)) >= _SHORT)
    )
    return _Verdict(bool(parts.password), user_secret, host_secret, [tokenish(s) for s in parts.path], query)


def url_credentials(url: str) -> list[str]:
    """What of an Apprise URL is a credential written out (`password`, `token in the path`, ...), by the
    rules of `Redactor.add_url`; [] for a URL that holds none, or is no URL.

    A user name alone is left out: masking it is cautious, but `mailto://alerts@example.com` opens nothing."""
    parts = _split(url)
    if parts is None:
        return []
    verdict = _judge(parts)
    found = ["password"] if verdict.password else []
    found += ["token in the host"] if verdict.host else []
    found += ["token in the path"] if any(verdict.path) else []
    found += ["token in the query"] if any(verdict.query) else []
    return found


def _variants(secret: str) -> set[str]:
    """The forms a secret takes in messages: as written, percent-decoded, and percent-encoded."""
    decoded = unquote(secret)
    return {s for s in (secret, decoded, unquote_plus(secret), quote(decoded, safe="")) if s}


def _alternative(secret: str) -> str:
    # A very short secret ("pw") is masked only where it stands alone, or every "pw" in
    # "password" would go too and the text would be unreadable; a long one is masked anywhere.
    if len(secret) < _SHORT:
        return rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])"
    return re.escape(secret)


class Redactor:
    """The secrets of some channels, and the means to keep them out of anything printed."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        # the pattern and the set it was built from, so a pattern never lags behind an add()
        self._compiled: tuple[frozenset[str], re.Pattern[str]] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Treat `secret` (in every encoding it may be printed in) as never printable."""
        if secret and secret.strip():
            # A new set, not an update in place: another thread may be scrubbing with the old one.
            self._secrets = self._secrets | _variants(secret)

    def add_lookup(self, value: str) -> None:
        """A value read by `{{ env.X }}` or `{{ file(P) }}`: a secret, unless it is short or a plain number.

        Values under 6 characters and numbers under 8 digits (ports, counts, names like `prod`) stay
        readable, or every `80` in a report would be masked. A URL is judged as a channel URL is
        (its password and tokens); every line of a multi-line value counts on its own; a value
        pasted into a URL unencoded is split at the URL's delimiters, so each long piece is masked."""
        text = value.strip()
        if len(text) < _LOOKUP_MIN or (text.isdigit() and len(text) < 8):
            return
        if _SCHEME.match(text) and "\n" not in text:
            self.add_url(text)
            return
        self.add(value)
        lines = [line.strip() for line in text.splitlines()]
        for line in lines:
            if line != text and len(line) >= _LOOKUP_MIN:
                self.add(line)
            # an unencoded password in a URL is cut at its delimiters by whoever parses the URL:
            # each piece, and what stands before and after each delimiter, is masked too
            cuts = [m.start() for m in re.finditer(r"[/?@:#&=]", line)]
            if len(line) < 8 or not cuts:
                continue
            pieces = re.split(r"[/?@:#&=]", line) + [line[:c] for c in cuts] + [line[c + 1 :] for c in cuts]
            for piece in pieces:
                if len(piece) >= _SHORT and not (piece.isdigit() and len(piece) < 8):
                    self.add(piece)

    def add_url(self, url: str) -> None:
        """Register the credentials of an Apprise (or plain) URL: password, tokens in host, path and query."""
        parts = _split(url)
        if parts is None:
            # Not a URL we understand: the whole of it is the only safe secret.
            self.add(url)
            return
        verdict = _judge(parts)
        if verdict.password:
            self.add(parts.password)
        if verdict.user:
            self.add(parts.user)
        if verdict.host:
            self.add(_host_only(parts.host))
            self.add(parts.host)
        for segment, secret in zip(parts.path, verdict.path):
            if secret:
                self.add(segment)
        for (_, value), secret in zip(parts.query, verdict.query):
            if secret:
                self.add(value)

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    def scrub(self, text: str) -> str:
        """`text` with every known secret replaced by ****, longest first."""
        secrets, compiled = self._secrets, self._compiled
        if not secrets or not text:
            return text
        if compiled is None or compiled[0] is not secrets:
            ordered = sorted(secrets, key=len, reverse=True)
            compiled = self._compiled = (secrets, re.compile("|".join(_alternative(s) for s in ordered)))
        return compiled[1].sub(MASK, text)

    def privacy_url(self, url: str) -> str:
        """A form of `url` safe to print (scheme://user:****@host/****), without importing Apprise.

        It judges the URL on its own (the rules of `add_url`), so it needs no prior `add_url`.
        """
        parts = _split(url)
        if parts is None:
            return MASK
        verdict = _judge(parts)
        out = f"{parts.scheme}://"
        if parts.user is not None or parts.password is not None:
            out += MASK if verdict.user else (parts.user or "")
            if parts.password is not None:
                out += f":{MASK}"
            out += "@"
        out += MASK if verdict.host else parts.host
        if parts.path:
            out += "/" + "/".join(MASK if s else seg for seg, s in zip(parts.path, verdict.path))
        if parts.query:
            items = []
            for (key, value), secret in zip(parts.query, verdict.query):
                items.append(key if value is None else f"{key}={MASK if secret else value}")
            out += "?" + "&".join(items)
        return out

    def scheme_only(self, url: str) -> str:
        """The least that can be said of a URL: `mailtos://****`, or `****` when there is no scheme."""
        parts = _split(url)
        return f"{parts.scheme}://{MASK}" if parts else MASK


class RedactingFilter(logging.Filter):
    """ce_agent.logs' ScrubFilter with a Redactor's secrets (message, arguments, exception text): on a
    handler it covers every logger behind it, on one logger (e.g. "apprise") what that logger emits.

    It imports ce_agent.logs on first use: logging.handlers has no place in a run's start-up."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._scrubbing: logging.Filter | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self._scrubbing is None:
            from ce_agent.logs import ScrubFilter

            self._scrubbing = ScrubFilter(self.redactor.scrub)
        return bool(self._scrubbing.filter(record))
