"""The records the Kafka flow publishes are signed, so what it reads back is its own.

A resumed flow repeats the decisions and intent changes it finds on its output topics
(`flows.runtime.published`), and every process learns from `models.examples`: anyone
who may write to those topics could otherwise plant a decision under an id the replay
will make, or teach the models. Each record the flow writes carries, in a header, an
HMAC-SHA256 under a key derived from the deployment's secret, of its topic (without
the deployment's prefix), key and value. What the flow reads back without a valid
one is skipped, counted and said.
"""

import hmac
from collections.abc import Mapping, Sequence

from operators.identity import KeyedDigest, keyed_digest

#: The header that holds a record's signature.
SIGNATURE_HEADER = "wayfinder-signature"

#: A record's headers, as the Kafka client gives them.
Headers = Mapping[str, str | bytes | None] | Sequence[tuple[str, str | bytes | None]]


class RecordSignature:
    """Signs and checks the records one deployment's flow publishes."""

    def __init__(self, secret: bytes) -> None:
        # A key of its own: the secret also keys state and signs merges.
        self._digest = KeyedDigest(keyed_digest(secret, "wayfinder: published records"))

    def of(self, topic: str, key: bytes | None, value: bytes) -> bytes:
        """The signature of a record on `topic` (the name without the prefix)."""
        return self._digest.of(topic, b"" if key is None else b"k" + key, value)

    def holds(self, topic: str, key: bytes | None, value: bytes, headers: Headers | None) -> bool:
        """Whether a record read back carries this deployment's signature."""
        pairs = list(headers.items()) if isinstance(headers, Mapping) else headers or []
        signed = [v for name, v in pairs if name == SIGNATURE_HEADER]
        if len(signed) != 1 or not isinstance(signed[0], bytes):
            return False
        return hmac.compare_digest(signed[0], self.of(topic, key, value))
