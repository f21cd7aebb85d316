"""The `tcp` check: connect to a port, optionally talk to it, and judge the connect time."""

from __future__ import annotations

import re
import socket
import time
from typing import Annotated

import msgspec

from ce_agent.checks._net import describe_connect_error, host_port, remaining
from ce_agent.contracts import Check, Metric, Result, Status
from ce_agent.durations import format_duration
from ce_agent.options import Threshold
from ce_agent.thresholds import evaluate, optional_range

#: how much of the reply is searched for `expect`: banners and short answers, not whole documents
EXPECT_LIMIT = 64 * 1024


def reply_matches(expect: str, received: str) -> bool:
    """True when `expect` occurs literally in `received` or, read as a regular expression, matches it."""
    if expect in received:
        return True
    try:
        return re.search(expect, received) is not None
    except re.error:
        # "+PONG" and the like are literal strings, not broken regexes
        return False


class TcpCheck(Check):
    """Connect to a TCP port (optionally send a string and expect a reply); judge the connect time."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        host: Annotated[
            str | None, msgspec.Meta(description="The host to connect to; default: the host's address.")
        ] = None
        port: Annotated[int, msgspec.Meta(ge=1, le=65535, description="The TCP port.")]
        send: Annotated[str | None, msgspec.Meta(description="A string to send once connected (UTF-8).")] = None
        expect: Annotated[
            str | None,
            msgspec.Meta(
                description="CRITICAL unless the first bytes received contain this string"
                " (or match it as a regular expression)."
            ),
        ] = None
        warning: Annotated[
            Threshold | None, msgspec.Meta(description="WARNING when the connect time in seconds is above this.")
        ] = None
        critical: Annotated[
            Threshold | None, msgspec.Meta(description="CRITICAL when the connect time in seconds is above this.")
        ] = None

    EXAMPLES = """\
- name: SSH answers
  tcp: {port: 22, expect: "SSH-2.0", warning: 0.5, critical: 2}
- name: Redis is alive
  tcp: {host: 127.0.0.1, port: 6379, send: "PING\\r\\n", expect: "+PONG"}
"""

    def run(self) -> Result:
        opts = self.options
        host = opts.host or self.context.address
        timeout = self.context.timeout
        target = host_port(host, opts.port)
        labels = {"host": host, "port": str(opts.port)}
        started = time.monotonic()
        deadline = started + timeout
        try:
            sock = socket.create_connection((host, opts.port), timeout=timeout)
        except OSError as exc:
            return Result(Status.CRITICAL, f"{target}: {describe_connect_error(exc, timeout)}")
        connect_seconds = time.monotonic() - started
        warning, critical = optional_range(opts.warning), optional_range(opts.critical)
        metrics = [
            Metric(
                "tcp_connect_seconds",
                connect_seconds,
                "s",
                labels,
                None if warning is None else str(warning),
                None if critical is None else str(critical),
                min=0,
            )
        ]
        status = evaluate(connect_seconds, warning, critical)
        summary = f"{target} connected in {connect_seconds:.3f}s"
        with sock:
            try:
                if opts.send:
                    sock.settimeout(remaining(deadline))
                    sock.sendall(opts.send.encode())
                if opts.expect is not None:
                    problem, first_line = _read_expected(sock, opts.expect, deadline, timeout)
                    if problem:
                        return Result(Status.CRITICAL, f"{summary}, but {problem}", metrics)
                    summary += f", received {first_line!r}"
            except OSError as exc:
                return Result(Status.CRITICAL, f"{summary}, then {describe_connect_error(exc, timeout)}", metrics)
        return Result(status, summary, metrics)


def _read_expected(sock: socket.socket, expect: str, deadline: float, timeout: float) -> tuple[str, str]:
    """(problem or "", first line received) after reading until `expect` shows up, EOF or the deadline."""
    received = b""
    text = ""
    while len(received) < EXPECT_LIMIT:
        try:
            sock.settimeout(remaining(deadline))
            chunk = sock.recv(4096)
        except TimeoutError:
            return (
                f"timed out after {format_duration(timeout)} waiting for {expect!r}"
                f" (received {len(received)} bytes{_shown(text)})",
                "",
            )
        if not chunk:
            break
        received += chunk
        text = received.decode("utf-8", "replace")
        if reply_matches(expect, text):
            return "", _first_line(text)
    return f"{expect!r} not found in the {len(received)} bytes received{_shown(text)}", ""


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 60 else line[:57] + "..."


def _shown(text: str) -> str:
    return f": {_first_line(text)!r}" if text.strip() else ""
