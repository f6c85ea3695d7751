"""Build small real models offline, so development and CI run the whole stack with no hub.

One byte-level BPE tokenizer is trained with `tokenizers` on text generated here from small
grammars, then four tiny models are trained for a few seconds each on CPU (toys: what they
say shows the platform working and means nothing):

- tiny-generator  (GPT-2): continues English-like sentences and ends paragraphs with </s>.
- tiny-translator (Marian): toy English -> German ("the red dog" -> "der rote hund").
- tiny-sentiment  (BERT):  positive / negative on obvious review sentences.
- tiny-embedder   (BERT):  the sentiment BERT's encoder, for embed jobs.

Every model directory is self-contained (config, model.safetensors, tokenizer.json,
tokenizer_config.json) and loads with the ordinary `from_pretrained`, so the platform treats
them exactly like hub models. A manifest written last marks a directory as complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.resources
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightowl.common.enums import TaskKind

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer
    from transformers import PreTrainedModel

# Bump when a recipe changes, so existing directories are rebuilt rather than trusted.
RECIPE_VERSION = 1
MANIFEST_NAME = "nightowl-bootstrap.json"
MAX_POSITIONS = 256
VOCAB_SIZE = 2048
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<mask>")
PAD, BOS, EOS = 0, 1, 2
# Optimiser steps per model: the fewest that still give the behaviour the tests check
# (sensible continuations, exact toy translations, obvious sentiment), to stay fast on 2 cores.
TRAIN_STEPS = {TaskKind.GENERATE: 140, TaskKind.TRANSLATE: 220, TaskKind.SENTIMENT: 60}

DEFAULT_MODELS: tuple[tuple[str, TaskKind], ...] = (
    ("tiny-generator", TaskKind.GENERATE),
    ("tiny-translator", TaskKind.TRANSLATE),
    ("tiny-sentiment", TaskKind.SENTIMENT),
    ("tiny-embedder", TaskKind.EMBED),
)


# (model, tokenizer, training report for the manifest)
_Built = tuple[Any, Any, dict[str, Any]]


@dataclass(frozen=True)
class BootstrapModel:
    name: str
    kind: TaskKind
    path: Path


def bootstrap_models(
    target_dir: Path, *, seed: int = 0, force: bool = False,
    on_built: Callable[[str, float], None] | None = None,
) -> list[BootstrapModel]:
    """Build the DEFAULT_MODELS under target_dir/<name>; already-built ones are left alone.

    Deterministic for a given seed on a given machine. A directory counts as built when its
    manifest names this recipe version and seed and every file it lists is present; `force`
    rebuilds regardless. Builds go to a temporary directory that is renamed into place, so a
    crash never leaves a half-written model that a later call would trust.
    """
    target_dir = Path(target_dir).expanduser()
    models = [BootstrapModel(name, kind, target_dir / name) for name, kind in DEFAULT_MODELS]
    if not force and all(_is_built(m.path, seed) for m in models):
        return models
    target_dir.mkdir(parents=True, exist_ok=True)
    # Two workers starting at once would otherwise both spend the build time and race the
    # rename; the second waits, then finds the manifests and returns.
    with open(target_dir / ".bootstrap.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = [m for m in models if force or not _is_built(m.path, seed)]
        if todo:
            _build(todo, seed, on_built)
    return models


def _is_built(path: Path, seed: int) -> bool:
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("recipe") != RECIPE_VERSION or manifest.get("seed") != seed:
        return False
    return all((path / name).is_file() for name in manifest.get("files", {}))


def _build(todo: list[BootstrapModel], seed: int,
           on_built: Callable[[str, float], None] | None = None) -> None:
    # Deferred so that importing nightowl_workers.bootstrap (e.g. for DEFAULT_MODELS) stays cheap.
    import torch

    builders: dict[TaskKind, Callable[[Tokenizer, Grammar, int], _Built]] = {
        TaskKind.GENERATE: _build_generator,
        TaskKind.TRANSLATE: _build_translator,
        TaskKind.SENTIMENT: _build_sentiment,
        TaskKind.EMBED: _build_embedder,
    }
    grammars = _load_grammars()
    base_tokenizer = _train_tokenizer(grammars, seed)
    # These ops are too small to gain from intra-op threads, and on a loaded 2-core host two
    # spinning threads measured 7x the CPU time of one; restored afterwards for the caller.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model_spec in todo:
            started = time.perf_counter()
            _build_one(model_spec, builders[model_spec.kind], base_tokenizer, grammars, seed)
            if on_built is not None:
                on_built(model_spec.name, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)


def _build_one(
    model_spec: BootstrapModel,
    builder: Callable[[Tokenizer, Grammar, int], _Built],
    base_tokenizer: Tokenizer,
    grammars: Grammar,
    seed: int,
) -> None:
    import torch

    started = time.perf_counter()
    torch.manual_seed(seed)
    model, tokenizer, report = builder(base_tokenizer, grammars, seed)
    parent = model_spec.path.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{model_spec.name}.", dir=parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        files = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(staging.iterdir())
            if p.is_file()
        }
        manifest = {
            "name": model_spec.name,
            "kind": model_spec.kind.value,
            "seed": seed,
            "recipe": RECIPE_VERSION,
            "seconds": round(time.perf_counter() - started, 2),
            "train": report,
            "files": files,
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        # mkdtemp and the safetensors writer use owner-only modes; workers running as another
        # user (a shared compose volume) must still read the model. Nothing here is secret.
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        _replace_dir(staging, model_spec.path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_dir(staging: Path, final: Path) -> None:
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{time.time_ns()}")
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(final)


# --- text -------------------------------------------------------------------------------
# Grammars live in data/toy_corpora.json; the text is generated, so nothing is downloaded and
# the same seed always gives the same corpus.

Grammar = dict[str, Any]


def _load_grammars() -> Grammar:
    text = (importlib.resources.files("nightowl_workers") / "data" / "toy_corpora.json").read_text(
        encoding="utf-8"
    )
    grammars: Grammar = json.loads(text)
    return grammars


def generator_paragraph(g: Grammar, rng: random.Random) -> str:
    sentences = []
    for k in range(rng.randint(2, 4)):
        words = [rng.choice(g[part]) for part in ("subjects", "verbs", "objects", "times")]
        sentence = " ".join(words) + "."
        if k and rng.random() < 0.4:
            sentence = f"{rng.choice(g['links'])} {sentence}"
        sentences.append(sentence[0].upper() + sentence[1:])
    return " ".join(sentences)


def translation_pair(g: Grammar, rng: random.Random) -> tuple[str, str]:
    noun, (noun_de, gender) = rng.choice(sorted(g["nouns"].items()))
    adj, adj_de = rng.choice(sorted(g["adjectives"].items()))
    verb, verb_de = rng.choice(sorted(g["verbs"].items()))
    fields = {"noun": noun, "noun_de": noun_de, "adj": adj, "adj_de": adj_de}
    fields |= {"verb": verb, "verb_de": verb_de}
    for table in ("definite", "accusative", "indefinite", "mixed_ending"):
        fields[table] = g[table][gender]
    english, german = rng.choice(g["templates"])
    return english.format(**fields), german.format(**fields)


def sentiment_example(g: Grammar, rng: random.Random) -> tuple[str, int]:
    label = rng.randrange(2)
    fields = {
        "adj": rng.choice(g["positive" if label else "negative"]),
        "verb": rng.choice(g["positive_verbs" if label else "negative_verbs"]),
        "item": rng.choice(g["items"]),
        "det": rng.choice(g["determiners"]),
        "intens": rng.choice(g["intensifiers"]),
    }
    text = rng.choice(g["templates"]).format(**fields) + rng.choice(g["endings"])
    # Mixed case so "This movie..." and "this movie..." both read as seen text.
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text, label


# --- tokenizer ---------------------------------------------------------------------------


def _train_tokenizer(grammars: Grammar, seed: int) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(seed)
    texts = [generator_paragraph(grammars["generator"], rng) for _ in range(1500)]
    for _ in range(1500):
        source, target = translation_pair(grammars["translation"], rng)
        texts += [source, target]
    texts += [sentiment_example(grammars["sentiment"], rng)[0] for _ in range(1500)]
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    # Byte-level: any user text (emoji, accents, other scripts) tokenizes without <unk>.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _wrap_tokenizer(base: Tokenizer, template: str | None, *, padding_side: str) -> Any:
    """A transformers fast tokenizer around a copy of `base` with this model's special tokens.

    The template lives in tokenizer.json's post-processor, so counting tokens with the bare
    `tokenizers` library (as the core does, without torch) gives the same numbers the model
    sees.
    """
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer.from_str(base.to_str())
    if template is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[("<s>", BOS), ("</s>", EOS)]
        )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=MAX_POSITIONS,
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )


def _encode(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask, straight from the fast tokenizer's backend."""
    import torch

    rows = [e.ids for e in tokenizer.backend_tokenizer.encode_batch(texts)]
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _fit(
    model: PreTrainedModel,
    batch_at: Callable[[int], dict[str, torch.Tensor]],
    *,
    steps: int,
    lr: float,
) -> float:
    """A plain loop (warmup then linear decay): Trainer's setup costs more than these runs."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))),
    )
    model.train()
    losses: list[float] = []
    for step in range(steps):
        loss = model(**batch_at(step)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()  # type: ignore[no-untyped-call]
    tail = losses[-10:]
    return round(sum(tail) / len(tail), 4)


# --- models ------------------------------------------------------------------------------


def _build_generator(base: Tokenizer, grammars: Grammar, seed: int) -> _Built:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    rng = random.Random(seed + 1)
    stream: list[int] = []
    for _ in range(1200):
        # </s> between paragraphs teaches the model to stop, so finish_reason "eos" is real.
        stream += [*base.encode(generator_paragraph(grammars["generator"], rng)).ids, EOS]
    data = torch.tensor(stream, dtype=torch.long)
    config = GPT2Config(
        vocab_size=base.get_vocab_size(), n_positions=MAX_POSITIONS, n_embd=64, n_layer=2,
        n_head=4, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
    )
    model = GPT2LMHeadModel(config)
    # GPT-2 leaves this unset and transformers then logs a warning on every build.
    model.loss_type = "ForCausalLM"
    window, batch = 48, 12
    sampler = torch.Generator().manual_seed(seed)

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        starts = torch.randint(0, len(stream) - window, (batch,), generator=sampler).tolist()
        ids = torch.stack([data[s : s + window] for s in starts])
        return {"input_ids": ids, "labels": ids}

    steps = TRAIN_STEPS[TaskKind.GENERATE]
    loss = _fit(model, batch_at, steps=steps, lr=3e-3)
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = model.generation_config.bos_token_id = EOS
    tokenizer = _wrap_tokenizer(base, None, padding_side="left")
    return model, tokenizer, {"steps": steps, "train/loss": loss}


def _build_translator(base: Tokenizer, grammars: Grammar, seed: int) -> _Built:
    import torch
    from transformers import MarianConfig, MarianMTModel

    tokenizer = _wrap_tokenizer(base, "$A </s>", padding_side="right")
    rng = random.Random(seed + 2)
    pairs = [translation_pair(grammars["translation"], rng) for _ in range(3000)]
    held_out = [translation_pair(grammars["translation"], rng) for _ in range(64)]
    vocab = base.get_vocab_size()
    config = MarianConfig(
        vocab_size=vocab, decoder_vocab_size=vocab, d_model=64, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=MAX_POSITIONS,
        dropout=0.0,
        # Marian's sinusoidal positions have magnitude ~1; with the default 0.02 init the
        # token embeddings drown in them and alignment takes ~3x more steps to appear.
        scale_embedding=True,
        init_std=0.05,
        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS, decoder_start_token_id=PAD,
        forced_eos_token_id=EOS,
    )
    model = MarianMTModel(config)
    batch = 32

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        chunk = [pairs[(step * batch + i) % len(pairs)] for i in range(batch)]
        ids, mask = _encode(tokenizer, [s for s, _ in chunk])
        labels, label_mask = _encode(tokenizer, [t for _, t in chunk])
        labels[label_mask == 0] = -100
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    steps = TRAIN_STEPS[TaskKind.TRANSLATE]
    loss = _fit(model, batch_at, steps=steps, lr=3e-3)
    model.generation_config.decoder_start_token_id = model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = EOS
    ids, mask = _encode(tokenizer, [s for s, _ in held_out])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24)
    decoded = tokenizer.batch_decode(out, skip_special_tokens=True)
    exact = sum(d.strip() == t for d, (_, t) in zip(decoded, held_out, strict=True))
    return model, tokenizer, {"steps": steps, "train/loss": loss, "eval/exact": exact / 64}


def _build_sentiment(base: Tokenizer, grammars: Grammar, seed: int) -> _Built:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _wrap_tokenizer(base, "<s> $A </s>", padding_side="right")
    rng = random.Random(seed + 3)
    examples = [sentiment_example(grammars["sentiment"], rng) for _ in range(2000)]
    held_out = [sentiment_example(grammars["sentiment"], rng) for _ in range(200)]
    config = BertConfig(
        vocab_size=base.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=128, max_position_embeddings=MAX_POSITIONS,
        pad_token_id=PAD, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config)
    batch = 32

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        chunk = [examples[(step * batch + i) % len(examples)] for i in range(batch)]
        ids, mask = _encode(tokenizer, [s for s, _ in chunk])
        labels = torch.tensor([label for _, label in chunk], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    steps = TRAIN_STEPS[TaskKind.SENTIMENT]
    loss = _fit(model, batch_at, steps=steps, lr=2e-3)
    ids, mask = _encode(tokenizer, [s for s, _ in held_out])
    with torch.inference_mode():
        predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist()
    correct = sum(p == label for p, (_, label) in zip(predicted, held_out, strict=True))
    return model, tokenizer, {"steps": steps, "train/loss": loss, "eval/accuracy": correct / 200}


def _build_embedder(base: Tokenizer, grammars: Grammar, seed: int) -> _Built:
    """The sentiment BERT's encoder alone: the embed runner mean-pools its hidden states, and
    training it to tell praise from complaints gives the vectors a little shape."""
    model, tokenizer, report = _build_sentiment(base, grammars, seed)
    encoder = model.bert
    encoder.config.architectures = ["BertModel"]
    return encoder, tokenizer, report


def main(argv: list[str] | None = None) -> int:
    """`python -m nightowl_workers.bootstrap DIR [--force] [--seed N]`: one JSON line per model.

    The CLI runs this in a subprocess because the core never imports torch.
    """
    import argparse

    parser = argparse.ArgumentParser(description="Build nightowl's tiny offline models.")
    parser.add_argument("target_dir", type=Path, help="directory to build the models under")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, init and training")
    args = parser.parse_args(argv)
    def built(name: str, seconds: float) -> None:
        # Progress for the CLI, which shows it while the next model trains.
        print(json.dumps({"built": name, "seconds": round(seconds, 1)}), flush=True)

    for model in bootstrap_models(args.target_dir, seed=args.seed, force=args.force,
                                  on_built=built):
        line = {"name": model.name, "kind": model.kind.value, "path": str(model.path)}
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
