import gc

import pytest

from flows.runtime.collector import SERVICE_MIDDLE, YOUNG, set_collector


@pytest.fixture
def thresholds():
    kept = gc.get_threshold()
    yield
    gc.set_threshold(*kept)


def test_the_youngest_generation_is_collected_less_often_the_others_as_they_were(thresholds):
    gc.set_threshold(700, 10, 10)
    set_collector()
    assert gc.get_threshold() == (YOUNG, 10, 10)


def test_a_collector_set_to_collect_less_often_or_turned_off_is_left_so(thresholds):
    gc.set_threshold(YOUNG * 2, 5, 5)
    set_collector()
    assert gc.get_threshold() == (YOUNG * 2, 5, 5)
    gc.set_threshold(0)
    set_collector()
    assert gc.get_threshold()[0] == 0


def test_a_service_collects_its_middle_generation_after_every_second_young_collection(
    thresholds,
):
    gc.set_threshold(700, 10, 10)
    set_collector(service=True)
    assert gc.get_threshold() == (YOUNG, SERVICE_MIDDLE, 10)
    gc.set_threshold(0)
    set_collector(service=True)
    assert gc.get_threshold()[0] == 0
