"""Sentiment core: customer words and survey scores become one decayed signal."""

import itertools
import math

import msgspec
import pytest

from operators.sentiment import (
    SentimentSignal,
    event_sentiment,
    lexicon_size,
    observe,
    survey_sentiment,
    text_sentiment,
)

DAY = 86400.0
WEEK = 7 * DAY


def score(text: str) -> float:
    """The polarity of a text that is expected to carry sentiment."""
    value = text_sentiment(text)
    assert value is not None, f"no sentiment found in {text!r}"
    return value


# --- text ------------------------------------------------------------------------


def test_angry_repeat_contact_is_strongly_negative():
    text = "This is the third time I call about my transfer and it is STILL not working!!!"
    assert score(text) < -0.75


def test_thanks_for_a_fix_is_positive():
    assert score("Thanks, that sorted it, brilliant service") > 0.7


def test_wanting_to_cancel_the_contract_is_negative():
    assert score("I want to cancel my contract") < -0.4


@pytest.mark.parametrize(
    "text",
    [
        "Can you tell me my balance?",
        "What finance options do you have?",
        "I need this payment to reach my landlord today",
        "Kind regards, Anna",
        "see https://bank.example/help",
        "",
        "!!!",
    ],
)
def test_text_without_sentiment_words_is_none(text):
    assert text_sentiment(text) is None


def test_negation_flips_polarity():
    assert score("I am happy with the app") > 0.3
    assert score("I am not happy with the app") < -0.3
    assert score("it never works") < -0.3
    assert score("this isn't helpful") < 0


def test_negated_complaint_is_mildly_positive():
    assert 0 < score("not bad at all") < score("great")
    assert 0 < score("not terrible") < score("good")


def test_no_problem_is_not_negative():
    assert score("no problem, thanks") > 0
    assert score("No worries") >= 0


def test_negation_ends_at_the_clause():
    assert score("I did not expect it, great job") > 0.4


def test_intensifiers_strengthen_sentiment():
    assert score("very frustrating") < score("frustrating") < 0
    assert score("extremely helpful") > score("helpful") > 0


def test_shouting_and_exclamations_strengthen_sentiment():
    assert score("this is USELESS") < score("this is useless") < 0
    assert score("this is useless!!!") < score("this is useless")
    assert score("thanks!!") > score("thanks")


def test_diminishers_soften_sentiment():
    assert score("a bit annoyed") > score("annoyed")
    assert score("slightly disappointed") > score("disappointed")
    assert score("a bit annoyed") < 0


def test_what_follows_but_weighs_more():
    assert score("The app is nice but the transfer failed again") < 0
    assert score("It took a while, but the agent was brilliant") > 0


def test_emoticons_and_emoji_carry_sentiment():
    assert score("ok then :(") < 0
    assert score("😡") < -0.4
    assert score("all done 👍") > 0
    assert score("see you tomorrow :)") > 0


def test_case_does_not_matter_below_shouting():
    assert score("Useless") == score("useless") == score("uSeLeSs")


def test_typographic_apostrophes_count_as_negation():
    assert score("it doesn’t work") == score("it doesn't work") < 0


def test_common_words_in_other_languages_are_understood():
    assert score("Der Service ist sehr schlecht") < -0.4
    assert score("Merci beaucoup, parfait") > 0.4
    assert score("La app no funciona") < -0.4
    assert score("Bedankt, geweldig") > 0.4
    assert score("Das ist nicht gut") < 0


def test_polarity_stays_within_bounds():
    furious = " ".join(["useless terrible awful WORST scam!!!"] * 50)
    delighted = " ".join(["thanks so much, brilliant, perfect!!!"] * 50)
    assert -1 < score(furious) < -0.99
    assert 0.99 < score(delighted) < 1


@pytest.mark.parametrize(
    "text",
    [
        "My transfer failed and I don't know if the money left my account",
        "I tried to send money three times now, it keeps failing",
        "Why does my transfer keep getting declined?",
        "This is really frustrating, I have been at this for an hour",
        "Had to explain my problem three times",
        "Still not resolved",
        "Nobody called me back",
        "Waited for hours on hold, ridiculous",
        "I'm not happy at all :(",
    ],
)
def test_realistic_complaints_are_negative(text):
    assert score(text) < -0.3


@pytest.mark.parametrize(
    "text",
    [
        "Ok, thanks for sorting it",
        "Great, it went through now, thank you",
        "Perfect, thanks for your help",
        "Friendly agent, solved first time",
        "Very happy with the service",
        "Thanks so much, the new card arrived on time",
    ],
)
def test_realistic_praise_is_positive(text):
    assert score(text) > 0.4


def test_lexicon_holds_a_few_hundred_entries():
    assert 300 <= lexicon_size() <= 1000


# --- surveys ---------------------------------------------------------------------


@pytest.mark.parametrize("nps", [0, 3, 5, 6])
def test_detractor_nps_is_negative(nps):
    assert survey_sentiment(nps) < -0.3


@pytest.mark.parametrize("nps", [7, 8])
def test_passive_nps_is_near_neutral(nps):
    assert abs(survey_sentiment(nps)) <= 0.2


@pytest.mark.parametrize("nps", [9, 10])
def test_promoter_nps_is_positive(nps):
    assert survey_sentiment(nps) >= 0.5


