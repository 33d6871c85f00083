"""The records the Kafka flow publishes carry a signature that only its deployment makes."""

import hmac
import random

from flows.runtime.signature import SIGNATURE_HEADER, RecordSignature
from operators.identity import KeyedDigest, keyed_digest

SECRET = b"a deployment's secret of 32 bytes!"


def test_a_record_signed_by_the_deployment_holds_and_any_change_breaks_it():
    signature = RecordSignature(SECRET)
    value = b'{"decision_id":"dec-1","outcome":"sent"}'
    signed = [(SIGNATURE_HEADER, signature.of("decisions", b"cust-1", value))]
    assert signature.holds("decisions", b"cust-1", value, signed)
    assert signature.holds("decisions", b"cust-1", value, dict(signed))  # as the client gives it
    assert not signature.holds("decisions", b"cust-1", value.replace(b"sent", b"held"), signed)
    assert not signature.holds("decisions", b"cust-2", value, signed)  # another key
    assert not signature.holds("decisions", None, value, signed)  # no key is not an empty one
    assert not signature.holds("actions.sms", b"cust-1", value, signed)  # another topic
    assert not signature.holds("decisions", b"cust-1", value, None)  # unsigned
    assert not signature.holds("decisions", b"cust-1", value, [*signed, *signed])  # two
    assert not signature.holds("decisions", b"cust-1", value, [(SIGNATURE_HEADER, None)])
    other = RecordSignature(b"another deployment's secret, 32 by")
    assert not other.holds("decisions", b"cust-1", value, signed)


def test_the_parts_of_a_record_cannot_be_shifted_into_one_another():
    signature = RecordSignature(SECRET)
    assert signature.of("decisions", b"ab", b"c") != signature.of("decisions", b"a", b"bc")
    assert signature.of("decisions", b"", b"x") != signature.of("decisions", None, b"x")


def test_a_keyed_digest_is_hmac_sha256_of_the_framed_parts_under_keys_of_any_length():
    """The signatures already on the topics stay valid: the same bytes as the standard
    library's HMAC, for keys shorter than, as long as and longer than SHA-256's block."""
    rng = random.Random(7)
    for length in (0, 1, 32, 63, 64, 65, 200):
        key = rng.randbytes(length)
        digest = KeyedDigest(key)
        for _ in range(20):
            parts = [rng.randbytes(rng.randrange(0, 700)) for _ in range(rng.randrange(0, 5))]
            framed = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
            expected = hmac.digest(key, framed, "sha256")
            assert digest.of(*parts) == expected
            assert keyed_digest(key, *parts) == expected
    framed = (2).to_bytes(8, "big") + "é".encode()
    assert KeyedDigest(b"k").of("é") == hmac.digest(b"k", framed, "sha256")
