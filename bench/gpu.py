"""P5: nightowl's runners and batcher against raw batched model calls, on a GPU, offline.

For a machine with a CUDA GPU and no network, using whatever torch and transformers are
installed there (nothing of nightowl needs installing: the repo root goes on sys.path,
bench/_common.py makes workers/ importable as nightowl_workers, and nightowl_workers.runners /
nightowl_workers.engine import only torch, transformers and nightowl's enums).

Models are built from configs with random weights (no hub): GPT-2-small (12 x 768, vocab
50,257), Marian-base (6+6 x 512, vocab 58,101) and DistilBERT-base (6 x 768, vocab 30,522).
One byte-level BPE tokenizer is trained in seconds with `tokenizers` on generated text; its
ids cover the low part of each vocabulary, while the embeddings and output layers keep their
real sizes, so the compute is that of the real models. Inputs have a realistic length skew.

  raw        token ids prepared before the clock; fixed batches of --batch-size in input order,
             padded to each batch's longest; model(**batch) or model.generate(...)
  nightowl   the same texts through nightowl_workers.runners (tokenize, forward, decode to JSON)
             and nightowl_workers.engine.run_batched (length-sorted micro-batches under
             max_batch_tokens, at most --batch-size items), per chunk of --chunk-size items, as
             a worker does

Both sides call the same model object with the same generation settings (greedy,
max_new_tokens fixed, one beam), so the work per item is equal; the figures are generation
tokens/s, translation sentences/s and classification items/s, and their nightowl/raw ratios.

    python bench/gpu.py               # CUDA: full-size models, under 5 minutes in all
    python bench/gpu.py --quick       # small models and sizes; runs on CPU too (the suite does)

The JSON record goes to $OUT/gpu.jsonl when OUT is set, else bench/results/gpu.jsonl.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]
import _common as c  # noqa: E402

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
PAD, BOS, EOS = 0, 1, 2


@dataclass
class Sizes:
    gen_prompts: int
    gen_new_tokens: int
    trans_sentences: int
    trans_new_tokens: int
    cls_items: int
    tokenizer_vocab: int
    full_models: bool


FULL = Sizes(gen_prompts=512, gen_new_tokens=64, trans_sentences=1024, trans_new_tokens=48,
             cls_items=16_384, tokenizer_vocab=8_000, full_models=True)
QUICK = Sizes(gen_prompts=24, gen_new_tokens=8, trans_sentences=24, trans_new_tokens=8,
              cls_items=96, tokenizer_vocab=600, full_models=False)


# --- text and tokenizer ---------------------------------------------------------------------------


def make_words(rng: random.Random, n: int = 3000) -> list[str]:
    syllables = ["ka", "to", "ri", "mo", "sa", "ne", "lu", "pi", "de", "fa", "go", "hu", "ji",
                 "be", "ro", "ta", "mi", "no", "ve", "ze", "an", "el", "or", "is", "un"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def sentence(rng: random.Random, words: list[str], low: int, high: int) -> str:
    # A long tail: most texts short, a few long, as in real review or caption dumps.
    n = min(high, max(low, int(rng.paretovariate(1.6) * low)))
    # Zipf-like word choice, so the tokenizer learns frequent words whole.
    return " ".join(words[min(len(words) - 1, int(rng.expovariate(1 / 300)))] for _ in range(n))


def train_tokenizer(vocab: int, corpus: list[str], padding_side: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab,
                                                        special_tokens=SPECIALS,
                                                        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", EOS)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                      eos_token="</s>", unk_token="<unk>",
                                      model_max_length=512, padding_side=padding_side,
                                      # As DistilBERT's, GPT-2's and Marian's: no segment ids.
                                      model_input_names=["input_ids", "attention_mask"])
    return wrapped


# --- models from configs --------------------------------------------------------------------------


def build_models(sizes: Sizes, vocab: int) -> dict[str, Any]:
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        MarianConfig,
        MarianMTModel,
    )

    full = sizes.full_models
    gpt2 = GPT2Config(
        vocab_size=50_257 if full else vocab, n_positions=1024 if full else 256,
        n_embd=768 if full else 64, n_layer=12 if full else 2, n_head=12 if full else 2,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    marian = MarianConfig(
        vocab_size=58_101 if full else vocab, d_model=512 if full else 64,
        encoder_layers=6 if full else 2, decoder_layers=6 if full else 2,
        encoder_attention_heads=8 if full else 2, decoder_attention_heads=8 if full else 2,
        encoder_ffn_dim=2048 if full else 128, decoder_ffn_dim=2048 if full else 128,
        max_position_embeddings=512, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=PAD, forced_eos_token_id=EOS)
    distil = DistilBertConfig(
        vocab_size=30_522 if full else vocab, dim=768 if full else 64,
        n_layers=6 if full else 2, n_heads=12 if full else 2,
        hidden_dim=3072 if full else 128, max_position_embeddings=512, pad_token_id=PAD,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    models = {
        "generate": GPT2LMHeadModel(gpt2),
        "translate": MarianMTModel(marian),
        "sentiment": DistilBertForSequenceClassification(distil),
    }
    for model in models.values():
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.pad_token_id, gen.eos_token_id, gen.num_beams = PAD, EOS, 1
            if model.config.is_encoder_decoder:
                gen.decoder_start_token_id = PAD
            # Random weights must not stop early on their own accord on one side only.
            gen.forced_eos_token_id = None
    return models


# --- measuring ------------------------------------------------------------------------------------


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: Any, fn: Callable[[], int]) -> tuple[float, int]:
    sync(device)
    t0 = time.perf_counter()
    count = fn()
    sync(device)
    return time.perf_counter() - t0, count


def raw_side(kind: str, model: Any, tokenizer: Any, texts: list[str], device: Any,
             batch_size: int, new_tokens: int) -> Callable[[], int]:
    """Prepared before the clock: ids, padding and device copies; the callable runs the model."""
    import torch

    batches = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                        max_length=512, return_tensors="pt", return_token_type_ids=False)
        batches.append({k: v.to(device) for k, v in enc.items()})

    def run() -> int:
        produced = 0
        with torch.inference_mode():
            for batch in batches:
                if kind == "sentiment":
                    torch.softmax(model(**batch).logits.float(), dim=-1).cpu()
                    produced += int(batch["input_ids"].shape[0])
                    continue
                out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False,
                                     num_beams=1, pad_token_id=PAD)
                if kind == "generate":
                    new = out[:, batch["input_ids"].shape[1]:].cpu()
                    # Tokens up to and including the first eos, as the runner counts them.
                    produced += sum(_until_eos(row) for row in new.tolist())
                else:
                    produced += int(out.shape[0])
        return produced

    return run


def _until_eos(row: list[int]) -> int:
    """Produced tokens as the generation runner counts them: through eos, up to pad."""
    for n, token in enumerate(row):
        if token == EOS:
            return n + 1
        if token == PAD:
            return n
    return len(row)


def nightowl_side(kind: str, model: Any, tokenizer: Any, texts: list[str], device: Any,
                  batch_size: int, max_batch_tokens: int, chunk_size: int,
                  new_tokens: int) -> Callable[[], int]:
    from nightowl.common.enums import TaskKind
    from nightowl_workers.engine import WorkItem, run_batched
    from nightowl_workers.runners import make_runner

    runner = make_runner(TaskKind(kind), model, tokenizer, device)
    params: dict[str, Any] = {}
    if kind == "generate":
        params = {"max_new_tokens": new_tokens, "do_sample": False}
    elif kind == "translate":
        params = {"max_new_tokens": new_tokens, "num_beams": 1}
    field_items = [WorkItem(i, text, params) for i, text in enumerate(texts)]

    def run() -> int:
        produced = 0
        for start in range(0, len(field_items), chunk_size):
            for results in run_batched(runner, field_items[start:start + chunk_size],
                                       max_batch_tokens=max_batch_tokens,
                                       max_batch_size=batch_size, truncate=True):
                for r in results:
                    if r.output is None:
                        raise RuntimeError(f"item {r.key} failed: {r.error_message}")
                    produced += r.tokens_out if kind == "generate" else 1
        return produced

    return run


def main() -> None:
    p = c.parser(__doc__, repeat=True)
    p.add_argument("--device", default="auto", help="auto (cuda when present), cuda:N or cpu")
    p.add_argument("--batch-size", type=int, default=64,
                   help="raw batch size = nightowl max_batch_size")
    p.add_argument("--max-batch-tokens", type=int, default=16_384,
                   help="nightowl's token budget per micro-batch (its default)")
    p.add_argument("--chunk-size", type=int, default=256, help="items per chunk (its default)")
    args = p.parse_args()
    start_machine = c.start(args)
    started = time.perf_counter()
    repeat = c.repeats(args)

    import torch

    if args.device == "auto":
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    sizes = QUICK if args.quick else FULL
    if device.type == "cpu" and not args.quick:
        c.log("no CUDA device: full sizes on CPU take long; --quick is the CPU mode")
    dtype = torch.float32
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    torch.manual_seed(0)
    rng = random.Random(0)
    words = make_words(rng)
    corpus = [sentence(rng, words, 4, 60) for _ in range(1000 if args.quick else 20_000)]
    c.log(f"training a {sizes.tokenizer_vocab}-token BPE tokenizer on generated text")
    tokenizers = {side: train_tokenizer(sizes.tokenizer_vocab, corpus, side)
                  for side in ("left", "right")}
    c.log(f"building models from configs on {device} ({dtype})")
    models = build_models(sizes, sizes.tokenizer_vocab)
    for model in models.values():
        model.to(device=device, dtype=dtype).eval()
    inputs = {
        "generate": [sentence(rng, words, 6, 48) for _ in range(sizes.gen_prompts)],
        "translate": [sentence(rng, words, 4, 40) for _ in range(sizes.trans_sentences)],
        "sentiment": [sentence(rng, words, 4, 200) for _ in range(sizes.cls_items)],
    }
    new_tokens = {"generate": sizes.gen_new_tokens, "translate": sizes.trans_new_tokens,
                  "sentiment": 0}
    units = {"generate": "tokens/s", "translate": "sentences/s", "sentiment": "items/s"}
    labels = {"generate": "generation (GPT-2-small)" if sizes.full_models else "generation",
              "translate": "translation (Marian-base)" if sizes.full_models else "translation",
              "sentiment": "classification (DistilBERT-base)" if sizes.full_models
              else "classification"}

    results: dict[str, dict[str, Any]] = {}
    for kind, model in models.items():
        # Decoder-only prompts are left-padded so generation continues from the last token.
        tokenizer = tokenizers["left" if kind == "generate" else "right"]
        texts = inputs[kind]
        sides = {
            "raw": raw_side(kind, model, tokenizer, texts, device, args.batch_size,
                            new_tokens[kind]),
            "nightowl": nightowl_side(kind, model, tokenizer, texts, device, args.batch_size,
                                      args.max_batch_tokens, args.chunk_size, new_tokens[kind]),
        }
        # Warm both paths (kernels, allocator) on a few items before any clock.
        raw_side(kind, model, tokenizer, texts[:8], device, 8, min(4, new_tokens[kind]) or 1)()
        nightowl_side(kind, model, tokenizer, texts[:8], device, 8, args.max_batch_tokens,
                      args.chunk_size, min(4, new_tokens[kind]) or 1)()
        best: dict[str, tuple[float, int]] = {}
        for r in range(repeat):
            for side, fn in sides.items():
                seconds, count = timed(device, fn)
                c.log(f"{kind} {side} run {r + 1}: {seconds:.2f}s, {count:,} "
                      f"{units[kind].split('/')[0]}")
                if side not in best or seconds < best[side][0]:
                    best[side] = (seconds, count)
        raw_rate = best["raw"][1] / best["raw"][0]
        no_rate = best["nightowl"][1] / best["nightowl"][0]
        results[kind] = {"items": len(texts), "unit": units[kind],
                         "raw_s": best["raw"][0], "raw_count": best["raw"][1],
                         "raw_rate": raw_rate, "nightowl_s": best["nightowl"][0],
                         "nightowl_count": best["nightowl"][1], "nightowl_rate": no_rate,
                         "ratio": no_rate / raw_rate}

    total_s = time.perf_counter() - started
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    mode = "quick" if args.quick else "full"
    print(f"gpu ({mode}): {where}, {dtype}, torch {torch.__version__}, batch {args.batch_size}, "
          f"max_batch_tokens {args.max_batch_tokens}, chunk {args.chunk_size}, best of "
          f"{repeat}; {total_s:.0f}s in all")
    if device.type == "cpu":
        print(c.load_note(start_machine))
    print(c.table(["task", "items", "unit", "raw", "nightowl", "nightowl/raw"],
                  [[labels[k], r["items"], r["unit"], r["raw_rate"], r["nightowl_rate"],
                    f"{r['ratio']:.2f}"] for k, r in results.items()]))
    for kind, r in results.items():
        print(f"{kind} nightowl/raw {r['unit']} = {r['ratio']:.2f}")
    headline = ("nightowl/raw on " + ("cuda" if device.type == "cuda" else "cpu") + ": " +
                ", ".join(f"{k} {r['ratio']:.2f}" for k, r in results.items()))
    if not args.no_record:
        out = os.environ.get("OUT")
        path = c.write_record("gpu", mode=mode, args=vars(args),
                              figures={"device": where, "dtype": str(dtype),
                                       "total_s": total_s, "tasks": results},
                              headline=headline, machine_at_start=start_machine,
                              results_dir=Path(out) if out else None)
        print(f"recorded in {path}")
    print(headline)


if __name__ == "__main__":
    main()
