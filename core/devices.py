"""The one place a user's device option becomes a torch device, for training and for the simulator alike."""

from __future__ import annotations

import torch

from spikefold.core.errors import ConfigError


def resolve_device(device: str | None) -> torch.device:
    """A torch device from a user's option: None or "auto" (CUDA when present), "cpu", "cuda[:N]"; a named error
    for anything else, or for CUDA on a machine without it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device '{device}'; use auto, cpu or cuda[:N]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' asked for, but this machine has no CUDA device; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{device}' is not supported; use auto, cpu or cuda[:N]")
    return dev
