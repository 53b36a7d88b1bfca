"""Upbit's request signature (services/executor/upbit/auth.py)."""

from __future__ import annotations

import hashlib
import uuid
import warnings

import jwt
import pytest

from services.executor.upbit.auth import (
    Credentials,
    authorization,
    encode_params,
    query_hash,
    query_string,
    token,
)

CREDS = Credentials.of("access-AAAA", "secret-SSSS")


def _claims(tok: str, secret: str = "secret-SSSS") -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.decode(tok, secret, algorithms=["HS512"])


def test_encode_params_keeps_order_flattens_arrays_and_drops_none() -> None:
    pairs = encode_params({"market": "KRW-BTC", "states": ["wait", "watch"], "page": None, "limit": "5"})
    assert pairs == [("market", "KRW-BTC"), ("states[]", "wait"), ("states[]", "watch"), ("limit", "5")]


def test_encode_params_keeps_an_explicit_array_key() -> None:
    assert encode_params({"states[]": ["done"]}) == [("states[]", "done")]


def test_query_string_is_unescaped_in_the_order_sent() -> None:
    pairs = [("market", "KRW-BTC"), ("identifier", "KRW-BTC:20260101T0000:buy"), ("states[]", "wait")]
    assert query_string(pairs) == "market=KRW-BTC&identifier=KRW-BTC:20260101T0000:buy&states[]=wait"


def test_query_hash_is_sha512_hex_of_the_query_string() -> None:
    expected = hashlib.sha512(b"market=KRW-BTC&states[]=wait&states[]=watch").hexdigest()
    assert query_hash([("market", "KRW-BTC"), ("states[]", "wait"), ("states[]", "watch")]) == expected


def test_token_without_params_has_no_query_hash() -> None:
    claims = _claims(token(CREDS))
    assert claims["access_key"] == "access-AAAA"
    assert uuid.UUID(claims["nonce"]).version == 4
    assert "query_hash" not in claims and "query_hash_alg" not in claims


def test_token_with_params_carries_their_hash() -> None:
    pairs = [("market", "KRW-ETH")]
    claims = _claims(token(CREDS, pairs))
    assert claims["query_hash"] == hashlib.sha512(b"market=KRW-ETH").hexdigest()
    assert claims["query_hash_alg"] == "SHA512"


def test_token_is_signed_hs512_with_the_secret() -> None:
    tok = token(CREDS)
    assert jwt.get_unverified_header(tok)["alg"] == "HS512"
    with pytest.raises(jwt.InvalidSignatureError):
        _claims(tok, secret="another-secret")


def test_every_token_has_a_fresh_nonce() -> None:
    nonces = {_claims(token(CREDS))["nonce"] for _ in range(20)}
    assert len(nonces) == 20


def test_authorization_is_a_bearer_token() -> None:
    header = authorization(CREDS, [("market", "KRW-BTC")])
    assert header.startswith("Bearer ")
    assert _claims(header.removeprefix("Bearer "))["access_key"] == "access-AAAA"


def test_credentials_never_show_the_keys() -> None:
    for text in (repr(CREDS), str(CREDS), f"{CREDS}"):
        assert "access-AAAA" not in text and "secret-SSSS" not in text
