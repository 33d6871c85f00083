"""The records the Kafka flow publishes carry a signature that only its deployment makes."""

from flows.runtime.signature import SIGNATURE_HEADER, RecordSignature

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
