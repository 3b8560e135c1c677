"""Deterministic English sentences for the synthetic (flite) voices of the `mini` corpus.

Debian's recorded prompts ship without transcripts, and the synthetic voices need text that no
download provides, so sentences are composed from a small grammar in the spirit of the Harvard
sentences: short, everyday and phonetically varied. Sentence ``i`` is a pure function of ``i``, so a
sentence id always names the same text and can be put in exactly one split.
"""
from __future__ import annotations

import random

_SUBJECTS = [
    "the old fisherman", "a small girl", "the tired nurse", "our neighbour", "the young pilot",
    "a quiet student", "the baker", "my brother", "the farmer", "a friendly dog", "the captain",
    "her grandmother", "the engineer", "a tall stranger", "the gardener", "the postman",
]
_VERBS = [
    "carried", "painted", "dropped", "found", "washed", "fixed", "sold", "bought", "opened",
    "cleaned", "lifted", "counted", "wrapped", "pushed", "borrowed", "measured",
]
_OBJECTS = [
    "a heavy wooden box", "the red kite", "six fresh lemons", "the broken clock", "a jar of honey",
    "the blue umbrella", "a stack of letters", "the copper kettle", "two loaves of bread",
    "the silver spoon", "a basket of plums", "the paper lantern", "a coil of rope", "the green bottle",
]
_PLACES = [
    "near the harbour", "before the storm", "across the narrow bridge", "in the morning light",
    "behind the church", "under the old oak", "after the long walk", "beside the quiet river",
    "at the crowded market", "on the top shelf", "during the cold night", "by the kitchen window",
]
_CODAS = [
    "and then went home", "while the rain fell", "without a single word", "as the bell rang",
    "because the road was closed", "just in time for supper", "and laughed about it later",
    "before anyone noticed", "with great care", "for the third time this week",
]


def sentence(index: int) -> str:
    rng = random.Random(f"sezoo-sentence-{index}")
    words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_PLACES)]
    if rng.random() < 0.6:
        words.append(rng.choice(_CODAS))
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."
