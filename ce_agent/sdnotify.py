"""systemd's notify protocol (sd_notify): READY, STOPPING, RELOADING, STATUS and watchdog pings."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class SystemdNotifier:
    """Talks to the service manager through $NOTIFY_SOCKET; does nothing when not run by systemd.

    Messages are best effort: a manager that went away must not stop the agent."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        # An abstract socket is written `@name` in the environment and `\\0name` to the kernel.
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> SystemdNotifier:
        """From NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (the watchdog is ours only when
        WATCHDOG_PID is unset or our pid, as sd_watchdog_enabled() decides)."""
        address = environ.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        text = environ.get("WATCHDOG_USEC", "")
        owner = environ.get("WATCHDOG_PID", "")
        if text.isdigit() and int(text) > 0 and (not owner or owner == str(os.getpid() if pid is None else pid)):
            usec = int(text)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    @property
    def watchdog_interval(self) -> float | None:
        """How often to ping: half the watchdog timeout (systemd's advice), or None without one."""
        return self.watchdog_usec / 2e6 if self.enabled and self.watchdog_usec else None

    def send(self, *lines: str) -> bool:
        """Send `KEY=VALUE` lines in one datagram; True when the manager got it."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(lines).encode("utf-8"))
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (253+) match the reload with the READY=1 that ends it.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
