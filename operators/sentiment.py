"""Sentiment: what customers say, turned into one signal in the customer context.

Free text (chat, email, social, call notes) is scored with a small customer-service
lexicon written below, so the hot path needs no NLP package, no model and no
download, and the same text always scores the same. Survey scores (NPS, CSAT) map
onto the same [-1, 1] scale, and `observe` folds both into a time-decayed average
in event time, so a replay of history gives the same signal.
"""

import itertools
import math
import re

from state.context import SentimentSignal

__all__ = [
    "SentimentSignal",
    "event_sentiment",
    "lexicon_size",
    "observe",
    "survey_sentiment",
    "text_sentiment",
]

# --- the lexicon ------------------------------------------------------------------
# One line per valence (about -4 .. +4), entries separated by commas. Entries with
# spaces are phrases, matched as whole token sequences (longest first) and taking
# precedence over their words: "not working", "no problem", "cancel my contract".
_VALENCES = """
-3.5: worst, horrendous, abysmal, disgraceful, scam, scammers, thieves, daylight robbery,
      absolute joke, thanks for nothing, fed up, sick of, sick and tired, hate, furious,
      livid, outraged, disgusted, lost my money, formal complaint, legal action, 🤬, 😡,
      fuck, fucked
-3.0: useless, terrible, awful, horrible, appalling, pathetic, ridiculous, disgusting,
      unacceptable, shocking, incompetent, rubbish, garbage, trash, shambles, nightmare,
      disaster, hopeless, worthless, outrageous, scandalous, sucks, crap, wtf, angry,
      waste of time, waste of money, never again, cancel my contract, cancel the contract,
      cancel my account, cancel my subscription, cancel my membership, close my account,
      closing my account, terminate my contract, can't cancel, cannot cancel,
      no longer works, no longer working, report you, ombudsman, fraud, 💩, 🖕,
      worst service, not good enough, 😠, 😤, 😭,
      # German, French, Spanish, Dutch
      katastrophe, katastrophal, unverschämt, frechheit, nutzlos, inacceptable, nul,
      nulle, lamentable, inaceptable, pésimo, pésima, vergonzoso, waardeloos, belachelijk
-2.5: still not working, waited for hours, waiting for hours, waited hours, on hold for hours,
      hours on hold, third time, 3rd time, fourth time, 4th time, fifth time, 5th time,
      again and again, over and over, yet again, countless times, frustrated, frustrating,
      infuriating, upset, disappointed, disappointing, unhappy, bad, broken, poor, worse,
      not working, isn't working, isnt working, stopped working, never works, nothing works,
      doesn't work, doesnt work, does not work, didn't work, didnt work, did not work,
      don't work, do not work, won't work, not work, keeps failing, unhelpful, rude, lied,
      lying, overcharged, charged twice, double charged, stolen, messed up, screwed up,
      where is my money, 😞, 😢, 👎, :'(, </3, unreliable,
      schlecht, enttäuscht, enttäuschend, ärgerlich, sauer, funktioniert nicht, mauvais,
      mauvaise, déçu, déçue, décevant, énervé, mécontent, insatisfait, ne marche pas,
      ne fonctionne pas, malo, mala, molesto, enojado, decepcionado, no funciona, slecht,
      teleurgesteld, boos, werkt niet
-2.0: annoyed, annoying, failed, failing, failure, fail, fails, crashed, crashes, crashing,
      problem again, locked out, can't log in, cant log in, cannot log in, can't login,
      can't access, cannot access, still waiting, never received, never arrived,
      never came, hasn't arrived, hasnt arrived, didn't arrive, haven't received,
      havent received, no response, no reply, no answer, no one answers, nobody answers,
      nobody called, no one called, never called back, ignored, ignoring, complaint,
      complain, complaining, misleading, hidden fees, hidden charges, sad, stress,
      stressful, stressed, impossible, nonsense, damn, hell, mess, joke, a joke, keeps dropping,
      overpriced, wrong again, ugh, :(, :-(, :((, =(, 😒, 😩, 😫, 🤦, 😔, 😣, 😖,
      speak to a manager, speak to your manager, speak to a supervisor, 🙁, ☹,
      kündigen, kündige, beschwerde, ärger, résilier, plainte, reclamación, queja,
      cancelar, klacht, opzeggen
-1.5: wrong, error, errors, problem, problems, bug, glitch, slow, delay, delays, delayed,
      confusing, confused, difficult, declined, rejected, blocked, missing, lost, worried,
      anxious, inconvenient, inconvenience, hassle, expensive, unable, stuck, outage,
      not received, not arrived, no signal, unfair, unclear, second time, 2nd time, several times,
      many times, multiple times, three times, twice now, didn't help, did not help,
      didn't order, didn't explain, too long, took ages, ages, cancel, cancelling, canceling,
      refund, unfortunately, can't believe, cannot believe, smh, 🙄, :/, :-/,
      problème, problema, probleem, fehler, lento, langsam, traag
-1.0: issue, issues, concerned, complicated, late, dropping, sadly, charged again,
      extra charge, weird, strange, meh
0.5:  ok, okay, fine, alright, all right
1.0:  no problem, no problems, not a problem, no worries, no issues, no issue, fair, simple,
      clear, solution, good enough, not too bad, works now, it works, it's working,
      working again, works again, working fine, on time
1.5:  thank, thx, cheers, quick, quickly, fast, polite, easy, smooth, fixed, helped,
      reliable, better, improved, professional, patient, responsive, convenient, prompt,
      promptly, successfully, sweet, cool, not bad, relieved, wow, :), :-), =), ;), ;-),
      🙂, 🙏, ☺, gracias, bueno, buena, gut, bien, goed, dank, bedankt, merci, danke
2.0:  thanks, thank you, thank u, many thanks, thanks again, appreciate, appreciated,
      satisfied, glad, friendly, kind, efficient, seamless, resolved, solved, sorted,
      recommend, useful, valuable, worth it, good value, success, successful, relief,
      enjoy, enjoyed, pleasant, yay, super, best, not bad at all, good, nice, working perfectly,
      all good, :)), :d, :-d, xd, 😀, 😃, 😄, 🙌, 👌, 👍, 😉, 😊, 😁,
      zufrieden, prima, satisfait, contento, tevreden, danke schön, merci beaucoup,
      muchas gracias, dank je, dank u, hartelijk dank
2.5:  happy, pleased, helpful, grateful, impressed, impressive, lovely, well done, good job,
      great job, nice job, spot on, sorted it, all sorted, thanks a lot, kudos, bravo,
      legend, hero, woohoo, quick fix, ❤, 💯, 🥰, <3, 🎉, genial, génial, geweldig,
      sehr gut, très bien, muy bien, heel goed
3.0:  great, amazing, excellent, fantastic, brilliant, superb, perfect, wonderful, awesome,
      love, loved, love it, delighted, incredible, lifesaver, life saver, top notch,
      works perfectly, thanks so much, thank you so much, thank you very much,
      thanks very much, much appreciated, 😍, 🤩, 🥳, excelente, parfait, parfaite,
      perfecto, perfekt, super gut, uitstekend, ausgezeichnet
3.5:  outstanding, exceptional, above and beyond, best service, absolutely brilliant,
      couldn't be happier, could not be happier, cannot thank you enough,
      can't thank you enough
"""

