"""The `dns` check: resolve a name with the system resolver and compare the addresses it returns."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Annotated, Literal

import msgspec

from ce_agent.contracts import Check, Metric, Result, Status
from ce_agent.durations import format_duration

_FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
# getaddrinfo's "no such name (in this family)" codes; EAI_NODATA and EAI_ADDRFAMILY are not everywhere
_NOT_FOUND = frozenset(
    getattr(socket, code) for code in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, code)
)


class DnsCheck(Check):
    """Resolve a name through the system resolver (no `server` option) and check the addresses."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        name: Annotated[
            str,
            msgspec.Meta(
                description="The name to resolve, with the system resolver (/etc/hosts, then DNS, per"
                " nsswitch.conf): there is no `server` option."
            ),
        ]
        expect: Annotated[
            list[str] | str | None,
            msgspec.Meta(description="An address or a list of addresses that must all be among the answers."),
        ] = None
        family: Annotated[
            Literal["any", "ipv4", "ipv6"], msgspec.Meta(description="Which addresses to ask for.")
        ] = "any"

        def __post_init__(self) -> None:
            if not self.name.strip():
                raise ValueError("name: the name to resolve is empty")
            try:
                self.name.encode("idna")
            except UnicodeError:
                raise ValueError(f"name {self.name!r} is not a valid host name") from None
            if isinstance(self.expect, str):
                self.expect = [self.expect]
            for address in self.expect or []:
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    raise ValueError(f"expect: {address!r} is not an IP address") from None

    EXAMPLES = """\
- name: The database name resolves
  dns: {name: db.internal.example.org, expect: [10.0.0.5]}
- name: localhost has an IPv4 address
  dns: {name: localhost, family: ipv4, expect: 127.0.0.1}
"""

    def run(self) -> Result:
        opts = self.options
        timeout = self.context.timeout
        labels = {"name": opts.name}
        started = time.monotonic()
        answer = _resolve(opts.name, _FAMILIES[opts.family], timeout)
        elapsed = time.monotonic() - started
        if answer is None:
            return Result(Status.CRITICAL, f"{opts.name}: no answer, timed out after {format_duration(timeout)}")
        if isinstance(answer, BaseException):
            return Result(Status.CRITICAL, f"{opts.name}: {_reason(answer, opts.family)}")
        metrics = [Metric("dns_lookup_seconds", elapsed, "s", labels, min=0)]
        summary = f"{opts.name} resolves to {', '.join(answer)} in {elapsed:.3f}s"
        missing = [a for a in (opts.expect or []) if _canonical(a) not in answer]
        if missing:
            return Result(Status.CRITICAL, f"{summary}; expected {', '.join(missing)} is missing", metrics)
        return Result(Status.OK, summary, metrics)


def _resolve(name: str, family: int, timeout: float) -> list[str] | BaseException | None:
    """The distinct addresses of `name` in resolver order, the resolver's error, or None after `timeout`.

    getaddrinfo() cannot be interrupted, so it runs in a daemon thread that is abandoned (not
    joined) when the timeout passes: the check returns in time, the thread ends when the resolver does.
    """
    outcome: list[list[str] | BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
            outcome.append(list(dict.fromkeys(_canonical(str(info[4][0])) for info in infos)))
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome.append(exc)

    deadline = time.monotonic() + timeout
    worker = threading.Thread(target=lookup, name=f"dns lookup {name}", daemon=True)
    worker.start()
    worker.join(timeout)
    # an answer that came after the deadline is as late as none, even if join() was slow to notice
    return outcome[0] if outcome and time.monotonic() <= deadline else None


def _canonical(address: str) -> str:
    """One spelling per address (`::1`, not `0:0::1`), so that expectations compare equal."""
    return str(ipaddress.ip_address(address))


def _reason(exc: BaseException, family: str) -> str:
    if isinstance(exc, socket.gaierror):
        if exc.errno in _NOT_FOUND:
            what = "name" if family == "any" else f"{family} address"
            return f"{what} not found ({exc.strerror})"
        return f"lookup failed ({exc.strerror})"
    return f"lookup failed ({exc})"
