"""Direct requests under concurrency: the openai SDK against a real `nightowl api` process and
a real worker, beside the same requests as one batch and the raw model batched in-process.

For chat (tiny-generator, short answers, temperature 0) and embeddings (MiniLM), at 1, 8, 32
and 128 concurrent clients: throughput (requests/s), p50 and p99 latency; and, through a
second API process with NIGHTOWL_DIRECT_LANE=false on the same worker, the path before the
serving lane (each request a one-item job) at 1 and 32. Then the same
requests as an OpenAI batch (created to completed), and the runner's engine on the same texts
in this process (no API, no broker, no SQL). A streamed 64-token chat is timed too: seconds to
the first content chunk and to the end, streamed and not. The last line holds the headline
ratios (32 concurrent vs one at a time and vs the batch; p50 at 32 vs p50 at 1; first chunk
vs total).

    .venv/bin/python bench/direct_load.py --quick
    NIGHTOWL_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/DB \\
    NIGHTOWL_REDIS_URL=redis://127.0.0.1:6379/N .venv/bin/python bench/direct_load.py

The host is shared: figures taken while other work runs are lower bounds (the load note says).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c
from load import start_api

GEN, EMBED = "tiny-generator", "minilm-embed"
LEVELS = (1, 8, 32, 128)


def _prompt(n: int) -> str:
    return f"Request {n}: the owl that counts at night saw number {n} and"


def _chat_body(n: int, max_tokens: int) -> dict[str, Any]:
    return {"model": GEN, "messages": [{"role": "user", "content": _prompt(n)}],
            "max_tokens": max_tokens, "temperature": 0}


def _embed_body(n: int) -> dict[str, Any]:
    return {"model": EMBED, "input": _prompt(n)}


def _client(url: str, key: str) -> Any:
    import httpx
    import openai

    http = httpx.Client(limits=httpx.Limits(max_connections=512, max_keepalive_connections=512),
                        timeout=300)
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, http_client=http)


def _direct(client: Any, endpoint: str, level: int, requests: int,
            max_tokens: int) -> dict[str, float]:
    """`requests` calls from `level` threads at once; throughput and latency percentiles."""

    def one(n: int) -> float:
        t0 = time.perf_counter()
        if endpoint == "chat":
            client.chat.completions.create(**_chat_body(n, max_tokens))
        else:
            client.embeddings.create(**_embed_body(n))
        return time.perf_counter() - t0

    with ThreadPoolExecutor(level) as pool:
        t0 = time.perf_counter()
        latencies = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - t0
    return {"req_s": requests / wall, "p50_ms": 1000 * c.percentile(latencies, 0.5),
            "p99_ms": 1000 * c.percentile(latencies, 0.99)}


def _batch(client: Any, endpoint: str, requests: int, max_tokens: int) -> float:
    """The same requests as one OpenAI batch: requests per second, created to completed."""
    import io
    import json

    url = "/v1/chat/completions" if endpoint == "chat" else "/v1/embeddings"
    lines = [json.dumps({"custom_id": f"r{n}", "method": "POST", "url": url,
                         "body": _chat_body(n, max_tokens) if endpoint == "chat"
                         else _embed_body(n)}) for n in range(requests)]
    upload = client.files.create(file=("in.jsonl", io.BytesIO("\n".join(lines).encode())),
                                 purpose="batch")
    t0 = time.perf_counter()
    batch = client.batches.create(input_file_id=upload.id, endpoint=url,
                                  completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    if batch.status != "completed" or batch.request_counts.failed:
        raise RuntimeError(f"batch {batch.id} ended {batch.status}: {batch.request_counts}")
    return requests / (time.perf_counter() - t0)


def _raw(st: c.Stack, endpoint: str, requests: int, max_tokens: int) -> float:
    """The engine on the same texts in this process (one torch thread, as a worker child)."""
    from nightowl.common.config import get_settings
    from nightowl.common.enums import TaskKind
    from nightowl.openai import chat
    from nightowl_workers.device import choose_device
    from nightowl_workers.engine import WorkItem, run_batched
    from nightowl_workers.loading import load_for_kind
    from nightowl_workers.runners import make_runner

    c.set_threads(1)
    settings = get_settings()
    ref = GEN if endpoint == "chat" else EMBED
    kind = TaskKind.GENERATE if endpoint == "chat" else TaskKind.EMBED
    source = st.model_source(ref)
    device = choose_device(settings.device)
    model, tokenizer = load_for_kind(kind, str(source), revision=None, device=device,
                                     settings=settings)
    runner = make_runner(kind, model, tokenizer, device)
    if endpoint == "chat":
        template = chat.load_template(str(source))
        texts = [chat.render([{"role": "user", "content": _prompt(n)}], template)
                 for n in range(requests)]
        params: dict[str, Any] = {"max_new_tokens": max_tokens}
    else:
        texts, params = [_prompt(n) for n in range(requests)], {}
    work = [WorkItem(key=n, text=t, params=params) for n, t in enumerate(texts)]
    list(run_batched(runner, work[:8], max_batch_tokens=settings.max_batch_tokens,
                     max_batch_size=settings.max_batch_size, truncate=False))
    t0 = time.perf_counter()
    done = sum(len(x) for x in run_batched(runner, work, max_batch_tokens=settings.max_batch_tokens,
                                            max_batch_size=settings.max_batch_size,
                                            truncate=False))
    assert done == requests
    return requests / (time.perf_counter() - t0)


def _first_chunk(client: Any, tokens: int) -> dict[str, float]:
    """A `tokens`-token chat: first content chunk and end, streamed; end, not streamed. The
    tiny model ends most greedy answers at once, so a seed that samples a full-length answer
    is found first."""
    for seed in range(60):
        body = {**_chat_body(7, tokens), "temperature": 2.0, "seed": seed}
        if client.chat.completions.create(**body).usage.completion_tokens == tokens:
            break
    else:
        raise RuntimeError(f"no seed gave a {tokens}-token answer")
    runs: dict[str, list[float]] = {"first_s": [], "stream_total_s": [], "plain_s": [],
                                    "first_of_total": []}
    for _ in range(7):
        t0 = time.perf_counter()
        first = 0.0
        for chunk in client.chat.completions.create(**body, stream=True):
            if not first and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t0
        total = time.perf_counter() - t0
        t1 = time.perf_counter()
        client.chat.completions.create(**body)
        runs["plain_s"].append(time.perf_counter() - t1)
        runs["first_s"].append(first)
        runs["stream_total_s"].append(total)
        runs["first_of_total"].append(first / total)
    # Medians: on a shared host single runs swing by several times.
    return {name: c.percentile(values, 0.5) for name, values in runs.items()}


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--tokens", type=int, default=8, help="answer length for chat (default 8)")
    p.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--no-lane", action="store_true",
                   help="every level through the job path (NIGHTOWL_DIRECT_LANE=false)")
    args = p.parse_args()
    start_machine = c.start(args)
    per_level = {1: 12 if args.quick else 30, 8: 48 if args.quick else 120,
                 32: 96 if args.quick else 320, 128: 256 if args.quick else 640}
    batch_n = 100 if args.quick else 300
    with c.stack() as st:
        from nightowl.platform.auth import create_key
        from nightowl.platform.db import session_scope

        st.run_cli("models", "add", EMBED, "--kind", "embed", "--source",
                   str(c.minilm_source()), "--copy", "--shared")
        with session_scope() as s:
            key = create_key(s, tenant_name="bench-direct")[1]
        # The clients here are one tenant: let all 128 run at once.
        st.env.update({"NIGHTOWL_MAX_DIRECT_IN_FLIGHT": "1024",
                       "NIGHTOWL_DIRECT_LANE": "false" if args.no_lane else "true"})
        worker = st.start_worker(concurrency=args.concurrency, threads=1)
        api, url, _ = start_api(st)
        st.env["NIGHTOWL_DIRECT_LANE"] = "false"
        old_api, old_url, _ = start_api(st)
        try:
            client = _client(url, key)
            c.log("warming up (each worker process loads both models)")
            for _ in range(2):
                _direct(client, "chat", 4, 8, args.tokens)
                _direct(client, "embed", 4, 8, args.tokens)
            rows: list[list[Any]] = []
            figures: dict[str, Any] = {}
            for endpoint in ("chat", "embed"):
                for level in LEVELS:
                    c.log(f"{endpoint}: {per_level[level]} requests, {level} at a time")
                    got = _direct(client, endpoint, level, per_level[level], args.tokens)
                    figures[f"{endpoint}_{level}"] = got
                    c.log(f"  {got['req_s']:.1f} req/s, p50 {got['p50_ms']:.0f} ms, "
                          f"p99 {got['p99_ms']:.0f} ms")
                    rows.append([endpoint, f"direct x{level}", got["req_s"], got["p50_ms"],
                                 got["p99_ms"]])
                c.log(f"{endpoint}: {batch_n} requests as one batch")
                figures[f"{endpoint}_batch"] = _batch(client, endpoint, batch_n, args.tokens)
                rows.append([endpoint, f"batch of {batch_n}", figures[f"{endpoint}_batch"], "-",
                             "-"])
                c.log(f"  {figures[f'{endpoint}_batch']:.1f} req/s")
                figures[f"{endpoint}_raw"] = _raw(st, endpoint, batch_n, args.tokens)
                c.log(f"  raw: {figures[f'{endpoint}_raw']:.1f} req/s")
                rows.append([endpoint, "raw engine in-process", figures[f"{endpoint}_raw"], "-",
                             "-"])
            old = _client(old_url, key)
            for endpoint in ("chat", "embed"):
                for level in (1, 32):
                    c.log(f"{endpoint}: {per_level[level]} requests, {level} at a time, "
                          "as one-item jobs")
                    got = _direct(old, endpoint, level, per_level[level], args.tokens)
                    figures[f"{endpoint}_{level}_jobs"] = got
                    c.log(f"  {got['req_s']:.1f} req/s, p50 {got['p50_ms']:.0f} ms")
                    rows.append([endpoint, f"one-item jobs x{level}", got["req_s"],
                                 got["p50_ms"], got["p99_ms"]])
            c.log("a streamed 64-token chat")
            figures["stream64"] = _first_chunk(client, 64)
        finally:
            for proc in (api, old_api):
                proc.terminate()
                proc.wait(10)
            if not worker.alive():
                print(worker.output(), file=sys.stderr)
        print(c.table(["endpoint", "load", "req/s", "p50 ms", "p99 ms"], rows))
        s64 = figures["stream64"]
        print(f"64-token chat (medians of 7): first chunk {s64['first_s']:.3f} s, streamed "
              f"total {s64['stream_total_s']:.3f} s, not streamed {s64['plain_s']:.3f} s")
        print(c.load_note(start_machine))
        ch1, ch32, old1 = figures["chat_1"], figures["chat_32"], figures["chat_1_jobs"]
        em1, em32, eold1 = figures["embed_1"], figures["embed_32"], figures["embed_1_jobs"]
        headline = (
            f"at 32 concurrent: chat {ch32['req_s'] / old1['req_s']:.1f}x one-at-a-time as jobs "
            f"({ch32['req_s'] / ch1['req_s']:.1f}x one-at-a-time in the lane; goal >= 10), "
            f"{ch32['req_s'] / figures['chat_batch']:.2f} of batch (goal >= 0.5), p50 "
            f"{ch32['p50_ms'] / old1['p50_ms']:.1f}x one-at-a-time as jobs "
            f"({ch32['p50_ms'] / ch1['p50_ms']:.1f}x in the lane; goal <= 3); embeddings "
            f"{em32['req_s'] / eold1['req_s']:.1f}x ({em32['req_s'] / em1['req_s']:.1f}x), "
            f"{em32['req_s'] / figures['embed_batch']:.2f} of batch, p50 "
            f"{em32['p50_ms'] / eold1['p50_ms']:.1f}x ({em32['p50_ms'] / em1['p50_ms']:.1f}x); "
            f"64-token stream first chunk {s64['first_of_total']:.2f} of total (median of 7; "
            "goal < 0.33)")
        print(headline)
        if not args.no_record:
            c.write_record("direct_load", mode=("quick" if args.quick else "full")
                           + ("-no-lane" if args.no_lane else ""),
                           args=vars(args), figures=figures, headline=headline,
                           machine_at_start=start_machine)


if __name__ == "__main__":
    main()
