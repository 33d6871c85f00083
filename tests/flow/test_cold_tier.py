"""The cold tier in the embedded flow: customers idle for an hour of event time leave
memory and come back, and nothing anyone reads changes."""

from pathlib import Path

from prometheus_client import REGISTRY

from flows.runtime.settings import ColdSettings
from tests.flow_helpers import EntryPoint, every_output, run_embedded, simulated

#: The flow tests' closed loop (some 10,000 records), a day of it: most customers are
#: idle for an hour somewhere in it.
CUSTOMERS, HOURS, SEED = 300, 24.0, 11


def _moves(way: str) -> float:
    return REGISTRY.get_sample_value("wayfinder_cold_tier_moves_total", {"way": way}) or 0.0


def test_customers_who_leave_memory_and_come_back_change_no_output(
    entry_point: EntryPoint, tmp_path: Path
) -> None:
    hot = tmp_path / "hot"
    run_embedded(entry_point, simulated(CUSTOMERS, HOURS, SEED), hot, cold=ColdSettings(None))
    left, returned = _moves("left"), _moves("returned")
    cold = tmp_path / "cold"
    run_embedded(
        entry_point,
        simulated(CUSTOMERS, HOURS, SEED),
        cold,
        cold=ColdSettings(after=3600.0, directory=tmp_path / "tier"),
    )
    assert _moves("left") - left > CUSTOMERS / 2
    assert _moves("returned") - returned > CUSTOMERS / 2
    expected, found = every_output(hot), every_output(cold)
    assert all(expected[name] for name in expected)
    for name, lines in expected.items():
        assert found[name] == lines, name
