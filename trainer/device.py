"""One code path for CPU and GPU: pick the device, and mixed precision only where it pays.

On CUDA the forward pass runs under bfloat16 autocast (no loss scaling needed, unlike float16); on the CPU
autocast is off, because bfloat16 matmuls are slower than float32 on most server CPUs without AMX.
"""

from __future__ import annotations

import contextlib

import torch


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given ("cpu", "cuda", "cuda:1"), else CUDA when present, else the CPU."""
    if name and name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
