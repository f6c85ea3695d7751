"""Seeded synthetic inputs for the demo and the tests: reviews, sentences to translate, prompts."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

POSITIVE = ["wonderful", "great", "excellent", "delightful", "superb", "lovely", "brilliant",
            "moving", "charming", "fantastic"]
NEGATIVE = ["terrible", "awful", "boring", "dreadful", "bad", "horrible", "dull", "poor",
            "disappointing", "tedious"]
SUBJECTS = ["the movie", "this film", "the book", "the story", "the show", "the food",
            "the service", "this product", "the hotel", "the meal"]
EXTRAS = ["", "", ".", "!", " overall"]
SENTENCES = ["a man is riding a bike", "two dogs play in the park", "a woman reads a book",
             "the children are laughing", "a group of people walk down the street",
             "a little girl climbs the stairs", "an old man sits on a bench",
             "a dog runs through the snow", "the band plays on a stage", "a boy jumps into water"]
PROMPTS = ["Once upon a time", "The king said", "In the morning the city",
           "She opened the door and",
           "The best way to learn", "At night the river", "My friend told me", "The old house"]


def reviews(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        word = rng.choice(POSITIVE if rng.random() < 0.5 else NEGATIVE)
        yield {"custom_id": f"review-{i}",
               "text": f"{rng.choice(SUBJECTS)} was {word}{rng.choice(EXTRAS)}"}


def labelled_reviews(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for _ in range(n):
        positive = rng.random() < 0.5
        word = rng.choice(POSITIVE if positive else NEGATIVE)
        yield {"text": f"{rng.choice(SUBJECTS)} was {word}{rng.choice(EXTRAS)}",
               "label": "positive" if positive else "negative"}


def sentences(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        yield {"custom_id": f"sentence-{i}", "source": rng.choice(SENTENCES)}


def prompts(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        yield {"custom_id": f"prompt-{i}", "text": rng.choice(PROMPTS)}
