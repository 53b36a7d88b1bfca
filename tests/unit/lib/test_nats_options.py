"""NATS authentication and TLS come from settings, for nats-py and FastStream alike."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from faststream.security import SASLPlaintext

from apps.host import make_broker
from coinpilot.bus.connect import connect_options, tls_context
from coinpilot.settings import CommonSettings


def test_user_and_password_reach_the_connection_options() -> None:
    opts = connect_options(CommonSettings(nats_url="nats://a:4222,nats://b:4222", nats_user="cp",
                                          nats_password="s3cret"), "svc")  # fmt: skip
    assert opts["servers"] == ["nats://a:4222", "nats://b:4222"]
    assert (opts["user"], opts["password"], opts["name"]) == ("cp", "s3cret", "svc")
    assert opts["max_reconnect_attempts"] == -1


def test_token_and_credentials_file_reach_the_connection_options(tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    opts = connect_options(CommonSettings(nats_token="tok", nats_creds_file=creds), "svc")
    assert opts["token"] == "tok" and opts["user_credentials"] == str(creds)
    assert "user" not in opts and "tls" not in opts


def test_the_broker_gets_user_and_password_as_sasl_security() -> None:
    broker = make_broker(CommonSettings(nats_user="cp", nats_password="s3cret"), "svc")
    assert isinstance(broker.specification.security, SASLPlaintext)
    assert "s3cret" not in repr(CommonSettings(nats_user="cp", nats_password="s3cret"))


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_settings_build_a_verifying_context_with_the_client_certificate(certificate) -> None:
    cert, key = certificate
    ctx = tls_context(CommonSettings(nats_tls_ca=cert, nats_tls_cert=cert, nats_tls_key=key))
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode is ssl.CERT_REQUIRED
    assert tls_context(CommonSettings()) is None
    assert "tls" in connect_options(CommonSettings(nats_tls_ca=cert), "svc")
