"""The key vault: a copy of each customer's key and id that a tool opens while the flow
writes, where a destroyed key leaves no byte behind and no file names anybody."""

import os
from pathlib import Path

import pytest
from rocksdict import Options, Rdict

from state.key_vault import (
    PARTS,
    CustomerKey,
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
    made = {hashed[n]: CustomerKey(f"customer-{n}-7f3e", secrets[n]) for n in hashed}
    part.write(made, set())
    part.write({}, set())  # a batch with nothing to destroy changes nothing
    part.write({}, {hashed["b"]})
    part.close()
    assert _files_hold(path, secrets["a"]) and _files_hold(path, secrets["c"])
    assert _files_hold(path, b"customer-a-7f3e") and _files_hold(path, b"customer-c-7f3e")
    assert _files_hold(path, secrets["b"]) == []
    assert _files_hold(path, b"customer-b-7f3e") == []  # nor its id


def test_a_reader_opens_the_vault_while_the_flow_writes_it(tmp_path):
    hashed = "1234abcd" + "00" * 12
    part = VaultPart(tmp_path / part_name(part_of(hashed)))
    part.write({hashed: CustomerKey("cust-1", b"k" * 64)}, set())
    reader = VaultReader(tmp_path)
    try:
        assert reader.exists()
        assert reader.secret(hashed) == b"k" * 64
        assert reader.customer(hashed) == "cust-1"  # whom the pseudonym names
        assert reader.secret("ffffffff" + "00" * 12) is None  # another part, never written
        assert reader.customer("ffffffff" + "00" * 12) is None
        # A reader sees the vault as it was when it opened it, until it refreshes.
        later = "1234abcd" + "11" * 12  # (the same part)
        part.write({later: CustomerKey("anon:laptop-2", b"j" * 64)}, set())
        assert reader.customer(later) is None
        reader.refresh()
        assert reader.customer(later) == "anon:laptop-2"
        part.write({}, {hashed})
        reader.refresh()
        assert reader.customer(hashed) is None and reader.secret(hashed) is None
    finally:
        reader.close()
        part.close()


def test_an_erased_customers_instances_go_with_their_entry(tmp_path):
    """Instances are kept under `pseudonym/token`: the customer's erasure deletes the
    range, and an instance named after it (a new profile) is kept."""
    hashed, other = "1234abcd" + "22" * 12, "1234abcd" + "33" * 12
    path = tmp_path / part_name(part_of(hashed))
    part = VaultPart(path)
    part.write(
        {hashed: CustomerKey("cust-7", b"k" * 64), other: CustomerKey("cust-8", b"o" * 64)},
        set(),
        {
            f"{hashed}/tok-1": "trf-7781-a",
            f"{hashed}/tok-2": "trf-7781-b",
            f"{other}/tok-1": "trf-8",
        },
    )
    reader = VaultReader(tmp_path)
    try:
        assert reader.instance(hashed, "tok-1") == "trf-7781-a"
        part.write({}, {hashed}, {f"{hashed}/tok-3": "trf-7781-c"})  # erased, then anew
        reader.refresh()
        assert reader.instance(hashed, "tok-1") is None and reader.instance(hashed, "tok-2") is None
        assert reader.instance(hashed, "tok-3") == "trf-7781-c"
        assert reader.instance(other, "tok-1") == "trf-8"  # another customer's stays
    finally:
        reader.close()
        part.close()
    assert _files_hold(path, b"trf-7781-a") == [] and _files_hold(path, b"trf-7781-b") == []
    assert _files_hold(path, b"trf-8")


def test_an_entry_of_an_older_release_still_gives_its_key(tmp_path):
    """Before the vault held ids, an entry was the 64-byte secret alone."""
    hashed = "00000000" + "11" * 12
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(tmp_path / part_name(part_of(hashed))), options)
    db[hashed.encode()] = b"s" * 64
    db.close()
    reader = VaultReader(tmp_path)
    try:
        assert reader.secret(hashed) == b"s" * 64
        assert reader.customer(hashed) is None
    finally:
        reader.close()


def test_every_keyed_hash_has_one_part_among_the_fixed_parts():
    parts = {part_of(f"{i:08x}" + "0" * 24) for i in range(0, 2**32, 2**32 // 1000)}
    assert parts == set(range(PARTS))
    # bytewax orders a sink's parts by name: index i must be the i-th name.
    assert sorted(part_name(i) for i in range(PARTS)) == [part_name(i) for i in range(PARTS)]


def test_a_vault_that_does_not_open_is_refused_naming_the_part(tmp_path):
    vault = tmp_path / "keys"
    part = VaultPart(vault / part_name(3))
    part.write({"ab" * 32: CustomerKey("cust-9", os.urandom(64))}, set())
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
