"""Decision bases packed with the trained dictionary: smaller than zlib made them, the same
frame on every run, and a basis recorded by an earlier version (zlib) still opens."""

import threading
import zlib

import pytest
import zstandard

from operators.basis_packing import DICTIONARY_ID, pack, unpack
from operators.rerun import open_basis
from operators.sealing import unseal
from schemas.decision import DecisionInput
from tests.unit.test_rerun import lagged_run


@pytest.fixture(scope="module")
def recorded() -> list[tuple[DecisionInput, bytes]]:
    """Decision inputs a simulated run records, each with its customer's key."""
    run = lagged_run(60)
    return [(d, run.keys[d.customer]) for d in run.inputs if d.customer in run.keys][:200]


def test_a_recorded_basis_is_a_frame_that_names_the_dictionary_and_opens(recorded):
    assert len(recorded) >= 40
    for recorded_input, secret in recorded:
        basis = open_basis(recorded_input, secret)  # (unsealed, unpacked, decoded)
        assert basis.context
    packed = pack(b"\x82\xa1a\x01\xa1b\x02")
    assert zstandard.get_frame_parameters(packed).dict_id == DICTIONARY_ID
    assert unpack(packed) == b"\x82\xa1a\x01\xa1b\x02"


def test_the_same_basis_packs_to_the_same_bytes_in_any_thread():
    basis = b"segment=premium journey=onboarding " * 40
    made: list[bytes] = []
    thread = threading.Thread(target=lambda: made.append(pack(basis)))
    thread.start()
    thread.join()
    assert made == [pack(basis)]


def test_a_basis_an_earlier_version_packed_with_zlib_still_opens():
    basis = b"\x82\xa7context\xc4\x03abc\xa7trigger\xc0" * 10
    assert unpack(zlib.compress(basis, 1)) == basis


def test_a_frame_of_a_dictionary_this_version_lacks_is_refused_by_name():
    other = zstandard.ZstdCompressor(
        dict_data=zstandard.train_dictionary(
            1024, [bytes([i % 7, i % 5, i % 3]) * 40 for i in range(400)], dict_id=999
        )
    ).compress(b"abc" * 50)
    with pytest.raises(ValueError, match="dictionary 999"):
        unpack(other)


def test_the_dictionary_packs_bases_smaller_than_zlib_did(recorded):
    plain = [unpack(unseal(s, d.decision_id.encode(), d.basis)) for d, s in recorded]
    packed = sum(len(pack(b)) for b in plain)
    zlibbed = sum(len(zlib.compress(b, 1)) for b in plain)
    assert packed < zlibbed
