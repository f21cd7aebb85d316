"""The `tls_cert` check: days until a server's TLS certificate expires, and whether it is trusted."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from typing import Annotated

import msgspec

from ce_agent.checks._net import describe_connect_error, host_port, remaining
from ce_agent.contracts import Check, Metric, Result, Status


class TlsCertCheck(Check):
    """Days until the TLS certificate of a server expires; an untrusted certificate is CRITICAL."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        host: Annotated[
            str | None, msgspec.Meta(description="The host to connect to; default: the host's address.")
        ] = None
        port: Annotated[int, msgspec.Meta(ge=1, le=65535, description="The TLS port.")] = 443
        server_name: Annotated[
            str | None,
            msgspec.Meta(description="The name sent as SNI and checked against the certificate; default: host."),
        ] = None
        warning_days: Annotated[
            int, msgspec.Meta(description="WARNING when the certificate expires in fewer days than this.")
        ] = 30
        critical_days: Annotated[
            int, msgspec.Meta(description="CRITICAL when the certificate expires in fewer days than this.")
        ] = 7
        verify: Annotated[
            bool,
            msgspec.Meta(
                description="CRITICAL when the certificate is not trusted or not for server_name;"
                " false: only read its expiry."
            ),
        ] = True
        ca_file: Annotated[
            str | None,
            msgspec.Meta(description="A PEM file of the CA certificates to trust instead of the system's."),
        ] = None

    EXAMPLES = """\
- name: Web certificate
  tls_cert: {host: example.org, warning_days: 21, critical_days: 7}
- name: Internal LDAP, private CA
  tls_cert: {port: 636, server_name: ldap.internal, ca_file: /etc/ssl/internal-ca.pem}
"""

    def run(self) -> Result:
        opts = self.options
        host = opts.host or self.context.address
        name = opts.server_name or host
        target = host_port(host, opts.port)
        timeout = self.context.timeout
        deadline = time.monotonic() + timeout
        untrusted = ""
        der = b""
        try:
            if opts.verify:
                try:
                    der = self._peer_certificate(host, name, self._verifying_context(), deadline)
                except ssl.SSLCertVerificationError as exc:
                    # still read the expiry (unverified) so the summary and the metric say when it ends
                    untrusted = str(exc.verify_message or exc.reason or exc)
            if not der:
                der = self._peer_certificate(host, name, _unverified_context(), deadline)
        except ssl.SSLError as exc:
            return Result(Status.CRITICAL, f"{target}: TLS handshake failed ({exc.reason or exc})")
        except OSError as exc:
            return Result(Status.CRITICAL, f"{target}: {describe_connect_error(exc, timeout)}")
        if not der:
            return Result(Status.CRITICAL, f"{target}: the server sent no certificate")

        not_after = certificate_not_after(der)
        seconds_left = (not_after - dt.datetime.now(dt.timezone.utc)).total_seconds()
        days = seconds_left / 86400
        if days < opts.critical_days:
            status = Status.CRITICAL
        elif days < opts.warning_days:
            status = Status.WARNING
        else:
            status = Status.OK
        date = not_after.date().isoformat()
        when = f"expires in {_span(seconds_left)}" if seconds_left >= 0 else f"expired {_span(-seconds_left)} ago"
        summary = f"certificate for {name} {when} ({date})"
        if untrusted:
            status = Status.CRITICAL
            summary = f"certificate for {name} is not trusted: {untrusted}; it {when} ({date})"
        labels = {"host": host, "port": str(opts.port), "server_name": name}
        metric = Metric(
            "tls_cert_expiry_days", days, "", labels, f"{opts.warning_days}:", f"{opts.critical_days}:"
        )
        return Result(status, summary, [metric])

    def _verifying_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.options.ca_file)
        except (OSError, ssl.SSLError) as exc:
            # a configuration problem, not the server's: reported as such rather than as a handshake error
            raise ValueError(f"cannot load ca_file {self.options.ca_file!r}: {exc}") from None

    def _peer_certificate(self, host: str, name: str, context: ssl.SSLContext, deadline: float) -> bytes:
        """The server's certificate in DER, after a handshake bounded by the deadline."""
        with socket.create_connection((host, self.options.port), timeout=remaining(deadline)) as raw:
            raw.settimeout(remaining(deadline))
            with context.wrap_socket(raw, server_hostname=name or None) as tls:
                return tls.getpeercert(binary_form=True) or b""


def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _span(seconds: float) -> str:
    """`42 days`, `1 day`, `5 hours`, `3 minutes`: the largest whole unit, rounded down."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size or unit == "minute":
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    raise AssertionError("unreachable")


# --- the validity of an X.509 certificate, read from its DER encoding -------------------------------
# With CERT_NONE, getpeercert() returns {} and only the DER bytes are available; the stdlib has no
# public DER decoder, so this reads just enough ASN.1 (RFC 5280 section 4.1) to reach notAfter.

_SEQUENCE, _INTEGER, _VERSION_TAG, _UTC_TIME, _GENERALIZED_TIME = 0x30, 0x02, 0xA0, 0x17, 0x18


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the content) of the DER element at `pos`."""
    if pos + 2 > len(der):
        raise ValueError("truncated certificate")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4 or pos + size > len(der):
            raise ValueError("unsupported length in certificate")
        length = int.from_bytes(der[pos : pos + size], "big")
        pos += size
    if pos + length > len(der):
        raise ValueError("truncated certificate")
    return tag, pos, pos + length


def _expect(der: bytes, pos: int, tag: int, what: str) -> tuple[int, int]:
    found, start, end = _element(der, pos)
    if found != tag:
        raise ValueError(f"not an X.509 certificate: expected {what} (tag {tag:#x}), found tag {found:#x}")
    return start, end


def certificate_validity(der: bytes) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, notAfter) of a DER-encoded X.509 certificate, as aware UTC datetimes."""
    cert_start, _ = _expect(der, 0, _SEQUENCE, "Certificate")
    pos, _ = _expect(der, cert_start, _SEQUENCE, "TBSCertificate")
    tag, _, end = _element(der, pos)
    if tag == _VERSION_TAG:  # [0] EXPLICIT version, absent for v1 certificates
        pos = end
    _, pos = _expect(der, pos, _INTEGER, "serialNumber")
    _, pos = _expect(der, pos, _SEQUENCE, "signature AlgorithmIdentifier")
    _, pos = _expect(der, pos, _SEQUENCE, "issuer Name")
    validity, _ = _expect(der, pos, _SEQUENCE, "Validity")
    not_before, after_pos = _time(der, validity)
    not_after, _ = _time(der, after_pos)
    return not_before, not_after


def certificate_not_after(der: bytes) -> dt.datetime:
    """notAfter of a DER-encoded X.509 certificate, as an aware UTC datetime."""
    return certificate_validity(der)[1]


def _time(der: bytes, pos: int) -> tuple[dt.datetime, int]:
    tag, start, end = _element(der, pos)
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME:
        # RFC 5280: YYMMDDHHMMSSZ, years 50-99 are 19xx
        value = dt.datetime.strptime(text, "%y%m%d%H%M%SZ")
        if value.year >= 2050:
            value = value.replace(year=value.year - 100)
    elif tag == _GENERALIZED_TIME:
        value = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"not an X.509 time (tag {tag:#x})")
    return value.replace(tzinfo=dt.timezone.utc), end
