"""Checkpoints: written atomically (spikefold.core.files, so a crash never leaves half a file) and read with
``torch.load(weights_only=True)``, which refuses pickled code. A checkpoint holds only tensors and plain
values: the model config, the state dict and, for resuming, the optimiser state and epoch.

Format 2 names neuron options and parameters as every type now does (``beta`` the decay factor, reset "zero" or
"subtract"); a format-1 checkpoint, written before, loads with its names mapped (neurons.old_names_mapped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from spikefold.core import files
from spikefold.core.errors import CheckpointError
from spikefold.train import neurons

FORMAT = "spikefold-checkpoint-2"
FORMAT_BEFORE_RENAMES = "spikefold-checkpoint-1"


def save(path: str | Path, payload: dict[str, Any]) -> Path:
    with files.atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return Path(path)


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `spikefold train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged archive surfaces as many exception types; all mean the same to a user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({first}); it is corrupt or not a spikefold "
            "checkpoint: re-run `spikefold train`") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, FORMAT_BEFORE_RENAMES):
        raise CheckpointError(f"{path} is not a spikefold checkpoint (expected format '{FORMAT}')")
    for key in ("model_config", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} has no '{key}'; re-run `spikefold train`")
    if payload["format"] == FORMAT_BEFORE_RENAMES:
        payload = _names_mapped(path, payload)
    return payload


def _names_mapped(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint in format 2's names."""
    config, state_dict = payload["model_config"], payload["state_dict"]
    if not isinstance(config, dict) or not isinstance(state_dict, dict):
        raise CheckpointError(f"checkpoint {path}: its model config and state dict must be mappings; it is "
                              "corrupt: re-run `spikefold train`")
    neuron = dict(config.get("neuron") or {})
    if not isinstance(neuron.get("options", {}), dict):
        raise CheckpointError(f"checkpoint {path}: its neuron options must be a mapping; it is corrupt: re-run "
                              "`spikefold train`")
    neuron["options"], state_dict = neurons.old_names_mapped(str(neuron.get("kind", "lif")),
                                                             neuron.get("options", {}), state_dict)
    return {**payload, "format": FORMAT, "model_config": {**config, "neuron": neuron}, "state_dict": state_dict}
