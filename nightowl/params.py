"""Each job kind's parameters, in one place: names, ranges, defaults and limits.

Torch-free, so the core (batch lines, HTTP endpoints) checks a request with the same
definition the worker's runner applies; a runner reads its names and limits from here.
"""

from __future__ import annotations

from nightowl.enums import TaskKind

# Generation
DEFAULT_MAX_NEW_TOKENS = 32
MAX_RETURN_SEQUENCES = 8
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 200
MAX_TOP_LOGPROBS = 20
# OpenAI's range for presence_penalty and frequency_penalty.
PENALTY_RANGE = (-2.0, 2.0)
# torch.manual_seed takes a non-negative 64-bit integer.
SEED_RANGE = (0, 2**63 - 1)
MAX_TOP_K = 1_000_000
GENERATE_PARAMS = (
    "max_new_tokens", "temperature", "top_p", "top_k", "do_sample", "seed",
    "num_return_sequences", "stop", "logprobs", "top_logprobs", "presence_penalty",
    "frequency_penalty", "repetition_penalty",
)
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")

# Translation
DEFAULT_TRANSLATE_NEW_TOKENS = 128
MAX_BEAMS = 8
TRANSLATE_PARAMS = ("max_new_tokens", "num_beams")

# Sentiment
SENTIMENT_PARAMS = ("all_scores",)

# Embeddings: `dimensions` keeps the first N components (then normalises again, as OpenAI's
# text-embedding-3 models do); encoding_format only changes how the vector is written out.
EMBED_PARAMS = ("dimensions", "normalize")
ENCODING_FORMATS = ("float", "base64")

PARAMS: dict[TaskKind, tuple[str, ...]] = {
    TaskKind.GENERATE: GENERATE_PARAMS,
    TaskKind.TRANSLATE: TRANSLATE_PARAMS,
    TaskKind.SENTIMENT: SENTIMENT_PARAMS,
    TaskKind.EMBED: EMBED_PARAMS,
}
