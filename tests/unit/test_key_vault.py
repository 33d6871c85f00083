"""The key vault: a copy of each customer's key that a tool opens while the flow
writes, where a destroyed key leaves no byte behind and no file names anybody."""

import os
from pathlib import Path

import pytest

from state.key_vault import (
    PARTS,
    KeyVaultError,
    VaultPart,
    VaultReader,
    check,
    part_name,
    part_of,
)


def _files_hold(directory: Path, needle: bytes) -> list[str]:
    return [p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_destroyed_key_is_gone_from_every_file_of_its_part(tmp_path):
    hashed = {name: f"{i:08x}" + "ab" * 12 for i, name in enumerate(["a", "b", "c"])}
    secrets = {name: os.urandom(64) for name in hashed}  # random: no compression hides one
    path = tmp_path / part_name(0)
    part = VaultPart(path)
    part.write({hashed[n]: secrets[n] for n in hashed}, set())
    part.write({}, set())  # a batch with nothing to destroy changes nothing
    part.write({}, {hashed["b"]})
    part.close()
    assert _files_hold(path, secrets["a"]) and _files_hold(path, secrets["c"])
    assert _files_hold(path, secrets["b"]) == []


def test_a_reader_opens_the_vault_while_the_flow_writes_it(tmp_path):
    hashed = "1234abcd" + "00" * 12
    part = VaultPart(tmp_path / part_name(part_of(hashed)))
    part.write({hashed: b"k" * 64}, set())
    reader = VaultReader(tmp_path)
    try:
        assert reader.exists()
        assert reader.secret(hashed) == b"k" * 64
        assert reader.secret("ffffffff" + "00" * 12) is None  # another part, never written
    finally:
        reader.close()
        part.close()


def test_every_keyed_hash_has_one_part_among_the_fixed_parts():
    parts = {part_of(f"{i:08x}" + "0" * 24) for i in range(0, 2**32, 2**32 // 1000)}
    assert parts == set(range(PARTS))
    # bytewax orders a sink's parts by name: index i must be the i-th name.
    assert sorted(part_name(i) for i in range(PARTS)) == [part_name(i) for i in range(PARTS)]


def test_a_vault_that_does_not_open_is_refused_naming_the_part(tmp_path):
    vault = tmp_path / "keys"
    part = VaultPart(vault / part_name(3))
    part.write({"ab" * 32: os.urandom(64)}, set())
    part.close()
    (vault / part_name(5)).mkdir()
    (vault / part_name(5) / "LOCK").write_text("")
    check(vault)  # a sound vault, parts never written, a part killed as it was made
    (vault / part_name(3) / "CURRENT").write_text("junk\n")
    with pytest.raises(KeyVaultError, match="part-3 does not open"):
        check(vault)
    afile = tmp_path / "a-file"
    afile.write_text("not a folder")
    with pytest.raises(KeyVaultError, match="is a file"):
        check(afile)
