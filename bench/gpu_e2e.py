"""The real stack on one device: worker, broker, SQL, CLI; each figure beside its raw twin.

Everything runs as in production, on one machine with no network:
  stack        embedded Valkey + SQLite in a temp home, migrated (bench/_common.stack)
  models       GPT-2-small, Marian-base and DistilBERT-base sized (bench/gpu.py builds them
               from configs with random weights and a locally trained tokenizer), saved as
               safetensors and registered with `nightowl models add`
  worker       `nightowl worker -Q gpu,train --device cuda:0`: the solo pool it uses on a GPU
               (`--device cpu -c 1` with --cpu)
  jobs         generate, translate and sentiment through `nightowl submit --queue gpu`,
               timed from the submit process's start to the job's completed_at in SQL
  raw          in this process, the same saved model in the same dtype on the same device,
               the same micro-batches (chunks of --chunk-size, packed by the worker's planner
               under max_batch_tokens / max_batch_size), ids prepared before the clock
  fine-tune    a LoRA fine-tune of the GPT-2 model (bf16 autocast on a GPU) through
               `nightowl finetune submit --wait`; its metrics and checkpoints read from SQL
  OOM          (CUDA only) a fresh worker with a large batch budget, the card filled by this
               process so its first micro-batch runs out of memory: the batch must halve, and
               every item must still succeed
  continuous   generation on a length-skewed set (prompts 8-512 tokens, max_new_tokens
               16-256), static batches against continuous batching, in process: tokens/s and
               how many answers are identical under greedy decoding

    python bench/gpu_e2e.py                 # one CUDA GPU, full sizes, under 6 minutes
    python bench/gpu_e2e.py --cpu --quick   # tiny sizes on the CPU, no warm-up jobs (the test
                                            # suite runs it to keep every row working)

One table; the last line is the headline. The JSON record goes to $OUT/gpu_e2e.jsonl when OUT
is set, else bench/results/gpu_e2e.jsonl.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]
import _common as c  # noqa: E402
import gpu as g  # noqa: E402

KINDS = ("generate", "translate", "sentiment")
NAMES = {"generate": "gpt2-e2e", "translate": "marian-e2e", "sentiment": "distilbert-e2e"}


@dataclass
class Sizes:
    items: dict[str, int]
    new_tokens: dict[str, int]
    skew_prompts: int
    skew_prompt_words: tuple[int, int]
    skew_new_tokens: tuple[int, ...]
    finetune_rows: int
    finetune_steps: int
    oom_items: int


FULL = Sizes(items={"generate": 256, "translate": 512, "sentiment": 8192},
             new_tokens={"generate": 64, "translate": 48, "sentiment": 0},
             skew_prompts=256, skew_prompt_words=(6, 400), skew_new_tokens=(16, 32, 64, 256),
             finetune_rows=2048, finetune_steps=60, oom_items=512)
QUICK = Sizes(items={"generate": 12, "translate": 12, "sentiment": 48},
              new_tokens={"generate": 4, "translate": 4, "sentiment": 0},
              skew_prompts=6, skew_prompt_words=(6, 60), skew_new_tokens=(4, 12),
              finetune_rows=48, finetune_steps=3, oom_items=0)


def save_models(sizes: g.Sizes, root: Path, words: list[str], rng: random.Random) -> None:
    corpus = [g.sentence(rng, words, 4, 60) for _ in range(1000 if not sizes.full_models
                                                         else 20_000)]
    tokenizers = {side: g.train_tokenizer(sizes.tokenizer_vocab, corpus, side)
                  for side in ("left", "right")}
    for kind, model in g.build_models(sizes, sizes.tokenizer_vocab).items():
        model.save_pretrained(root / kind, safe_serialization=True)
        tokenizers["left" if kind == "generate" else "right"].save_pretrained(root / kind)


def texts_for(kind: str, n: int, rng: random.Random, words: list[str]) -> list[str]:
    low, high = {"generate": (6, 48), "translate": (4, 40), "sentiment": (4, 200)}[kind]
    return [g.sentence(rng, words, low, high) for _ in range(n)]


def raw_rate(kind: str, model: Any, tokenizer: Any, texts: list[str], device: Any,
             new_tokens: int, chunk: int, max_tokens: int, max_size: int) -> float:
    """Items/s of bare model calls over the worker's own micro-batches, ids ready beforehand."""
    import torch

    from nightowl_workers.batching import plan_micro_batches

    batches = []
    for start in range(0, len(texts), chunk):
        part = texts[start:start + chunk]
        lengths = [min(512, len(ids)) for ids in tokenizer(part)["input_ids"]]
        for indexes in plan_micro_batches(lengths, max_batch_tokens=max_tokens,
                                          max_batch_size=max_size):
            enc = tokenizer([part[i] for i in indexes], padding=True, truncation=True,
                            max_length=512, return_tensors="pt", return_token_type_ids=False)
            batches.append({k: v.to(device) for k, v in enc.items()})

    def run() -> int:
        with torch.inference_mode():
            for batch in batches:
                if kind == "sentiment":
                    torch.softmax(model(**batch).logits.float(), dim=-1).cpu()
                else:
                    model.generate(**batch, max_new_tokens=new_tokens, do_sample=False,
                                   num_beams=1, pad_token_id=g.PAD).cpu()
        return len(texts)

    seconds, count = g.timed(device, run)
    return count / seconds


