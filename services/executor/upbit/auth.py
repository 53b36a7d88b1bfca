"""Upbit's request signature: a JWT per request (Upbit's authentication guide).

The payload carries ``access_key``, a fresh ``nonce`` (uuid4: Upbit refuses a reused one) and, for a
request with parameters, ``query_hash`` = SHA-512 hex of the parameters as a query string and
``query_hash_alg`` = ``SHA512``. The query string is the one sent, in the order sent, *not*
percent-escaped (Upbit's examples hash ``unquote(urlencode(params, doseq=True))``), arrays as
``key[]=v`` repeated; for a POST it is the JSON body's fields encoded the same way. The token is
signed HS512 with the secret key (the algorithm in Upbit's documented token header; Upbit also
accepts HS256) and sent as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hashlib
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlencode

import jwt
from pydantic import SecretStr

ALGORITHM = "HS512"
QUERY_HASH_ALG = "SHA512"

ParamValue = str | Sequence[str]
Pairs = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Credentials:
    """An Upbit key pair. Both halves are ``SecretStr``: repr, str and logs show ``**********``."""

    access_key: SecretStr
    secret_key: SecretStr

    @classmethod
    def of(cls, access_key: str, secret_key: str) -> Credentials:
        return cls(SecretStr(access_key), SecretStr(secret_key))


def encode_params(params: Mapping[str, ParamValue | None] | Iterable[tuple[str, str]] | None) -> Pairs:
    """Flatten parameters into the ordered pairs sent: a list value becomes repeated ``key[]`` pairs,
    a ``None`` value is left out."""
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    pairs: Pairs = []
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, str):
            pairs.append((key, value))
        else:
            name = key if key.endswith("[]") else f"{key}[]"
            pairs.extend((name, item) for item in value)
    return pairs


def query_string(pairs: Sequence[tuple[str, str]]) -> str:
    """The string Upbit hashes: the urlencoded pairs with the escapes undone."""
    return unquote(urlencode(list(pairs)))


def query_hash(pairs: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha512(query_string(pairs).encode("utf-8")).hexdigest()


def token(credentials: Credentials, pairs: Sequence[tuple[str, str]] = (), nonce: str | None = None) -> str:
    """Sign one request. ``nonce`` is for tests; every real request gets a fresh uuid4."""
    payload: dict[str, str] = {
        "access_key": credentials.access_key.get_secret_value(),
        "nonce": nonce if nonce is not None else str(uuid.uuid4()),
    }
    if pairs:
        payload["query_hash"] = query_hash(pairs)
        payload["query_hash_alg"] = QUERY_HASH_ALG
    with warnings.catch_warnings():
        # Upbit issues 40-character secrets, shorter than RFC 7518 recommends for HS512; the
        # exchange sets the key, so PyJWT's warning (on every request) would only be noise.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(payload, credentials.secret_key.get_secret_value(), algorithm=ALGORITHM)


def authorization(credentials: Credentials, pairs: Sequence[tuple[str, str]] = ()) -> str:
    """The ``Authorization`` header value for one request."""
    return f"Bearer {token(credentials, pairs)}"