# Multiply the next sentiment within two words: "very", "so", ALL CAPS is one more.
_BOOSTERS = """
1.5: extremely, incredibly, utterly, fucking, insanely, ridiculously
1.4: absolutely, completely, totally, seriously, bloody, very very
1.3: very, so, really, highly, truly, most, such, constantly, always, sehr, très, muy,
     erg, zeer, echt, wirklich, vraiment, realmente, súper, mega
1.2: too, much, still, keeps, keep, kept, way, far, pretty, quite, just, even,
     genuinely, especially, particularly
0.7: somewhat, kind of, sort of, kinda, sorta, fairly, partly, rather, etwas, un peu,
     un poco, een beetje, ein bisschen, ein wenig
0.6: a bit, a little, slightly, mildly, marginally, a tad, a touch, little bit
"""

# Flip (and damp) the sentiment in the next three words: "not happy", "never works".
_NEGATORS = """
not, no, never, none, nothing, nobody, no one, neither, nor, without, cannot, hardly,
can't, cant, don't, dont, doesn't, doesnt, didn't, didnt, isn't, isnt, wasn't, wasnt,
aren't, arent, weren't, werent, won't, wont, wouldn't, wouldnt, couldn't, couldnt,
shouldn't, shouldnt, haven't, havent, hasn't, hasnt, hadn't, hadnt, ain't, nowhere,
no longer,
nicht, kein, keine, keinen, keiner, nie, niemals, nichts, pas, jamais, rien, ne, nunca,
nada, ni, tampoco, niet, geen, nooit, niets
"""

