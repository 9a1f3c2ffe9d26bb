"""Training across processes (DDP under torchrun): whether this process is one of several, and sums over all of
them. The neurons' running statistics and the fused kernels both use these, so they live apart from either."""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    """Whether this process is one of several in a process group (DDP under torchrun)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_sum(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Sum tensors over all processes when running distributed (a no-op otherwise)."""
    if not distributed():
        return list(tensors)
    packed = torch.stack([t.detach().to(torch.float64).reshape(()) for t in tensors])
    dist.all_reduce(packed)
    return list(packed.to(tensors[0].dtype).unbind())

