"""Crypto-shredding's primitives: what is sealed opens under its own key alone, and the
handover pairs kept for logins are the ones derived from the key, bounded, forgotten
with it."""

import threading

import pytest

from operators.sealing import HandoverKeys, Unreadable, new_secret, seal_to


def derived(secret: bytes) -> bytes:
    """The public half of the pair derived from `secret` alone (nothing kept)."""
    return HandoverKeys().public(secret)


def test_a_kept_pair_is_the_one_derived_from_the_key():
    secret, kept = new_secret(), HandoverKeys()
    public = kept.public(secret)
    assert public == derived(secret)
    sealed = seal_to(public, b"merge-1", b"context")
    assert kept.open(secret, b"merge-1", sealed) == HandoverKeys().open(secret, b"merge-1", sealed)
    assert kept.open(secret, b"merge-1", sealed) == b"context"


def test_a_kept_pair_opens_nothing_sealed_to_another_key_or_bound_elsewhere():
    mine, theirs, kept = new_secret(), new_secret(), HandoverKeys()
    sealed = seal_to(kept.public(theirs), b"merge-1", b"context")
    with pytest.raises(Unreadable):
        kept.open(mine, b"merge-1", sealed)
    with pytest.raises(Unreadable):
        kept.open(theirs, b"merge-2", sealed)


def test_the_pairs_kept_are_bounded_the_oldest_dropped_first():
    kept = HandoverKeys(size=2)
    first, second, third = new_secret(), new_secret(), new_secret()
    for secret in (first, second, third):
        kept.public(secret)
    assert len(kept) == 2
    kept.forget(second)
    kept.forget(third)
    assert len(kept) == 0  # the first had gone: the oldest, when the third came
    with pytest.raises(ValueError):
        HandoverKeys(size=0)


def test_a_forgotten_pair_is_gone_and_the_key_alone_derives_it_again():
    secret, kept = new_secret(), HandoverKeys()
    public = kept.public(secret)
    kept.forget(secret)
    kept.forget(secret)  # (twice: nothing to drop)
    assert len(kept) == 0
    assert kept.public(secret) == public and len(kept) == 1


def test_threads_that_share_the_pairs_keep_them_bounded_and_right():
    kept = HandoverKeys(size=8)
    secrets = [new_secret() for _ in range(32)]
    wrong: list[bytes] = []

    def logins() -> None:
        for secret in secrets * 3:
            if kept.public(secret) != derived(secret):
                wrong.append(secret)

    threads = [threading.Thread(target=logins) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong and len(kept) <= 8
