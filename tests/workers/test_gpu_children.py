"""`nightowl worker --device cuda:all / --gpus N`: one solo process per visible card."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nightowl.cli.gpus import plan_children, visible_gpus

SMI = "0\n1\n2\n3\n"


def test_cuda_visible_devices_wins_over_nvidia_smi_and_stops_where_cuda_stops() -> None:
    assert visible_gpus({}, SMI) == ["0", "1", "2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, SMI) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8a1f,GPU-77c2"}, None) == [
        "GPU-8a1f", "GPU-77c2"]
    # CUDA ignores everything from the first invalid entry on; empty hides every card.
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,3"}, SMI) == ["1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, SMI) == []
    assert visible_gpus({}, None) == []
    assert visible_gpus({}, "No devices were found\n") == []


def test_each_child_sees_only_its_own_card_as_cuda0_and_is_named_apart() -> None:
    children = plan_children(["2", "3", "5"], count=None, queues="gpu,train", loglevel="info",
                             hostname=None, pid=42)
    assert [c.card for c in children] == ["2", "3", "5"]
    assert [c.env for c in children] == [{"CUDA_VISIBLE_DEVICES": card} for card in "235"]
    for n, child in enumerate(children):
        args = child.args
        assert args[:3] == ["worker", "-Q", "gpu,train"]
        assert args[args.index("--device") + 1] == "cuda:0"
        assert args[args.index("-n") + 1] == f"nightowl-42-gpu{n}@%h"
    firsts = plan_children(["0", "1", "2", "3"], count=2, queues="gpu", loglevel="info",
                           hostname="box@node7", pid=1)
    assert [(c.card, c.args[-1]) for c in firsts] == [("0", "box-gpu0@node7"),
                                                      ("1", "box-gpu1@node7")]


def test_asking_for_more_gpus_than_visible_or_none_is_refused_with_a_way_out() -> None:
    with pytest.raises(ValueError, match=r"--gpus 3 .* 2 visible \(0, 1\).* at most 2"):
        plan_children(["0", "1"], count=3, queues="gpu", loglevel="info", hostname=None, pid=1)
    with pytest.raises(ValueError, match=r"no GPU is visible.*--device cpu"):
        plan_children([], count=None, queues="gpu", loglevel="info", hostname=None, pid=1)


@pytest.mark.parametrize("flags", [["--device", "cuda:all"], ["--gpus", "2"]])
def test_worker_on_a_host_without_gpus_refuses_plainly(flags: list[str]) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "nightowl", "worker", "-Q", "gpu", *flags],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "no GPU is visible" in proc.stderr and "--device cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