def start_worker(st: c.Stack, device: str, name: str, extra: dict[str, str]) -> c.Worker:
    args = ["-Q", "gpu,train", "--device", device]
    if device == "cpu":
        args += ["-c", "1"]
    log_path = st.home / f"{name}.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nightowl", "worker", "--loglevel", "warning",
             "-n", f"{name}-{uuid.uuid4().hex[:4]}@%h", *args],
            env={**st.env, **extra}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    worker = c.Worker(proc, log_path, args)
    st.workers.append(worker)
    return worker


def add_model(name: str, kind: str, source: Path) -> str:
    """`nightowl models add NAME --kind KIND --source DIR --copy`, in this process (the stack's
    settings are this process's): three fewer interpreter starts on a quick run."""
    import contextlib
    import io

    from nightowl.cli import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli(["models", "add", name, "--kind", kind, "--source", str(source), "--copy"],
            prog_name="nightowl", standalone_mode=False)
    return out.getvalue().strip().splitlines()[-1]


def warm_up(st: c.Stack, kind: str, ref: str, worker: c.Worker, *params: str) -> None:
    """Two small chunks on the gpu queue first: the model is loaded before any clock."""
    field = "source" if kind == "translate" else "text"
    path = c.write_items(st.home / f"warm-{uuid.uuid4().hex[:6]}.jsonl",
                         ["a short warm up text"] * 16, field)
    st.run_job(kind, path, ref, "--queue", "gpu", "--chunk-size", "8", "--truncate", *params,
               worker=worker, timeout=600)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def finetune(st: c.Stack, ref: str, rows: list[str], steps: int, worker: c.Worker
             ) -> dict[str, Any]:
    from sqlalchemy import func, select

    from nightowl.platform.db import session_factory
    from nightowl.platform.orm import TrainingEvent, TrainingMetric, TrainingRun

    path = write_jsonl(st.home / "finetune.jsonl", [{"text": t} for t in rows])
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nightowl", "finetune", "submit", "--kind", "generate",
         "--base", ref, "--train", str(path), "--max-steps", str(steps), "--batch-size", "16",
         "--lora", "r=8,alpha=16", "--eval-every", str(max(1, steps // 2)),
         "--checkpoint-every", str(max(1, steps // 3)), "--wait"],
        env=st.env, capture_output=True, text=True, check=False, timeout=1200)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the fine-tune failed:\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}\n{worker.output()}")
    run_id = proc.stdout.strip().splitlines()[-1].split()[-1]
    with session_factory()() as s:
        run = s.get(TrainingRun, run_id)
        assert run is not None, proc.stdout
        keys = dict(s.execute(select(TrainingMetric.key, func.count())
                              .where(TrainingMetric.run_id == run_id)
                              .group_by(TrainingMetric.key)).all())
        checkpoints = s.scalar(select(func.count()).select_from(TrainingEvent).where(
            TrainingEvent.run_id == run_id, TrainingEvent.kind == "checkpoint")) or 0
        tps = [v for (v,) in s.execute(select(TrainingMetric.value).where(
            TrainingMetric.run_id == run_id, TrainingMetric.key == "train/tokens_per_s"))]
        status = run.status.value
    return {"run_id": run_id, "status": status, "seconds": seconds, "steps": steps,
            "metric_rows": sum(keys.values()), "metric_keys": sorted(keys),
            "checkpoints": int(checkpoints),
            "tokens_per_s": sum(tps) / len(tps) if tps else 0.0}


def forced_oom(st: c.Stack, ref: str, texts: list[str], headroom_mib: int) -> dict[str, Any]:
    """A fresh worker whose budget far exceeds what is left of the card once it is filled."""
    import torch

    worker = start_worker(st, "cuda:0", "oom", {"NIGHTOWL_MAX_BATCH_TOKENS": "131072",
                                                "NIGHTOWL_MAX_BATCH_SIZE": "256"})
    warm_up(st, "sentiment", ref, worker)
    free, _ = torch.cuda.mem_get_info()
    filler = torch.empty(max(0, free - headroom_mib * 2**20), dtype=torch.uint8,
                         device="cuda:0")
    try:
        path = c.write_items(st.home / "oom.jsonl", texts)
        _, done = st.run_job("sentiment", path, ref, "--queue", "gpu", "--truncate",
                             "--chunk-size", str(len(texts)), worker=worker, timeout=600)
    finally:
        del filler
        torch.cuda.empty_cache()
    halvings = worker.output(10**7).count("retrying in halves")
    worker.stop()
    return {"items": done.total, "succeeded": done.succeeded, "failed": done.failed,
            "halvings": halvings, "headroom_mib": headroom_mib}


def continuous_vs_static(path: Path, device: Any, sizes: Sizes,
                         rng: random.Random, words: list[str]) -> dict[str, Any]:
    from nightowl.common.enums import TaskKind
    from nightowl_workers.engine import WorkItem, run_batched
    from nightowl_workers.runners import GenerationRunner, make_runner

    model, tokenizer = load("generate", path, device)
    runner = make_runner(TaskKind.GENERATE, model, tokenizer, device)
    assert isinstance(runner, GenerationRunner)
    low, high = sizes.skew_prompt_words
    # Mostly short answers, a few long ones: where static batches wait for the longest.
    items = [WorkItem(i, g.sentence(rng, words, low, high),
                      {"max_new_tokens": rng.choice(sizes.skew_new_tokens)})
             for i in range(sizes.skew_prompts)]
    out: dict[str, Any] = {"prompts": len(items)}
    answers: dict[str, dict[int, Any]] = {}
    for mode in ("static", "continuous"):
        runner.batching = mode

        def run(mode: str = mode) -> int:
            results = [r for batch in run_batched(runner, items, max_batch_tokens=16_384,
                                                  max_batch_size=64, truncate=True)
                       for r in batch]
            failed = [r for r in results if r.output is None]
            if failed:
                raise RuntimeError(f"{mode}: {failed[0].error_message}")
            answers[mode] = {r.key: r.output for r in results}
            return sum(r.tokens_out for r in results)

        seconds, tokens = g.timed(device, run)
        out[mode] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
    same = sum(answers["static"][k] == answers["continuous"][k] for k in answers["static"])
    out["identical"] = same
    out["ratio"] = out["continuous"]["tokens_per_s"] / out["static"]["tokens_per_s"]
    return out


def load(kind: str, path: Path, device: Any) -> tuple[Any, Any]:
    """The model as the worker loads it: same loader, same dtype, same device."""
    from nightowl.common.config import get_settings
    from nightowl.common.enums import TaskKind
    from nightowl_workers.loading import load_for_kind

    model, tokenizer = load_for_kind(TaskKind(kind), str(path), revision=None, device=device,
                                     settings=get_settings())
    return model, tokenizer


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--cpu", action="store_true", help="run on the CPU (no CUDA needed)")
    p.add_argument("--chunk-size", type=int, default=256, help="items per chunk (its default)")
    p.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    p.add_argument("--oom-headroom-mib", type=int, default=384,
                   help="GPU memory left free for the out-of-memory worker's batches")
    args = p.parse_args()
    machine = c.start(args)
    started = time.perf_counter()
    import torch

    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible; run with --cpu (add --quick for tiny "
                         "sizes)")
    device = torch.device("cpu" if args.cpu else "cuda:0")
    if args.cpu:
        c.set_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    model_sizes = g.QUICK if args.quick else g.FULL
    max_tokens, max_size = 16_384, 64
    rng = random.Random(0)
    torch.manual_seed(0)
    words = g.make_words(rng)
    rows: list[list[Any]] = []
    figures: dict[str, Any] = {"device": "cpu" if args.cpu else torch.cuda.get_device_name(0)}
    with c.stack(bootstrap=False) as st:
        c.log("building GPT-2 / Marian / DistilBERT sized models offline")
        models_dir = st.home / "built"
        save_models(model_sizes, models_dir, words, rng)
        refs = {kind: add_model(NAMES[kind], kind, models_dir / kind) for kind in KINDS}
        worker = start_worker(st, str(device), "gpu-e2e",
                              {"NIGHTOWL_TORCH_THREADS": str(args.threads)})
        tasks: dict[str, Any] = {}
        for kind in KINDS:
            params = ["--param", f"max_new_tokens={sizes.new_tokens[kind]}"] \
                if sizes.new_tokens[kind] else []
            if kind == "translate":
                params += ["--param", "num_beams=1"]
            if not args.quick:
                # Quick ratios are of tiny models and mean nothing; it skips a submit each.
                warm_up(st, kind, refs[kind], worker, *params)
            texts = texts_for(kind, sizes.items[kind], rng, words)
            path = c.write_items(st.home / f"{kind}.jsonl", texts,
                                 "source" if kind == "translate" else "text")
            c.log(f"{kind}: {len(texts)} items through nightowl submit -> worker -> SQL")
            _, done = st.run_job(kind, path, refs[kind], "--queue", "gpu", "--truncate",
                                 "--chunk-size", str(args.chunk_size), *params, worker=worker)
            e2e = done.total / done.end_to_end_s
            model, tokenizer = load(kind, st.model_source(refs[kind]), device)
            raw_rate(kind, model, tokenizer, texts[:8], device, 2, 8, max_tokens, max_size)
            raw = raw_rate(kind, model, tokenizer, texts, device, sizes.new_tokens[kind],
                           args.chunk_size, max_tokens, max_size)
            del model
            tasks[kind] = {"items": done.total, "succeeded": done.succeeded,
                           "e2e_items_per_s": e2e, "raw_items_per_s": raw, "ratio": e2e / raw}
            rows.append([f"{kind} items/s", done.total, raw, e2e, f"{e2e / raw:.2f}"])
        figures["tasks"] = tasks

        c.log(f"LoRA fine-tune of the GPT-2 model, {sizes.finetune_steps} steps")
        ft = finetune(st, refs["generate"], texts_for("generate", sizes.finetune_rows, rng,
                                                      words), sizes.finetune_steps, worker)
        figures["finetune"] = ft
        rows.append(["fine-tune tokens/s (LoRA" + (", bf16)" if not args.cpu else ")"),
                     ft["steps"], "", ft["tokens_per_s"],
                     f"{ft['metric_rows']} metrics, {ft['checkpoints']} checkpoints in SQL"])
        worker.stop()

        if args.cpu:
            why = "skipped on the CPU: there is no card to fill, and faking an OOM proves nothing"
            c.log(f"forced out-of-memory {why}")
            figures["oom"] = {"skipped": why}
            rows.append(["forced OOM (batch halves)", "-", "", "", why.split(":")[0]])
        else:
            oom_texts = texts_for("sentiment", sizes.oom_items, rng, words)
            oom = forced_oom(st, refs["sentiment"], [t + " " + t for t in oom_texts],
                             args.oom_headroom_mib)
            figures["oom"] = oom
            rows.append(["forced OOM (batch halves)", oom["items"], "", oom["succeeded"],
                         f"{oom['halvings']} halvings, {oom['failed']} failed"])

        c.log("length-skewed generation: static against continuous batching")
        skew = continuous_vs_static(st.model_source(refs["generate"]), device, sizes, rng,
                                    words)
        figures["continuous"] = skew
        rows.append(["generation tokens/s, skewed (static / continuous)", skew["prompts"],
                     skew["static"]["tokens_per_s"], skew["continuous"]["tokens_per_s"],
                     f"{skew['ratio']:.2f} ({skew['identical']}/{skew['prompts']} identical)"])

    total = time.perf_counter() - started
    figures["total_s"] = total
    mode = "quick" if args.quick else "full"
    print(f"gpu_e2e ({mode}): {figures['device']}, torch {torch.__version__}; "
          f"{total:.0f}s in all")
    if args.cpu:
        print(c.load_note(machine))
    print(c.table(["what", "n", "raw", "nightowl", "nightowl/raw"], rows))
    t = figures["tasks"]
    headline = (f"gpu_e2e on {'cpu' if args.cpu else 'cuda'}: nightowl/raw generate "
                f"{t['generate']['ratio']:.2f}, translate {t['translate']['ratio']:.2f}, "
                f"sentiment {t['sentiment']['ratio']:.2f}; continuous/static "
                f"{skew['ratio']:.2f}; fine-tune {ft['status']}; OOM "
                + ("skipped" if args.cpu else
                   f"{figures['oom']['succeeded']}/{figures['oom']['items']} ok"))
    if not args.no_record:
        out = os.environ.get("OUT")
        path = c.write_record("gpu_e2e", mode=mode, args=vars(args), figures=figures,
                              headline=headline, machine_at_start=machine,
                              results_dir=Path(out) if out else None)
        print(f"recorded in {path}")
    print(headline)


if __name__ == "__main__":
    main()
