"""P4: what running a fine-tune through nightowl costs against calling the trainer directly.

  direct     nightowl_workers.training.train(config, rows, eval_rows) in this process, with
             callbacks that do nothing but note the time of each step
  nightowl   the real task path: the run submitted through nightowl.finetune.service (rows written
            to
             the artifact store, a training_runs row, a Celery message), a real
             `nightowl worker -Q train -c 1` claims it under a SQL lease, trains with a
             heartbeat, and record_metrics() upserts every step's metrics to SQL (5 keys a step)

Same model, rows, seed, hyperparameters and steps, same torch threads (default 1 both: on a
shared host two OpenMP threads slow down erratically; --threads 2 on a quiet box).
Throughput is measured over the training window only: from step 1's metrics to step N's
(model loading, the final eval and the save are outside it on both sides). Tokens per step
are counted in the direct run (the data order is a pure function of the seed, so both sides
see the same batches). The persistence share is the time of record_metrics() for the same
rows replayed against the same database, over the nightowl window.

    .venv/bin/python bench/finetune_overhead.py                 # MiniLM, 60 steps
    .venv/bin/python bench/finetune_overhead.py --quick         # MiniLM, 12 steps
    .venv/bin/python bench/finetune_overhead.py --model tiny    # tiny-sentiment: tiny steps,
                                                                # so persistence weighs most
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c

GOAL = 0.95


def main() -> None:
    p = c.parser(__doc__, repeat=True)
    p.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    p.add_argument("--steps", type=int, help="optimizer steps (60; quick 12)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    args = p.parse_args()
    start_machine = c.start(args)
    steps = args.steps or (12 if args.quick else 60)
    repeat = c.repeats(args)
    c.set_threads(args.threads)

    folder = args.data / "sentiment"
    train_rows = c.read_jsonl(folder / "sst2_train_sample5k.jsonl", 4000)
    eval_rows = c.read_jsonl(folder / "sst2_dev.jsonl", 128)
    hyper: dict[str, Any] = {"max_steps": steps, "batch_size": args.batch_size, "lr": 5e-5,
                             "warmup_steps": 2, "max_length": args.max_length, "seed": 0,
                             "checkpoint_every": steps + 1}

    with c.stack() as st:
        from sqlalchemy import select

        from nightowl.common.enums import RunStatus, TaskKind
        from nightowl.finetune import service as finetunes
        from nightowl.platform.db import session_factory
        from nightowl.platform.orm import TrainingMetric
        from nightowl_workers.training import TrainConfig, train
        from nightowl_workers.training import loop as training_loop

        if args.model == "minilm":
            ref = st.add_model("minilm-sst2", "sentiment", c.minilm_source())
        else:
            ref = "tiny-sentiment@prod"
        source = st.model_source(ref)
        labels = sorted({r["label"] for r in train_rows})

        # -- direct --------------------------------------------------------------------
        step_tokens: list[int] = []
        counting = training_loop.count_tokens

        def count(batch: Any, kind: Any) -> int:
            n = counting(batch, kind)
            step_tokens.append(n)
            return n

        def direct() -> tuple[float, float]:
            """(window s, total s) of train() called here with do-nothing callbacks."""
            stamps: dict[int, float] = {}
            with tempfile.TemporaryDirectory() as out:
                config = TrainConfig(kind=TaskKind.SENTIMENT, base_source=str(source),
                                     output_dir=Path(out), labels=labels, device="cpu", **hyper)
                t0 = time.perf_counter()
                train(config, train_rows, eval_rows,
                      on_metrics=lambda step, values: stamps.setdefault(step, time.perf_counter()),
                      on_event=lambda kind, details: None)
                return stamps[steps] - stamps[1], time.perf_counter() - t0

        # -- nightowl --------------------------------------------------------------------
        worker = st.start_worker(queues="train", concurrency=1, threads=args.threads)
        factory = session_factory()

        def through_nightowl() -> tuple[float, float, int]:
            """(window s, total s, metric rows a step) of the run through the task path."""
            with factory() as s:
                run = finetunes.submit_finetune(
                    session=s, settings=_settings(),
                    spec=finetunes.FinetuneSpec(kind=TaskKind.SENTIMENT, base=ref,
                                                train_rows=train_rows, eval_rows=eval_rows,
                                                hyperparameters=hyper))
                run_id = run.id
            t0 = time.perf_counter()
            while True:
                with factory() as s:
                    status = finetunes.get_run(s, run_id).status
                if status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED):
                    break
                if not worker.alive():
                    raise RuntimeError(f"the worker died:\n{worker.output()}")
                time.sleep(0.2)
            total = time.perf_counter() - t0
            if status != RunStatus.SUCCEEDED:
                raise RuntimeError(f"run {run_id} ended {status.value}:\n{worker.output()}")
            with factory() as s:
                stored = {m.step: m.ts for m in s.scalars(select(TrainingMetric).where(
                    TrainingMetric.run_id == run_id, TrainingMetric.key == "train/loss"))}
                per_step = s.query(TrainingMetric).filter(
                    TrainingMetric.run_id == run_id, TrainingMetric.step == 1).count()
            return c._epoch(stored[steps]) - c._epoch(stored[1]), total, per_step

        direct_runs: list[tuple[float, float]] = []
        nightowl_runs: list[tuple[float, float, int]] = []
        for r in range(repeat):
            c.log(f"direct run {r + 1}/{repeat}: {steps} steps of {args.batch_size} rows, {ref}")
            training_loop.count_tokens = count  # type: ignore[assignment]
            try:
                step_tokens.clear()
                direct_runs.append(direct())
            finally:
                training_loop.count_tokens = counting
            c.log(f"direct: window {direct_runs[-1][0]:.2f}s; nightowl run {r + 1}/{repeat}")
            nightowl_runs.append(through_nightowl())
            c.log(f"nightowl: window {nightowl_runs[-1][0]:.2f}s")
        window_tokens = sum(step_tokens[1:steps])
        direct_window, direct_total = min(direct_runs)
        nightowl_window, nightowl_total, per_step = min(nightowl_runs)

        # -- the cost of persisting metrics, replayed on the same database ---------------------
        # The worker stops first: the scratch run below must not be trained meanwhile.
        worker.stop()
        c.log("replaying record_metrics() for the persistence share")
        with factory() as s:
            scratch = finetunes.submit_finetune(session=s, settings=_settings(), spec=finetunes.
                                                FinetuneSpec(kind=TaskKind.SENTIMENT, base=ref,
                                                             train_rows=train_rows[:20],
                                                             eval_rows=eval_rows[:4],
                                                             hyperparameters={"max_steps": 1}))
            values = {"train/loss": 0.69, "lr": 5e-5, "grad_norm": 1.0,
                      "train/tokens_per_s": 1000.0, "epoch": 0.1}
            t0 = time.perf_counter()
            for step in range(2, steps + 1):
                finetunes.record_metrics(s, scratch.id, step, values)
            persist_s = time.perf_counter() - t0

    direct_tps = window_tokens / direct_window
    nightowl_tps = window_tokens / nightowl_window
    ratio = nightowl_tps / direct_tps
    share = persist_s / nightowl_window
    mode = "quick" if args.quick else "full"
    print(f"finetune_overhead ({mode}): {ref} on SST-2, {steps} steps x {args.batch_size} rows, "
          f"max_length {args.max_length}, {args.threads} torch threads both sides, best of "
          f"{repeat}; window = "
          f"steps 2..{steps} ({window_tokens:,} tokens); {per_step} metric rows a step")
    print(c.load_note(start_machine))
    print(c.table(
        ["side", "window s", "tokens/s", "ms/step", "run total s"],
        [["direct train()", direct_window, direct_tps, 1000 * direct_window / (steps - 1),
          direct_total],
         ["nightowl task path", nightowl_window, nightowl_tps,
          1000 * nightowl_window / (steps - 1), nightowl_total]]))
    print(f"persisting metrics: {1000 * persist_s / (steps - 1):.2f} ms a step = {share:.2%} of "
          "the nightowl window")
    headline = (f"nightowl/direct tokens/s = {ratio:.2f} (goal >= {GOAL}; persisting metrics "
                f"{share:.2%} of the time)")
    if not args.no_record:
        figures = {"model": ref, "steps": steps, "window_tokens": window_tokens,
                   "direct_window_s": direct_window, "nightowl_window_s": nightowl_window,
                   "direct_tokens_per_s": direct_tps, "nightowl_tokens_per_s": nightowl_tps,
                   "ratio": ratio, "persist_s": persist_s, "persist_share": share,
                   "direct_total_s": direct_total, "nightowl_total_s": nightowl_total,
                   "direct_windows": [w for w, _ in direct_runs],
                   "nightowl_windows": [w for w, _, _ in nightowl_runs]}
        path = c.write_record("finetune_overhead", mode=mode, args=vars(args), figures=figures,
                              headline=headline, machine_at_start=start_machine)
        print(f"recorded in {os.path.relpath(path)}")
    print(headline)


def _settings() -> Any:
    from nightowl.common.config import get_settings

    return get_settings()


if __name__ == "__main__":
    main()
