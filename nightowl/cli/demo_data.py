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
# In the vocabulary the offline tiny models were trained on, so the demo shows real outputs.
SENTENCES = ["the old dog sleeps", "i see the big house", "the cat is small", "a red car",
             "the young woman sings", "the green tree", "i see the black bird",
             "the child runs", "a beautiful flower", "the new book is good"]
PROMPTS = ["the old man walked to", "my friend looked at", "the teacher talked about",
           "a young woman waited near", "the children ran across", "the baker found",
           "my sister remembered", "the captain visited"]


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
    for i in range(n):
        yield {"custom_id": f"sentence-{i}", "source": SENTENCES[(i + seed) % len(SENTENCES)]}


def prompts(n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"custom_id": f"prompt-{i}", "text": PROMPTS[(i + seed) % len(PROMPTS)]}
