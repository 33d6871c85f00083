"""Crypto-shredding: what Wayfinder writes about a customer on an append-only log is
sealed under that customer's own key, so an erasure that destroys the key makes every
copy unreadable at once, on every topic and in every backup of it.

The key is random (made where the customer's state is, held in it, never written
beside what it seals) and the cipher is AES-SIV (RFC 5297): deterministic, so a replay
after a crash that holds the same key writes byte-identical records, and misuse-proof
(no nonce to get wrong). The associated data binds a sealed blob to the record that
carries it: moved to another record, it does not open.

A device's context, handed to the customer after a login, crosses the events topic
from the device's state to the customer's, so it is sealed to the customer: to the
public half of a handover key pair derived from the customer's key (HPKE, RFC 9180:
X25519, HKDF-SHA256, AES-128-GCM). Erasing the customer destroys the private half
with the key.
"""

from __future__ import annotations

import secrets
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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


_HANDOVER = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


def _handover_private(secret: bytes) -> X25519PrivateKey:
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=b"wayfinder handover").derive(secret)
    return X25519PrivateKey.from_private_bytes(seed)


def seal_to(public_key: bytes, bound_to: bytes, plain: bytes) -> bytes:
    """`plain` sealed to a customer's handover public key, bound to `bound_to`."""
    try:
        recipient = X25519PublicKey.from_public_bytes(public_key)
        return _HANDOVER.encrypt(plain, recipient, info=bound_to)
    except ValueError:  # not a point to agree a key with
        raise Unreadable("not a handover key") from None


class HandoverKeys:
    """The customers' handover key pairs, each derived from the customer's key, and
    those of the customers who logged in last kept from a login's request to its
    answer: deriving a pair is an X25519 multiplication, a fifth of what a login costs in
    all, and without them the answer derives the pair the request did.

    Derived from the key alone (a run resumed after a crash, which keeps none, opens
    what was sealed before). At most `size` kept, the
    oldest dropped first; an erased customer's pair is dropped with their key
    (`forget`: a customer's events are folded one at a time, where their state is, so
    no pair of theirs is being made meanwhile). Shared by the threads of a process: each
    lookup under a lock."""

    def __init__(self, size: int = 4096) -> None:
        if size < 1:
            raise ValueError(f"size {size!r}: must be positive")
        self._size = size
        self._pairs: dict[bytes, tuple[X25519PrivateKey, bytes]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pairs)

    def public(self, secret: bytes) -> bytes:
        """The public half (32 bytes) of the handover key pair of the customer whose key
        is `secret`: what a device seals its context to."""
        return self._pair(secret)[1]

    def open(self, secret: bytes, bound_to: bytes, sealed: bytes) -> bytes:
        """What `seal_to` sealed to the handover key of the customer whose key is
        `secret`; Unreadable to anyone else (a key lost, erased, or another customer's)."""
        try:
            return _HANDOVER.decrypt(sealed, self._pair(secret)[0], info=bound_to)
        except (InvalidTag, ValueError):
            raise Unreadable("sealed to another handover key, or altered") from None

    def forget(self, secret: bytes) -> None:
        """Drop the pair of `secret` (its customer is erased)."""
        with self._lock:
            self._pairs.pop(secret, None)

    def _pair(self, secret: bytes) -> tuple[X25519PrivateKey, bytes]:
        with self._lock:
            pair = self._pairs.get(secret)
        if pair is None:
            private = _handover_private(secret)
            pair = (private, private.public_key().public_bytes_raw())
            with self._lock:
                while len(self._pairs) >= self._size:
                    del self._pairs[next(iter(self._pairs))]
                self._pairs[secret] = pair
        return pair
