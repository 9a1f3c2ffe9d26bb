"""Models. Each hidden block is Linear (no bias) -> BatchNorm -> spiking neuron; the readout is a Linear whose
output is averaged over timesteps (time-averaged logits). Direct input: the same analog x every timestep."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from spikefold.train.neurons import LIF


@dataclasses.dataclass
class MLPConfig:
    """Everything needed to rebuild the model; stored in checkpoints as plain values."""

    sizes: tuple[int, ...] = (64, 128, 128, 10)
    timesteps: int = 4
    beta: float = 0.5
    learn_beta: bool = False
    vth: float = 1.0
    surrogate_width: float = 1.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sizes"] = list(self.sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MLPConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; valid: {sorted(fields)}")
        d = dict(d)
        if "sizes" in d:
            d["sizes"] = tuple(int(s) for s in d["sizes"])
        return cls(**d)


class HiddenBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, cfg: MLPConfig):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=False)
        self.bn = nn.BatchNorm1d(n_out)
        self.neuron = LIF(cfg.beta, cfg.vth, cfg.surrogate_width, cfg.learn_beta)

    def currents(self, x: torch.Tensor) -> torch.Tensor:
        """Input currents I(t) for x shaped (T, batch, n_in); BN statistics pool timesteps and samples."""
        steps, batch = x.shape[:2]
        return self.bn(self.linear(x.flatten(0, 1))).unflatten(0, (steps, batch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.currents(x))


class SpikingMLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        if len(cfg.sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output size, got sizes={cfg.sizes}")
        if cfg.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {cfg.timesteps}")
        self.cfg = cfg
        pairs = list(zip(cfg.sizes[:-2], cfg.sizes[1:-1]))
        self.hidden = nn.ModuleList(HiddenBlock(a, b, cfg) for a, b in pairs)
        self.readout = nn.Linear(cfg.sizes[-2], cfg.sizes[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, features) analog input -> time-averaged logits (batch, classes)."""
        h = x.unsqueeze(0).expand(self.cfg.timesteps, *x.shape)
        for block in self.hidden:
            h = block(h)
        return self.readout(h).mean(0)
