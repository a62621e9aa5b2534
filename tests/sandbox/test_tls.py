"""The sandbox's throwaway CA: clients that trust it connect, clients that do not are refused."""

from __future__ import annotations

import ssl
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from bot.sandbox.loopback import serve, shutdown
from bot.sandbox.tls import issue_loopback_certificate


def _ok(req: BaseHTTPRequestHandler) -> None:
    body = b'{"ok":true}'
    req.send_response(200)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


def test_certificate_names_loopback_and_is_signed_by_the_ca() -> None:
    bundle = issue_loopback_certificate("127.0.0.2")
    ca = x509.load_pem_x509_certificate(bundle.ca_pem)
    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    assert cert.issuer == ca.subject and cert.subject != ca.subject
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1", "127.0.0.2"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert b"PRIVATE KEY" not in bundle.ca_pem + bundle.cert_pem


def test_a_client_trusting_the_ca_connects_and_others_are_refused(tmp_path: Path) -> None:
    bundle = issue_loopback_certificate()
    server = serve(_ok, host="127.0.0.1", name="tls-test", methods=("GET",), tls=bundle.server_context())
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/"
        trusting = ssl.create_default_context(cafile=bundle.write_ca(tmp_path / "ca.pem"))
        assert httpx.get(url, verify=trusting).json() == {"ok": True}
        assert httpx.get(url.replace("127.0.0.1", "localhost"), verify=trusting).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url)  # the system trust store does not know the sandbox's CA
        other = issue_loopback_certificate().write_ca(tmp_path / "other.pem")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url, verify=ssl.create_default_context(cafile=other))
    finally:
        shutdown(server)


def test_each_call_makes_a_new_ca() -> None:
    assert issue_loopback_certificate().ca_pem != issue_loopback_certificate().ca_pem
    context = issue_loopback_certificate().server_context()
    assert isinstance(context, ssl.SSLContext)
