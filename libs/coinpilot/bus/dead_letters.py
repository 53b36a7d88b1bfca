"""Dead letters that always fit: a letter larger than the server's max payload is cut to fit.

A dead letter carries the original body and headers. For an original near the max payload
(1 MiB by default) the letter is larger still (JSON escaping, base64 for a binary body), its
publish would fail, and the source message, never terminated, would be redelivered forever in
front of everything behind it. So a letter that does not fit keeps its reason, subject, stream
and sequence whole, and as much of its headers and body as fits, marked ``truncated``; the
original stays in its stream, where ``coinpilot dlq`` fetches it by sequence.
"""

from __future__ import annotations

import base64
import json

from coinpilot.contracts import DeadLetter

HEADER_ROOM = 16 * 1024  # bytes of the letter's copy of the original headers, when cut
HEADER_VALUE_CHARS = 1024  # one header value, when cut
STANDARD_HEADERS = ("Nats-Msg-Id", "Coinpilot-")  # kept first when headers are cut


def encoded_body(body: bytes) -> tuple[str, str]:
    """``(text, encoding)``: UTF-8 text when the body is, base64 otherwise."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def decoded_body(letter: DeadLetter) -> bytes:
    """The original body's bytes (a prefix of them when the letter is truncated)."""
    if letter.body_encoding == "base64":
        return base64.b64decode(letter.body)
    return letter.body.encode("utf-8")


def _size(letter: DeadLetter) -> int:
    return len(letter.to_json())


def _json_size(text: str) -> int:
    """Bytes ``text`` takes as a JSON string value (quotes excluded), as pydantic writes it."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _cut_headers(headers: dict[str, str]) -> dict[str, str]:
    ordered = sorted(headers.items(), key=lambda kv: not kv[0].startswith(STANDARD_HEADERS))
    kept: dict[str, str] = {}
    used = 0
    for name, value in ordered:
        name, value = name[:256], value[:HEADER_VALUE_CHARS]
        cost = _json_size(name) + _json_size(value) + 6
        if used + cost > HEADER_ROOM:
            continue
        kept[name] = value
        used += cost
    return kept


def _prefix_within(text: str, room: int, step: int) -> str:
    """The longest prefix of ``text`` (a multiple of ``step`` characters) whose JSON form fits
    in ``room`` bytes; binary search, since escaping makes the size no simple function of length."""
    lo, hi = 0, len(text) // step
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _json_size(text[: mid * step]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[: lo * step]


def fit(letter: DeadLetter, limit: int) -> DeadLetter:
    """``letter`` if its JSON is at most ``limit`` bytes; otherwise a truncated copy that is."""
    if _size(letter) <= limit:
        return letter
    headers = letter.headers if _json_size(json.dumps(letter.headers)) <= HEADER_ROOM else None
    headers = headers if headers is not None else _cut_headers(letter.headers)
    cut = letter.model_copy(update={"body": "", "truncated": True, "headers": headers})
    step = 4 if letter.body_encoding == "base64" else 1  # whole base64 quanta still decode
    room = limit - _size(cut)
    while room > 0:
        fitted = cut.model_copy(update={"body": _prefix_within(letter.body, room, step)})
        excess = _size(fitted) - limit
        if excess <= 0:
            return fitted
        room -= excess  # our size estimate and the serialiser disagreed on some character
    return cut