# "good, but it crashed": what follows weighs more than what came before.
_CONTRASTS = "but, however, yet, aber, mais, pero, maar"

# Strengthen the sentiment just said: "not happy at all".
_AFTERWORDS = "1.3: at all, whatsoever, ever again"

# Look like sentiment but are not: an email's "Kind regards", "good morning".
_NEUTRALS = """
kind regards, best regards, warm regards, kindest regards, best wishes, good morning,
good afternoon, good evening, good day, good night, pretty much, as good as
"""

# --- tokenising -------------------------------------------------------------------
_EMOTICONS = sorted(
    {":)", ":-)", ":))", "=)", ";)", ";-)", ":(", ":-(", ":((", "=(", ":'(", "</3", "<3"},
    key=len,
    reverse=True,
)
_TOKEN = re.compile(
    "|".join(
        [
            *(re.escape(e) for e in _EMOTICONS),
            r":-?/(?!/)",  # a wry ":/", not the "://" of a link
            r":-?[dD](?![^\W_])",  # ":D", not ":Done"
            r"[\U0001F300-\U0001F3FA\U0001F400-\U0001FAFF\u2600-\u27BF]",  # emoji, no skin tone
            r"[^\W_]+(?:'[^\W_]+)*",  # words, numbers, "don't", "3rd"
            r"[!?]+",
            r"[.,;:]",
        ]
    )
)
_CLAUSE_END = frozenset(".,;:!?")

# Entry kinds.
_VALENCE, _BOOST, _NEGATE, _CONTRAST, _AFTER, _NEUTRAL = range(6)

#: How much a negated word keeps: "not happy" is clearly negative, "not terrible"
#: only mildly positive.
NEGATED_POSITIVE = -0.75
NEGATED_NEGATIVE = -0.4
#: ALL CAPS on a sentiment word, a booster or a negator.
CAPS_BOOST = 1.3
#: Each "!" adds this much in the direction of the sentiment (up to four).
EXCLAMATION = 0.25
#: Before "but" counts half, after it one and a half.
BEFORE_CONTRAST, AFTER_CONTRAST = 0.5, 1.5
#: x / sqrt(x^2 + ALPHA): one strong word ~ ±0.6, three ~ ±0.9.
ALPHA = 15.0
NEGATION_SCOPE = 3
BOOST_SCOPE = 2


def _entries(block: str, default: float = 0.0) -> list[tuple[float, str]]:
    """Parse "value: a, b, c" lines (or a bare list) into (value, entry) pairs."""
    pairs: list[tuple[float, str]] = []
    value = default
    for raw in block.strip().splitlines():
        line = raw.split("#", 1)[0] if raw.lstrip().startswith("#") else raw
        head, sep, rest = line.partition(": ")
        if sep and head.strip().lstrip("-").replace(".", "", 1).isdigit():
            value, line = float(head), rest
        pairs += [(value, e.strip()) for e in line.split(",") if e.strip()]
    return pairs


# token -> (kind or None, value, ((rest of phrase, kind, value), ...) longest first)
_Entry = tuple[int | None, float, tuple[tuple[list[str], int, float], ...]]


