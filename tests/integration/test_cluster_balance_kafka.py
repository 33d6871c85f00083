"""The cluster's balance on the real broker: each process's reports reach the others, and
a round that fails does not end the thread that a bounded cluster run waits on."""

import threading
import time
from collections.abc import Callable

import pytest

from flows.runtime.balance import ClusterBalance, LoopCounts
from flows.runtime.settings import deployment_secret
from flows.runtime.signature import RecordSignature
from schemas.topics import BALANCE

pytestmark = pytest.mark.integration

#: How long two processes are given to find each other done.
WITHIN = 30.0


@pytest.mark.parametrize("failing_rounds", [0, 5])
def test_two_processes_find_the_cluster_done_though_rounds_of_one_failed(kafka, failing_rounds):
    """Process 0's counts fail its first rounds (a fault injected where the ledger is
    read): the round is said, the next goes on, and both processes still agree that the
    cluster is done. A thread that ended on the first failure would leave a bounded
    cluster run waiting for ever."""
    signature = RecordSignature(deployment_secret(required=True))
    left = [failing_rounds]
    lock = threading.Lock()

    def counts_of(process: int) -> Callable[[], LoopCounts]:
        def counts() -> LoopCounts:
            with lock:
                if process == 0 and left[0] > 0:
                    left[0] -= 1
                    raise RuntimeError("a fault injected into the counts")
            return LoopCounts(entered=4, settled=4, at_end=(process,))

        return counts

    balances = [
        ClusterBalance(
            kafka.librdkafka_config() | {"bootstrap.servers": kafka.bootstrap_servers},
            kafka.topic(BALANCE),
            group=kafka.group,
            process=process,
            processes=2,
            partitions=(0, 1),
            signature=signature,
            counts=counts_of(process),
        )
        for process in (0, 1)
    ]
    try:
        for balance in balances:
            balance.start()
        deadline = time.monotonic() + WITHIN
        while not all(b.done() for b in balances) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(b.done() for b in balances), "the cluster was never found done"
        assert left[0] == 0  # (every failing round was tried)
    finally:
        for balance in balances:
            balance.stop()
