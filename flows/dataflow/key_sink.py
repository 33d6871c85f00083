"""The key sink: keeps the key vault (`state.key_vault`) in step with the customers'
keys the customer step makes and destroys.

Its partitions are the vault's parts, so a customer's key is written and destroyed in
the same part whichever worker holds the customer. A part keeps no snapshot state: a
replay after a crash writes each key again (or its replacement, if the key was made
after the snapshot the flow resumed from) and destroys again what it destroyed.
"""

from pathlib import Path

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.runtime.recovery_store import kept_at, kept_before, resume_epoch
from flows.runtime.settings import SettingsError, state_key
from operators.identity import instance_name
from state.key_vault import (
    INSTANCE_SEPARATOR,
    PARTS,
    CustomerKey,
    InstanceName,
    KeyDestroyed,
    VaultPart,
    VaultReader,
    check,
    part_name,
    part_of,
)

#: What the key sink writes: a customer's key made or destroyed, an instance named.
VaultChange = CustomerKey | KeyDestroyed | InstanceName


class _VaultPartition(StatefulSinkPartition[VaultChange, None]):
    def __init__(self, path: Path) -> None:
        self._part = VaultPart(path)

    def write_batch(self, values: list[VaultChange]) -> None:
        made: dict[str, CustomerKey] = {}
        destroyed: set[str] = set()
        names: dict[str, str] = {}
        for value in values:  # in order: what is made after a destruction is kept
            if isinstance(value, KeyDestroyed):
                hashed = value.pseudonym
                made.pop(hashed, None)
                prefix = hashed + INSTANCE_SEPARATOR
                names = {k: v for k, v in names.items() if not k.startswith(prefix)}
                destroyed.add(hashed)
            elif isinstance(value, InstanceName):
                hashed = state_key(value.key)
                token = state_key(instance_name(value.key, value.instance))
                names[hashed + INSTANCE_SEPARATOR + token] = value.instance
            else:
                made[state_key(value.key)] = value
        self._part.write(made, destroyed, names)

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._part.close()


class KeyVaultSink(FixedPartitionedSink[VaultChange, None]):
    """Items are (the customer's pseudonym, what changes in their entries)."""

    def __init__(self, directory: Path) -> None:
        check(directory)  # a damaged vault is one sentence before the flow starts
        self.directory = directory

    def list_parts(self) -> list[str]:
        return [part_name(i) for i in range(PARTS)]

    def part_fn(self, item_key: str) -> int:
        return part_of(item_key)

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[VaultChange, None]:
        return _VaultPartition(self.directory / for_part)


#: What the record beside a recovery folder that says where the vault is ends with.
_RECORD = "key-vault"


def resumes_with_vault(recovery: Path, vault: Path | None) -> None:
    """A run that resumes from `recovery` keeps its vault where the runs before did, or
    is refused in one sentence while their vault is still there: this run's erasures
    would not reach the keys and ids it holds (nor would `wayfinder rerun` find them).
    Then where this run keeps it is said beside the folder (a vault moved there whole is
    found; one deleted, or moved away, is nobody's)."""
    before = kept_before(recovery, _RECORD) if resume_epoch(recovery) is not None else None
    here = None if vault is None else vault.resolve()
    if before is not None and before != here and VaultReader(before).exists():
        now = "unset" if vault is None else f"at {vault}"
        raise SettingsError(
            f"the key vault of the runs this one resumes from is at {before}, and this "
            f"run's is {now}: its erasures would not reach the keys and ids kept there; "
            "resume with the vault there (WAYFINDER_KEY_VAULT; an embedded run keeps it "
            "in its --out folder), or move it to where this run keeps it"
        )
    kept_at(recovery, _RECORD, vault)