def _build() -> tuple[dict[str, _Entry], int]:
    """Compile the word lists into one lookup table keyed by (first) token."""
    singles: dict[str, tuple[int, float]] = {}
    phrases: dict[str, list[tuple[list[str], int, float]]] = {}
    seen: set[tuple[str, ...]] = set()
    n_valence = 0
    groups = [
        (_VALENCE, _entries(_VALENCES)),
        (_BOOST, _entries(_BOOSTERS)),
        (_NEGATE, _entries(_NEGATORS, -1.0)),
        (_CONTRAST, _entries(_CONTRASTS)),
        (_AFTER, _entries(_AFTERWORDS)),
        (_NEUTRAL, _entries(_NEUTRALS)),
    ]
    for kind, pairs in groups:
        for value, entry in pairs:
            tokens = tuple(t.lower() for t in _TOKEN.findall(entry))
            if not tokens or tokens in seen:
                raise ValueError(f"sentiment lexicon: empty or duplicate entry {entry!r}")
            seen.add(tokens)
            n_valence += kind == _VALENCE
            if len(tokens) == 1:
                singles[tokens[0]] = (kind, value)
            else:
                phrases.setdefault(tokens[0], []).append((list(tokens[1:]), kind, value))
    table: dict[str, _Entry] = {}
    for token in singles.keys() | phrases.keys():
        single = singles.get(token)
        conts = sorted(phrases.get(token, []), key=lambda c: len(c[0]), reverse=True)
        table[token] = (
            single[0] if single else None,
            single[1] if single else 0.0,
            tuple(conts),
        )
    return table, n_valence


_TABLE, _N_VALENCE = _build()


def lexicon_size() -> int:
    """How many sentiment words, phrases and emoticons the lexicon holds."""
    return _N_VALENCE


def text_sentiment(text: str) -> float | None:
    """Polarity of free text in [-1, 1]; None when no word in it carries sentiment.

    None and 0.0 differ on purpose: "Can you tell me my balance?" says nothing about
    how the customer feels and must not pull their signal towards neutral.
    """
    if not text:
        return None
    if "’" in text:
        text = text.replace("’", "'")
    toks = _TOKEN.findall(text)
    lows = [t.lower() for t in toks]
    n = len(toks)
    total = 0.0
    found = False
    weight = 1.0  # clause weight: 1.5 after "but"
    boost, boost_left = 1.0, 0
    neg_left = 0
    bangs = 0
    last = 0.0  # the last contribution, for "at all"
    i = 0
    table = _TABLE
    while i < n:
        low = lows[i]
        entry = table.get(low)
        if entry is not None:
            kind, value, conts = entry
            span = 1
            for rest, c_kind, c_value in conts:
                m = len(rest)
                if lows[i + 1 : i + 1 + m] == rest:
                    kind, value, span = c_kind, c_value, m + 1
                    break
        else:
            kind = None
        if kind is None:
            if low[0] in _CLAUSE_END:
                bangs += low.count("!")
                boost, boost_left, neg_left, last = 1.0, 0, 0, 0.0
            else:
                if neg_left:
                    neg_left -= 1
                if boost_left:
                    boost_left -= 1
                    if not boost_left:
                        boost = 1.0
            i += 1
            continue
        caps = False
        for j in range(i, i + span):
            tok = toks[j]
            if len(tok) > 2 and tok.isupper():
                caps = True
                break
        i += span
        if kind == _VALENCE:
            v = value * CAPS_BOOST if caps else value
            if boost_left:
                v *= boost
            if neg_left:
                v *= NEGATED_POSITIVE if v > 0 else NEGATED_NEGATIVE
            last = v * weight
            total += last
            found = True
            boost, boost_left = 1.0, 0
            neg_left = max(neg_left - span, 0)
        elif kind == _BOOST:
            boost *= value * CAPS_BOOST if caps else value
            boost_left = BOOST_SCOPE
            neg_left = max(neg_left - span, 0)
        elif kind == _NEGATE:
            neg_left = NEGATION_SCOPE
            if caps:
                boost *= CAPS_BOOST
                boost_left = NEGATION_SCOPE
        elif kind == _CONTRAST:
            total *= BEFORE_CONTRAST
            weight = AFTER_CONTRAST
            boost, boost_left, neg_left, last = 1.0, 0, 0, 0.0
        elif kind == _AFTER:
            total += last * (value - 1.0)
            last *= value
        else:  # _NEUTRAL: ordinary words that only look like sentiment
            neg_left = max(neg_left - span, 0)
            boost_left = max(boost_left - span, 0)
            if not boost_left:
                boost = 1.0
    if not found:
        return None
    if bangs and total:
        total += math.copysign(EXCLAMATION * min(bangs, 4), total)
    return total / math.sqrt(total * total + ALPHA)


