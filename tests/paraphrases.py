"""A captioned library whose queries share no keyword with their captions: only a model of meaning finds them.

Each pair is (the photo's caption, a paraphrase a person might type). No word of two or more letters of a
query appears in its own caption (tests/test_caption_model.py checks that), so BM25 cannot find it.
"""
from __future__ import annotations

PAIRS = [
    ("a cat asleep on the sofa", "kitten napping atop a couch"),
    ("children building a sandcastle at the beach", "kids playing by seaside"),
    ("a dog catching a frisbee in the park", "puppy grabbing flying disc outdoors"),
    ("a plate of spaghetti with tomato sauce", "pasta dinner"),
    ("snow covered mountains under a blue sky", "alpine peaks during winter"),
    ("a man riding a bicycle down the street", "guy cycling through town"),
    ("fireworks exploding over the city at night", "pyrotechnics above downtown after dark"),
    ("a bride and groom cutting their wedding cake", "newlyweds slicing dessert at marriage reception"),
    ("an old car parked beside a barn", "vintage automobile next to farm building"),
    ("a woman reading a book in the library", "lady studying novel among bookshelves"),
    ("sunset over the ocean with orange clouds", "dusk sky above sea"),
    ("a birthday party with balloons and candles", "festive celebration for turning five"),
    ("a baby laughing in the bathtub", "infant giggling while getting washed"),
    ("a red fox walking through snow", "wild animal trotting across wintry field"),
    ("an airplane taking off from the runway", "jet departing airport"),
    ("a bowl of fresh strawberries", "ripe fruit served in dish"),
    ("two friends hiking on a forest trail", "pals trekking among woods"),
    ("a crowded train station during rush hour", "busy railway terminal at commute time"),
    ("a lighthouse on a rocky coast", "beacon tower by cliffs near sea"),
    ("a chef cooking in a restaurant kitchen", "professional preparing meals at diner"),
]
# The issue's own example, which shares "on" and "the" with its caption (stop words, dropped by BM25).
KITTEN = ("a cat asleep on the sofa", "kitten napping on the couch")


# Free-standing texts about other things, so the vector routes rank the whole vocabulary of a library, not
# twenty captions: 15 x 5 x 5 = 375 of them.
DOCUMENTS = ["receipt", "invoice", "screenshot", "passport scan", "parking ticket", "whiteboard notes",
             "circuit board", "tax form", "boarding pass", "utility bill", "grocery list", "x-ray", "spreadsheet",
             "bus timetable", "museum ticket"]
SHOTS = ["blurry photo of a", "scan of a", "close-up of a", "photo of a", "picture of a"]
CONTEXTS = ["from 2019", "on the desk", "in the drawer", "at the office", "for the insurance claim"]
DISTRACTORS = [f"{shot} {doc} {context}" for doc in DOCUMENTS for shot in SHOTS for context in CONTEXTS]


def recall(ranked: list[list[str]], wanted: list[str], k: int) -> float:
    """The share of queries whose wanted caption is among their first k results."""
    return sum(want in got[:k] for got, want in zip(ranked, wanted)) / len(wanted)