def test_nps_maps_smoothly_and_monotonically_onto_minus_one_to_one():
    values = [survey_sentiment(s / 10) for s in range(101)]
    assert values[0] == -1.0
    assert values[-1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert max(b - a for a, b in itertools.pairwise(values)) < 0.05


def test_csat_maps_linearly():
    assert [survey_sentiment(s, "csat") for s in (1, 2, 3, 4, 5)] == [-1.0, -0.5, 0.0, 0.5, 1.0]


def test_auto_scale_reads_the_score_as_nps():
    assert survey_sentiment(5, "auto") == survey_sentiment(5, "nps") < 0


def test_scores_outside_the_scale_are_clamped():
    assert survey_sentiment(42) == 1.0
    assert survey_sentiment(-3) == -1.0
    assert survey_sentiment(0, "csat") == -1.0
    assert survey_sentiment(9, "csat") == 1.0


def test_unknown_survey_scale_is_rejected():
    with pytest.raises(ValueError, match="scale"):
        survey_sentiment(4, "stars")


# --- the signal ------------------------------------------------------------------


def test_first_sample_sets_the_value():
    signal = observe(SentimentSignal(), -0.6, at=1000.0)
    assert signal.value == -0.6
    assert signal.samples == 1
    assert signal.last_at == 1000.0
    assert signal.lowest == -0.6


def test_observe_updates_the_signal_in_place():
    signal = SentimentSignal()
    assert observe(signal, 0.5, at=0.0) is signal


def test_old_sentiment_decays_towards_new_samples():
    def angry_chat() -> SentimentSignal:
        signal = SentimentSignal()
        for t in (0.0, 30.0, 60.0):
            observe(signal, -0.8, at=t)
        return signal

    fresh = observe(angry_chat(), 0.8, at=120.0)
    weeks_later = observe(angry_chat(), 0.8, at=4 * WEEK)
    assert fresh.value < -0.3  # a minute later the angry chat still dominates
    assert weeks_later.value > 0.5  # a month later it has mostly faded


def test_old_value_weight_halves_every_half_life():
    signal = SentimentSignal()
    for t in range(3):
        observe(signal, -1.0, at=float(t))
    observe(signal, 1.0, at=2.0 + WEEK)
    # the past weighs as 3 samples halved once: (1.5 * -1 + 1 * 1) / 2.5
    assert signal.value == pytest.approx(-0.2, abs=1e-4)


def test_a_burst_of_messages_averages_instead_of_ignoring_all_but_the_first():
    signal = SentimentSignal()
    for i, sample in enumerate([0.6, -0.9, -0.9]):
        observe(signal, sample, at=100.0 + i)
    assert signal.value < -0.3
    assert signal.samples == 3


def test_every_new_sample_keeps_a_minimum_say():
    signal = SentimentSignal()
    for t in range(100):
        observe(signal, 1.0, at=float(t))
    observe(signal, -1.0, at=100.0)
    assert signal.value <= 0.5 + 1e-6  # past weighs as at most 3 samples


def test_out_of_order_sample_does_not_decay_backwards():
    on_time = observe(observe(SentimentSignal(), -0.5, at=10 * DAY), 1.0, at=10 * DAY)
    late = observe(observe(SentimentSignal(), -0.5, at=10 * DAY), 1.0, at=3 * DAY)
    assert late.last_at == 10 * DAY
    assert late.samples == 2
    assert -0.5 < late.value <= on_time.value
    # later decay still counts from the newest event time, not from the late one
    nxt = observe(late, 0.0, at=10 * DAY + WEEK)
    expected = (min(2, 3) * 0.5 * late.value + 0.0) / (min(2, 3) * 0.5 + 1)
    assert nxt.value == pytest.approx(expected)


def test_lowest_remembers_the_worst_moment():
    signal = SentimentSignal()
    for t, sample in enumerate([0.4, -0.9, 0.8, 0.9]):
        observe(signal, sample, at=t * DAY)
    assert signal.lowest == -0.9
    assert signal.value > 0


def test_signal_stays_within_bounds_and_ignores_nan():
    signal = observe(SentimentSignal(), 5.0, at=0.0)
    assert signal.value == 1.0
    observe(signal, math.nan, at=1.0)
    assert signal.value == 1.0
    assert signal.samples == 1


def test_non_positive_half_life_is_rejected():
    with pytest.raises(ValueError, match="half_life"):
        observe(SentimentSignal(), 0.1, at=0.0, half_life_s=0)


def test_signal_survives_a_snapshot_round_trip():
    signal = observe(observe(SentimentSignal(), -0.7, at=1.0), 0.2, at=2.0)
    raw = msgspec.msgpack.encode(signal)
    assert msgspec.msgpack.decode(raw, type=SentimentSignal) == signal


# --- events ----------------------------------------------------------------------


def test_event_sentiment_prefers_whatever_the_event_carries():
    assert event_sentiment(None, None) is None
    assert event_sentiment("Can you tell me my balance?", None) is None
    assert event_sentiment(None, 10) == 1.0
    assert event_sentiment("useless", None) == text_sentiment("useless")
    assert event_sentiment("Can you tell me my balance?", 0) == -1.0


def test_event_with_text_and_score_takes_their_mean():
    text = "Thanks, that sorted it, brilliant service"
    assert event_sentiment(text, 3) == pytest.approx((score(text) + survey_sentiment(3)) / 2)


def test_event_csat_score_can_be_read_on_its_own_scale():
    assert event_sentiment(None, 5, scale="csat") == 1.0
    nps = event_sentiment(None, 5)  # on the auto scale, 5 is a poor NPS
    assert nps is not None and nps < 0
