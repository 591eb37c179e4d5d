"""Adam state that survives table growth and checkpoints, keyed by parameter name.

Growing an embedding replaces its `nn.Parameter`, which orphans the optimiser's moments; these helpers move
the moments over by name and zero-pad the new rows, so growth neither resets nor corrupts what Adam knows.
"""

from __future__ import annotations

import torch
from torch import nn


def make_adam(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    # foreach is the fast path on CPU and GPU alike; fused needs every parameter on the GPU.
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)


def adam_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict[str, torch.Tensor]]:
    named = {id(p): name for name, p in model.named_parameters()}
    return {named[id(p)]: dict(state) for p, state in optimizer.state.items() if id(p) in named}


def load_adam_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer,
                            states: dict[str, dict[str, torch.Tensor]]) -> None:
    """Install moments by name; a table that grew since gets zero moments for its new rows."""
    for name, param in model.named_parameters():
        state = states.get(name)
        if not state:
            continue
        fitted = {}
        for key, value in state.items():
            if key == "step":  # non-capturable Adam keeps its step counter on the CPU, even for CUDA params
                fitted[key] = value.detach().cpu()
                continue
            value = value.to(param.device)
            if value.shape != param.shape:
                padded = torch.zeros_like(param)
                padded[: value.shape[0]] = value[: param.shape[0]]
                value = padded
            fitted[key] = value
        optimizer.state[param] = fitted


def reset_rows(optimizer: torch.optim.Optimizer, param: nn.Parameter, rows: torch.Tensor) -> None:
    """Forget the moments of some rows (a rebuilt row must not be pushed by its poisoned past)."""
    state = optimizer.state.get(param)
    if state:
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0