#: NPS anchors (score, sentiment), interpolated linearly in between: NPS is
#: categorical (detractor 0-6, passive 7-8, promoter 9-10), so each category gets
#: its own stretch instead of one straight line through a neutral 5.
NPS_ANCHORS = ((0.0, -1.0), (6.0, -0.4), (7.0, -0.05), (8.0, 0.15), (9.0, 0.6), (10.0, 1.0))


def survey_sentiment(score: float, scale: str = "auto") -> float:
    """A survey score on the text's [-1, 1] scale, so both feed one signal.

    scale: "nps" (0-10, see NPS_ANCHORS), "csat" (1-5 linear: 1 -> -1, 3 -> 0,
    5 -> 1) or "auto", which is NPS: a bare number cannot tell a CSAT 5 from an
    NPS 5, so CSAT must be asked for. Scores outside the scale are clamped.
    """
    if scale == "csat":
        return max(-1.0, min(1.0, (score - 3.0) / 2.0))
    if scale not in ("nps", "auto"):
        raise ValueError(f"unknown survey scale {scale!r}: use 'nps', 'csat' or 'auto'")
    if score <= NPS_ANCHORS[0][0]:
        return NPS_ANCHORS[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(NPS_ANCHORS):
        if score <= x1:
            return y0 + (y1 - y0) * (score - x0) / (x1 - x0)
    return NPS_ANCHORS[-1][1]


#: Past samples count as at most this many fresh ones, so a new sample always moves
#: the signal by at least 1 / (MEMORY_SAMPLES + 1), even within one chat.
MEMORY_SAMPLES = 3


def observe(
    signal: SentimentSignal,
    sample: float,
    at: float,
    half_life_s: float = 7 * 86400,
    *,
    memory: int = MEMORY_SAMPLES,
) -> SentimentSignal:
    """Fold one sample, taken at event time `at`, into the signal (in place) and return it.

    A weighted mean of the old value and the sample: the old value weighs as
    min(samples, memory) fresh samples, halved for every `half_life_s` of event
    time since the last sample, so a month-old mood fades and a burst of messages
    averages instead of only the first one counting. The first sample sets the
    value. A late sample (at < last_at) decays nothing (elapsed is 0); it weighs
    itself as old as it is, so late arrival changes little against in-order replay.
    """
    if half_life_s <= 0:
        raise ValueError("half_life_s must be positive")
    if math.isnan(sample):
        return signal
    sample = max(-1.0, min(1.0, sample))
    if signal.samples == 0:
        signal.value = signal.lowest = sample
        signal.samples, signal.last_at = 1, at
        return signal
    elapsed = at - signal.last_at
    if elapsed >= 0:
        old = min(signal.samples, memory) * 0.5 ** (elapsed / half_life_s)
        new = 1.0
        signal.last_at = at
    else:
        old = float(min(signal.samples, memory))
        new = 0.5 ** (-elapsed / half_life_s)
    signal.value = (old * signal.value + new * sample) / (old + new)
    signal.samples += 1
    signal.lowest = min(signal.lowest, sample)
    return signal


def event_sentiment(text: str | None, score: float | None, *, scale: str = "auto") -> float | None:
    """The sample an event carries: its survey score, its text, their mean if both.

    None when neither says anything, so the signal is left as it is.
    """
    survey = survey_sentiment(score, scale) if score is not None else None
    said = text_sentiment(text) if text else None
    if survey is None:
        return said
    if said is None:
        return survey
    return (survey + said) / 2.0
