"""Each job kind's parameter names and limits, under the names the workers' runners import.

The definition is nightowl.specs (the per-kind models) and nightowl.values (the checkers);
a runner reads its names and limits from here and adds only what a loaded model knows (its
position limit, its width).
"""

from __future__ import annotations

from nightowl.specs import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TRANSLATE_NEW_TOKENS,
    EMBED_PARAMS,
    ENCODING_FORMATS,
    GENERATE_PARAMS,
    MAX_BEAMS,
    MAX_DIMENSIONS,
    MAX_NEW_TOKENS,
    MAX_RETURN_SEQUENCES,
    MAX_SEED,
    MAX_STOP_LENGTH,
    MAX_STOP_STRINGS,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    PARAMS,
    PENALTY_RANGE,
    SAMPLING_PARAMS,
    SEED_RANGE,
    SENTIMENT_PARAMS,
    TRANSLATE_PARAMS,
    check_params,
    stop_strings,
)
from nightowl.values import (
    MAX_DEADLINE,
    MAX_DEPTH,
    check_json,
    deadline,
    param_bool,
    param_float,
    param_int,
)

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS", "DEFAULT_TRANSLATE_NEW_TOKENS", "EMBED_PARAMS", "ENCODING_FORMATS",
    "GENERATE_PARAMS", "MAX_BEAMS", "MAX_DEADLINE", "MAX_DEPTH", "MAX_DIMENSIONS",
    "MAX_NEW_TOKENS", "MAX_RETURN_SEQUENCES", "MAX_SEED", "MAX_STOP_LENGTH", "MAX_STOP_STRINGS",
    "MAX_TOP_K", "MAX_TOP_LOGPROBS", "PARAMS", "PENALTY_RANGE", "SAMPLING_PARAMS", "SEED_RANGE",
    "SENTIMENT_PARAMS", "TRANSLATE_PARAMS", "check_json", "check_params", "deadline",
    "param_bool", "param_float", "param_int", "stop_strings",
]
