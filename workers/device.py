"""Which device a worker runs on, in which dtype, with how many threads."""

from __future__ import annotations

import re

import torch

from nightowl.common.errors import ConfigError

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


def choose_device(requested: str = "auto") -> torch.device:
    """Resolve NIGHTOWL_DEVICE ("auto", "cpu", "cuda" or "cuda:N") to a usable torch.device."""
    value = requested.strip().lower()
    if value in ("", "auto"):
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if value == "cpu":
        return torch.device("cpu")
    match = _CUDA_RE.match(value)
    if match is None:
        raise ConfigError(
            f"device {requested!r} is not understood; use 'auto', 'cpu' or 'cuda:N'"
        )
    index = int(match.group(1) or 0)
    # Asking is_available() before device_count() keeps a CPU-only build from raising
    # torch's own, less helpful, "Torch not compiled with CUDA enabled".
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        visible = f"{count} CUDA device(s) are visible" if count else "no CUDA device is visible"
        raise ConfigError(
            f"device {requested!r} was requested but {visible}; "
            "set NIGHTOWL_DEVICE to 'auto' or 'cpu', or check CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", index)


def inference_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it (fp16 overflows more easily), fp16 on older GPUs, fp32 on CPU.

    CPU half precision is slower than fp32 for these kernels on most hosts, so CPU stays fp32.
    """
    if device.type == "cuda":
        with torch.cuda.device(device):
            if torch.cuda.is_bf16_supported():
                return torch.bfloat16
        return torch.float16
    return torch.float32


def configure_threads(n: int) -> None:
    """Pin torch's intra-op threads; n <= 0 leaves torch's default alone.

    Oversubscribing cores (2 processes x 2 threads on 2 cores) measured 3x slower than
    2 x 1, so the caller passes cores divided by the worker's concurrency.
    """
    if n > 0:
        torch.set_num_threads(n)
