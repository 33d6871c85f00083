import argparse

import pytest

from flows.cli.options import positive_float
from flows.runtime.runner import EPOCH_SECONDS, SERVICE_EPOCH_SECONDS, epoch_seconds


def test_a_service_without_recovery_ends_its_epochs_every_second():
    assert epoch_seconds(None, service=True, recovery=False) == SERVICE_EPOCH_SECONDS == 1.0


def test_a_replay_or_a_run_with_recovery_ends_them_every_ten_seconds():
    assert epoch_seconds(None, service=False, recovery=False) == EPOCH_SECONDS == 10.0
    assert epoch_seconds(None, service=False, recovery=True) == EPOCH_SECONDS
    assert epoch_seconds(None, service=True, recovery=True) == EPOCH_SECONDS


def test_the_epoch_length_a_run_asks_for_is_kept_for_any_kind():
    assert epoch_seconds(0.3, service=True, recovery=False) == 0.3
    assert epoch_seconds(0.3, service=True, recovery=True) == 0.3
    assert epoch_seconds(30.0, service=False, recovery=False) == 30.0


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon"])
def test_an_epoch_length_is_a_number_of_seconds_above_zero(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)
    assert positive_float("0.05") == 0.05
