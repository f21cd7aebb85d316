"""The `tls_cert` check against TLS servers on 127.0.0.1 with certificates made by `openssl`."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from ce_agent.checks.tls_cert import TlsCertCheck, certificate_validity
from ce_agent.contracts import Check, Status, TaskContext
from ce_agent.options import convert_options
from tests.checks.netservers import CertificateAuthority, IssuedCert, refused_port, silent_port, tcp_server, tls_server

MakeCheck = Callable[..., Check]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def certs(ca: CertificateAuthority) -> dict[str, IssuedCert]:
    """Certificates for localhost and 127.0.0.1, by how long they have left."""
    return {
        "year": ca.issue("year", 365),
        "20 days": ca.issue("twenty", 20),
        "3 days": ca.issue("three", 3),
        "expired": ca.issue("expired", -1),  # its notAfter is a day before it was made
        "self-signed": ca.self_signed("selfsigned", 365),
    }


@pytest.fixture(scope="module")
def ports(certs: dict[str, IssuedCert]) -> Iterator[dict[str, int]]:
    with ExitStack() as stack:
        yield {label: stack.enter_context(tls_server(c.cert, c.key)) for label, c in certs.items()}


def expiry_date(ca: CertificateAuthority, issued: IssuedCert) -> str:
    """The expiry day as openssl itself reads the certificate."""
    seconds = ssl.cert_time_to_seconds(ca.not_after(issued.cert))
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).date().isoformat()


@pytest.mark.parametrize(
    ("cert", "options", "status", "summary", "days"),
    [
        pytest.param("year", {}, Status.OK, "certificate for 127.0.0.1 expires in 364 days ({date})", 365,
                     id="a year left"),
        pytest.param("20 days", {}, Status.WARNING, "certificate for 127.0.0.1 expires in 19 days ({date})", 20,
                     id="under 30 days is WARNING"),
        pytest.param("3 days", {}, Status.CRITICAL, "certificate for 127.0.0.1 expires in 2 days ({date})", 3,
                     id="under 7 days is CRITICAL"),
        pytest.param("year", {"warning_days": 400, "critical_days": 100}, Status.WARNING,
                     "certificate for 127.0.0.1 expires in 364 days ({date})", 365, id="custom thresholds"),
        pytest.param("20 days", {"warning_days": 10, "critical_days": 5}, Status.OK,
                     "certificate for 127.0.0.1 expires in 19 days ({date})", 20, id="custom thresholds, fine"),
        pytest.param("year", {"server_name": "localhost"}, Status.OK,
                     "certificate for localhost expires in 364 days ({date})", 365, id="server_name"),
        pytest.param("expired", {}, Status.CRITICAL,
                     "certificate for 127.0.0.1 is not trusted: certificate has expired;"
                     " it expired 1 day ago ({date})", -1, id="expired"),
        pytest.param("expired", {"verify": False}, Status.CRITICAL,
                     "certificate for 127.0.0.1 expired 1 day ago ({date})", -1, id="expired, unverified"),
        pytest.param("self-signed", {}, Status.CRITICAL,
                     "certificate for 127.0.0.1 is not trusted: self-signed certificate;"
                     " it expires in 364 days ({date})", 365, id="self-signed"),
        pytest.param("self-signed", {"verify": False}, Status.OK,
                     "certificate for 127.0.0.1 expires in 364 days ({date})", 365, id="self-signed, unverified"),
        pytest.param("year", {"server_name": "wrong.example"}, Status.CRITICAL,
                     "certificate for wrong.example is not trusted: Hostname mismatch, certificate is not valid"
                     " for 'wrong.example'.; it expires in 364 days ({date})", 365, id="not for that name"),
        pytest.param("year", {"server_name": "wrong.example", "verify": False}, Status.OK,
                     "certificate for wrong.example expires in 364 days ({date})", 365,
                     id="not for that name, unverified"),
        pytest.param("year", {"ca_file": None}, Status.CRITICAL,
                     "certificate for 127.0.0.1 is not trusted: unable to get local issuer certificate;"
                     " it expires in 364 days ({date})", 365, id="the system CAs do not know the test CA"),
    ],
)  # fmt: skip
def test_expiry_and_trust(
    make_check: MakeCheck,
    ca: CertificateAuthority,
    certs: dict[str, IssuedCert],
    ports: dict[str, int],
    cert: str,
    options: dict,
    status: Status,
    summary: str,
    days: float,
) -> None:
    raw = {"host": "127.0.0.1", "port": ports[cert], "ca_file": str(ca.cert), **options}
    result = make_check(TlsCertCheck, {k: v for k, v in raw.items() if v is not None}, timeout=5).run()
    assert (result.status, result.summary) == (status, summary.format(date=expiry_date(ca, certs[cert])))
    [metric] = result.metrics
    name = options.get("server_name", "127.0.0.1")
    assert (metric.name, dict(metric.labels)) == (
        "tls_cert_expiry_days",
        {"host": "127.0.0.1", "port": str(ports[cert]), "server_name": name},
    )
    assert metric.value == pytest.approx(days, abs=0.01)
    assert (metric.warn, metric.crit) == (
        f"{options.get('warning_days', 30)}:",
        f"{options.get('critical_days', 7)}:",
    )


def test_host_defaults_to_the_hosts_address(ca: CertificateAuthority, ports: dict[str, int]) -> None:
    options, errors = convert_options(TlsCertCheck.Options, {"port": ports["year"], "ca_file": str(ca.cert)})
    assert not errors
    context = TaskContext(task="t", host="web1", hostvars={"ansible_host": "127.0.0.1"}, timeout=5)
    result = TlsCertCheck(options, context).run()
    assert (result.status, result.metrics[0].labels["host"]) == (Status.OK, "127.0.0.1")


def test_no_tls_server(make_check: MakeCheck) -> None:
    with refused_port() as port:
        result = make_check(TlsCertCheck, {"host": "127.0.0.1", "port": port}, timeout=2).run()
    assert (result.status, result.summary, result.metrics) == (
        Status.CRITICAL,
        f"127.0.0.1:{port}: connection refused",
        [],
    )


def test_a_server_that_does_not_speak_tls(make_check: MakeCheck) -> None:
    with tcp_server(banner=b"220 mail.example ESMTP ready\r\n") as port:
        result = make_check(TlsCertCheck, {"host": "127.0.0.1", "port": port}, timeout=2).run()
    assert result.status == Status.CRITICAL
    assert result.summary.startswith(f"127.0.0.1:{port}: TLS handshake failed ("), result.summary


def test_a_handshake_that_never_ends_times_out(make_check: MakeCheck) -> None:
    with silent_port() as port:
        result = make_check(TlsCertCheck, {"host": "127.0.0.1", "port": port}, timeout=0.2).run()
    assert (result.status, result.summary) == (Status.CRITICAL, f"127.0.0.1:{port}: timed out after 0.2s")


def test_a_missing_ca_file_is_a_configuration_error(
    make_check: MakeCheck, ports: dict[str, int], tmp_path: Path
) -> None:
    check = make_check(TlsCertCheck, {"host": "127.0.0.1", "port": ports["year"], "ca_file": str(tmp_path / "no.pem")})
    # raised, not CRITICAL: the runner reports it as UNKNOWN, the server is not to blame
    with pytest.raises(ValueError, match="cannot load ca_file"):
        check.run()


# --- reading the validity from DER ---------------------------------------------------------------


@pytest.mark.parametrize(
    "days",
    [
        pytest.param(1, id="UTCTime, tomorrow"),
        pytest.param(-1, id="UTCTime, yesterday"),
        pytest.param(10000, id="GeneralizedTime, after 2049"),
    ],
)
def test_validity_read_from_der_agrees_with_openssl(ca: CertificateAuthority, days: int) -> None:
    issued = ca.issue(f"der{days}", days)
    not_before, not_after = certificate_validity(ca.der(issued.cert))
    assert not_after.timestamp() == ssl.cert_time_to_seconds(ca.not_after(issued.cert))
    assert (not_after - not_before) == dt.timedelta(days=days)
    assert not_after.tzinfo == dt.timezone.utc


def test_the_self_signed_ca_certificate_is_read_too(ca: CertificateAuthority) -> None:
    _, not_after = certificate_validity(ca.der(ca.cert))
    assert not_after.timestamp() == ssl.cert_time_to_seconds(ca.not_after(ca.cert))


@pytest.mark.parametrize(
    ("der", "error"),
    [
        pytest.param(b"", "truncated certificate", id="empty"),
        pytest.param(b"\x30\x05\x30\x03\x02\x01", "truncated certificate", id="truncated"),
        pytest.param(b"\x04\x02hi", "not an X.509 certificate", id="an OCTET STRING"),
        pytest.param(b"\x30\x84\xff\xff\xff\xff", "truncated certificate", id="absurd length"),
    ],
)
def test_garbage_is_refused(der: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        certificate_validity(der)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({"port": 0}, "option 'port'", id="port 0"),
        pytest.param({"warning_days": "soon"}, "option 'warning_days'", id="days are numbers"),
        pytest.param({"verify_tls": False}, "unknown option 'verify_tls'", id="the option is verify"),
    ],
)
def test_invalid_options(raw: dict, error: str) -> None:
    _, errors = convert_options(TlsCertCheck.Options, raw)
    assert errors and error in errors[0].message, errors


def test_examples_are_valid_playbook_tasks() -> None:
    tasks = yaml.safe_load(TlsCertCheck.EXAMPLES)
    assert tasks
    for task in tasks:
        _, errors = convert_options(TlsCertCheck.Options, task["tls_cert"])
        assert not errors, (task["name"], errors)
