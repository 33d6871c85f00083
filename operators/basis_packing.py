"""A decision's basis (the customer's context and the trigger, msgpack) packed before it
is sealed: sealed bytes do not compress, and the decision inputs are the flow's largest
output.

Zstandard with a dictionary trained on bases (`basis.zdict`, made by
`scripts/basis_dictionary` from a simulated run): a basis is a couple of KB, too little
for a compressor to learn its own vocabulary from, and most of it (field names, journey,
segment and contact point names) is the same from one basis to the next. On this
machine it packs a basis of 1,757 bytes on average in about 6 µs to 850 bytes, where
zlib at level 1 took about 40 µs to 1,191 (commit e397a98 says how it was measured).
Each frame names its dictionary; a basis that names none is zlib's, as runs before this
packed them, and still opens. The same bytes pack to the same frame on every run (a
replay after a crash writes what the run before wrote).
"""

import zlib
from importlib.resources import files

import zstandard

from operators.per_thread import PerThread

#: The dictionary's id (in every frame): a new dictionary takes the next, and this
#: module keeps every earlier one, so what was recorded with it still opens.
DICTIONARY_ID = 1
_DICTIONARIES = {DICTIONARY_ID: "basis.zdict"}
LEVEL = 1
#: How a zstd frame begins (RFC 8878); zlib's first byte is never 0x28.
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _dictionary(dictionary_id: int) -> zstandard.ZstdCompressionDict:
    name = _DICTIONARIES.get(dictionary_id)
    if name is None:
        raise ValueError(
            f"a basis packed with dictionary {dictionary_id}, which this version lacks"
        )
    return zstandard.ZstdCompressionDict(files("operators").joinpath(name).read_bytes())


#: Each thread's compressor and decompressors (bytewax workers are threads, and
#: zstandard's are not to be shared).
_PACKERS = PerThread(
    lambda: zstandard.ZstdCompressor(
        level=LEVEL, dict_data=_dictionary(DICTIONARY_ID), write_checksum=False
    )
)
_UNPACKERS: PerThread[dict[int, zstandard.ZstdDecompressor]] = PerThread(dict)


def pack(basis: bytes) -> bytes:
    """The basis's msgpack, packed (a zstd frame naming the dictionary)."""
    return _PACKERS.get().compress(basis)


def unpack(packed: bytes) -> bytes:
    """What `pack` packed, or what a run before it packed with zlib."""
    if not packed.startswith(_ZSTD_MAGIC):
        return zlib.decompress(packed)
    dictionary_id = zstandard.get_frame_parameters(packed).dict_id
    unpackers = _UNPACKERS.get()
    unpacker = unpackers.get(dictionary_id)
    if unpacker is None:
        unpacker = unpackers[dictionary_id] = zstandard.ZstdDecompressor(
            dict_data=_dictionary(dictionary_id)
        )
    return unpacker.decompress(packed)
