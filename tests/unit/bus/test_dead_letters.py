"""A dead letter always fits the max payload: cut to fit, marked truncated, its place kept."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from coinpilot.bus.dead_letters import HEADER_ROOM, decoded_body, encoded_body, fit
from coinpilot.contracts import DeadLetter

LIMIT = 64 * 1024


def letter(body: bytes, headers: dict[str, str] | None = None) -> DeadLetter:
    text, encoding = encoded_body(body)
    return DeadLetter(
        ts_event=datetime(2026, 1, 1, tzinfo=UTC),
        service="collector",
        subject_original="candles.1m.KRW-BTC",
        reason="contract: not JSON",
        deliveries=1,
        headers=headers or {"Nats-Msg-Id": "candle:KRW-BTC:1", "Coinpilot-Run-Id": "live"},
        body=text,
        body_encoding=encoding,
        stream_sequence=42,
        stream="CANDLES",
    )


def test_a_letter_that_fits_is_unchanged() -> None:
    small = letter(b'{"symbol": "KRW-BTC"}')
    assert fit(small, LIMIT) is small


def test_a_body_needing_escapes_is_cut_to_fit_and_keeps_its_place() -> None:
    body = ('"\\\x01한' * 20_000).encode()  # quotes, backslashes, control and multibyte characters
    fitted = fit(letter(body), LIMIT)
    assert len(fitted.to_json()) <= LIMIT
    assert fitted.truncated and fitted.stream == "CANDLES" and fitted.stream_sequence == 42
    assert fitted.reason == "contract: not JSON"
    assert body.startswith(decoded_body(fitted)) and len(fitted.to_json()) > LIMIT - 64, (
        "cut no more than needed"
    )


def test_a_binary_body_is_cut_to_whole_base64_quanta_that_still_decode() -> None:
    body = bytes(range(256)) * 1000
    fitted = fit(letter(body), LIMIT)
    assert fitted.body_encoding == "base64" and fitted.truncated
    assert len(fitted.body) % 4 == 0 and len(fitted.to_json()) <= LIMIT
    assert body.startswith(base64.b64decode(fitted.body))


def test_huge_headers_are_cut_keeping_the_standard_ones_first() -> None:
    headers = {f"X-Junk-{i}": "j" * 5000 for i in range(40)}
    headers |= {"Nats-Msg-Id": "candle:KRW-BTC:1", "Coinpilot-Trace-Id": "t-1"}
    fitted = fit(letter(b"{}", headers), LIMIT)
    assert fitted.truncated and len(fitted.to_json()) <= LIMIT
    assert (
        fitted.headers["Nats-Msg-Id"] == "candle:KRW-BTC:1" and fitted.headers["Coinpilot-Trace-Id"] == "t-1"
    )
    assert sum(len(k) + len(v) for k, v in fitted.headers.items()) <= HEADER_ROOM
    assert fitted.body == "{}"
