"""NATS connection options from settings: user/password, token, credentials file, TLS."""

from __future__ import annotations

import ssl
from typing import Any

import nats
from nats.aio.client import Client

from coinpilot.settings import CommonSettings


def tls_context(settings: CommonSettings) -> ssl.SSLContext | None:
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None)
    if settings.nats_tls_cert and settings.nats_tls_key:
        ctx.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    return ctx


def connect_options(settings: CommonSettings, name: str) -> dict[str, Any]:
    """Options for ``nats.connect``; the same ones are handed to FastStream's broker."""
    opts: dict[str, Any] = {
        "servers": [s.strip() for s in settings.nats_url.split(",")],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "connect_timeout": 5,
    }
    if settings.nats_user:
        opts["user"] = settings.nats_user
        opts["password"] = settings.nats_password.get_secret_value() if settings.nats_password else ""
    if settings.nats_token:
        opts["token"] = settings.nats_token.get_secret_value()
    if settings.nats_creds_file:
        opts["user_credentials"] = str(settings.nats_creds_file)
    ctx = tls_context(settings)
    if ctx is not None:
        opts["tls"] = ctx
    return opts


async def connect(settings: CommonSettings, name: str = "coinpilot-cli") -> Client:
    return await nats.connect(**connect_options(settings, name))
