"""The shape every inference kind follows (Hugging Face pipelines style).

sanitize_params -> preprocess (tokenize, pad to the batch's longest) -> _forward (device work
under inference_mode) -> postprocess (JSON-ready dicts). `run` chains them for one
micro-batch that shares one parameter set; batching across items is the engine's job.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from nightowl.common.enums import TaskKind
from nightowl.common.errors import InvalidInput, InvalidParams
from nightowl.common.tokens import POSITION_FIELDS, input_room, too_long
from nightowl.common.tokens import position_limit as model_position_limit
from nightowl.common.values import param_bool, param_float, param_int

__all__ = ["Runner", "param_bool", "param_float", "param_int"]

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

    from nightowl_workers.runners.streaming import TextListener

# A text's token ids and token type ids, special tokens included.
Encoded = tuple[list[int], list[int]]
# Per thread: the listeners of the micro-batch this thread is running (Runner.listening).
_listening = threading.local()


class Runner(ABC):
    kind: ClassVar[TaskKind]
    # Encoder classifiers may use segment ids; decoders would misread them (GPT-2 embeds
    # token_type_ids with the word embeddings), so only runners that opt in receive them.
    uses_token_type_ids: ClassVar[bool] = False

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device

    # --- parameters ---------------------------------------------------------------------

    @abstractmethod
    def sanitize_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and complete user parameters; raise InvalidParams naming field and range.

        Idempotent: the result passes through again unchanged, so callers may sanitize early
        (to report bad items) and `run` may sanitize again.
        """

    def _reject_unknown(self, params: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise InvalidParams(
                f"unknown parameter(s) {', '.join(map(repr, unknown))} for {self.kind.value}; "
                f"allowed: {', '.join(allowed) or 'none'}",
                [(name, "not a parameter of this task") for name in unknown],
            )

    # --- sizes ----------------------------------------------------------------------------

    def encode(self, texts: list[str]) -> list[Encoded]:
        """Each text's token ids as the model would see them (special tokens included, no
        truncation). The engine measures with these and `run` pads them, so a text is
        tokenized once."""
        if not texts:
            return []
        if self._backend is not None:
            return [(e.ids, e.type_ids) for e in self._backend.encode_batch(texts)]
        encoded = self.tokenizer(
            texts, add_special_tokens=True, return_attention_mask=False,
            return_token_type_ids=True, verbose=False,
        )
        type_ids = encoded.get("token_type_ids") or [[0] * len(ids) for ids in encoded["input_ids"]]
        return list(zip(encoded["input_ids"], type_ids, strict=True))

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text as the model would see them (special tokens included, no truncation)."""
        return [len(ids) for ids, _ in self.encode(texts)]

    @cached_property
    def _backend(self) -> Tokenizer | None:
        """A private copy of the fast tokenizer's Rust backend, set to neither pad nor truncate
        (None for a tokenizer without one).

        A copy, because transformers re-configures the shared backend's padding and truncation
        on every call; calling the backend directly also skips the Python wrapper, which costs
        as much as the tokenizing itself on short texts."""
        shared = getattr(self.tokenizer, "backend_tokenizer", None)
        if shared is None:
            return None
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(shared.to_str())
        backend.no_padding()
        backend.no_truncation()
        return backend

    def position_limit(self) -> int:
        """The longest sequence the model's position embeddings cover (nightowl.common.tokens' rule,
        the one submit applies to the model's files)."""
        config = self.model.config
        fields = {name: getattr(config, name, None) for name in POSITION_FIELDS}
        return model_position_limit(fields, getattr(self.tokenizer, "model_max_length", None))

    @property
    def max_input_tokens(self) -> int:
        return input_room(self.kind, self.position_limit())

    # --- text as it is generated --------------------------------------------------------

    @contextmanager
    def listening(self, listeners: Sequence[TextListener | None]) -> Iterator[None]:
        """Within: the rows of this thread's next forward tell these listeners (one per text,
        None for a text nobody follows) their text as it is generated. Runners that generate
        nothing ignore them."""
        saved = getattr(_listening, "value", None)
        _listening.value = listeners if any(x is not None for x in listeners) else None
        try:
            yield
        finally:
            _listening.value = saved

    @staticmethod
    def listeners() -> Sequence[TextListener | None] | None:
        found: Sequence[TextListener | None] | None = getattr(_listening, "value", None)
        return found

    # --- the four steps -----------------------------------------------------------------

    def preprocess(self, texts: list[str], params: dict[str, Any], truncate: bool) -> BatchEncoding:
        limit = self.max_input_tokens
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=truncate,
            max_length=limit if truncate else None,
            return_tensors="pt",
            return_attention_mask=True,
            return_token_type_ids=None if self.uses_token_type_ids else False,
            verbose=False,
        )
        if not truncate:
            lengths = encoded["attention_mask"].sum(dim=1).tolist()
            over = [n for n in lengths if n > limit]
            if over:
                raise InvalidInput(too_long(int(over[0]), limit))
        return self.to_device(encoded)

    def to_device(self, inputs: BatchEncoding) -> BatchEncoding:
        """Copy a CPU batch to the device. On CUDA through pinned memory without blocking the
        host: the copy is queued on the same stream as the forward that reads it, so it stays
        ordered, and the host can prepare the next batch meanwhile."""
        from transformers import BatchEncoding

        if self.device.type != "cuda":
            moved: BatchEncoding = inputs.to(self.device)
            return moved
        return BatchEncoding({
            name: value.pin_memory().to(self.device, non_blocking=True)
            if isinstance(value, torch.Tensor) else value
            for name, value in inputs.items()
        })

    def collate(self, encoded: list[Encoded], truncate: bool) -> BatchEncoding | None:
        """`preprocess` for texts already encoded: pad to the longest, as the tokenizer would.

        None when the tokenizer must do it after all (no pad token, or a text to truncate:
        truncation keeps the closing special tokens, which the tokenizer knows how to place)."""
        from transformers import BatchEncoding

        pad_id = self.tokenizer.pad_token_id
        width = max(len(ids) for ids, _ in encoded)
        if pad_id is None or width > self.max_input_tokens:
            return None
        left = self.tokenizer.padding_side == "left"
        names = self.tokenizer.model_input_names
        with_types = self.uses_token_type_ids and "token_type_ids" in names
        type_pad = getattr(self.tokenizer, "pad_token_type_id", 0) or 0
        # One flat tensor of every id, scattered into the padded batch through the mask: far
        # cheaper than torch.tensor() over a list of padded rows.
        lengths = torch.tensor([len(ids) for ids, _ in encoded])
        positions = torch.arange(width)
        mask = positions >= width - lengths[:, None] if left else positions < lengths[:, None]
        input_ids = torch.full(mask.shape, pad_id, dtype=torch.long)
        input_ids[mask] = torch.tensor([i for ids, _ in encoded for i in ids])
        data = {"input_ids": input_ids, "attention_mask": mask.long()}
        if with_types:
            types = torch.full(mask.shape, type_pad, dtype=torch.long)
            types[mask] = torch.tensor([t for _, type_ids in encoded for t in type_ids])
            data["token_type_ids"] = types
        return self.to_device(BatchEncoding(data))

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens dropped and spacing left exactly as produced."""
        text = self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text if isinstance(text, str) else "".join(text)

    def forward(self, inputs: BatchEncoding, params: dict[str, Any]) -> Any:
        with torch.inference_mode():
            return self._forward(inputs, params)

    @abstractmethod
    def _forward(self, inputs: BatchEncoding, params: dict[str, Any]) -> Any:
        """Device work only; runs under torch.inference_mode()."""

    @abstractmethod
    def postprocess(self, outputs: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One JSON-ready dict per input text, in input order."""

    def output_tokens(self, outputs: Any, count: int) -> list[int]:
        """Tokens produced per input text (all choices together); 0 where nothing is generated."""
        return [0] * count

    def prepare(
        self,
        texts: list[str],
        params: Mapping[str, Any],
        truncate: bool = False,
        encoded: list[Encoded] | None = None,
    ) -> Prepared:
        """The host-side half of a micro-batch: sanitize, pad and queue the copy to the device.

        Safe to run on another thread while the previous micro-batch's forward runs: it reads
        the tokenizer and writes only new tensors."""
        clean = self.sanitize_params(params)
        inputs = self.collate(encoded, truncate) if encoded else None
        if inputs is not None and encoded:
            # The lengths the host already knows: counting the device mask would wait for it.
            tokens_in = [len(ids) for ids, _ in encoded]
        else:
            inputs = self.preprocess(texts, clean, truncate)
            tokens_in = [int(n) for n in inputs["attention_mask"].sum(dim=1).tolist()]
        return Prepared(inputs, clean, tokens_in)

    def complete(self, prepared: Prepared) -> list[tuple[dict[str, Any], int, int]]:
        """The device half: forward, then one JSON-ready result per text."""
        outputs = self.forward(prepared.inputs, prepared.params)
        results = self.postprocess(outputs, prepared.params)
        tokens_out = self.output_tokens(outputs, len(prepared.tokens_in))
        return list(zip(results, prepared.tokens_in, tokens_out, strict=True))

    def run(
        self,
        texts: list[str],
        params: Mapping[str, Any],
        truncate: bool = False,
        encoded: list[Encoded] | None = None,
    ) -> list[tuple[dict[str, Any], int, int]]:
        """(output, tokens_in, tokens_out) per text, in input order, for one micro-batch.

        `encoded`, the texts' `encode()`, saves tokenizing them again."""
        if not texts:
            return []
        return self.complete(self.prepare(texts, params, truncate, encoded))


@dataclass
class Prepared:
    """A micro-batch ready for the forward: inputs on (or queued to) the device."""

    inputs: BatchEncoding
    params: dict[str, Any]
    tokens_in: list[int]


# --- parameter helpers shared by the runners ---------------------------------------------


# The helpers live in the core so that submit checks with the same rules
# (nightowl/common/values.py).
