"""Crypto-shredding: what Wayfinder writes about a customer on an append-only log is
sealed under that customer's own key, so an erasure that destroys the key makes every
copy unreadable at once, on every topic and in every backup of it.

The key is random (made where the customer's state is, held in it, never written
beside what it seals) and the cipher is AES-SIV (RFC 5297): deterministic, so a replay
after a crash that holds the same key writes byte-identical records, and misuse-proof
(no nonce to get wrong). The associated data binds a sealed blob to the record that
carries it: moved to another record, it does not open.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

#: AES-256-SIV takes a 512-bit key (two 256-bit halves: one for the MAC, one for CTR).
SECRET_BYTES = 64


class Unreadable(Exception):
    """A sealed blob that this key does not open (another key, or altered bytes)."""


def new_secret() -> bytes:
    """A customer's key: from the operating system's random source."""
    return secrets.token_bytes(SECRET_BYTES)


def seal(secret: bytes, bound_to: bytes, plain: bytes) -> bytes:
    """`plain` sealed under `secret`, bound to `bound_to` (the carrying record's id)."""
    return AESSIV(secret).encrypt(plain, [bound_to])


def unseal(secret: bytes, bound_to: bytes, sealed: bytes) -> bytes:
    """What `seal` sealed; Unreadable with any other key, binding or bytes."""
    try:
        return AESSIV(secret).decrypt(sealed, [bound_to])
    except (InvalidTag, ValueError):
        raise Unreadable("sealed under another key, or altered") from None
