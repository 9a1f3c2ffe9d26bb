"""Models, for any neuron type. Every spiking block is weight layer (no bias) -> BatchNorm -> neuron; tensors
are (T, batch, ...) and the weight layers see T folded into the batch. Direct input: the same analog x every
timestep, so the first weight layer and its BatchNorm run once and are repeated over T. Logits are the readout
layer's output averaged over timesteps.

    mlp            features -> hidden... -> classes
    vgg            VGGSNN (as in the DS-ATGO/TET CIFAR10-DVS set-up): 64C3-128C3-AP2-256C3-256C3-AP2-
                   512C3-512C3-AP2-512C3-512C3-AP2-FC; ``widths``/``plan`` scale it down for small inputs
    resnet19       ResNet-19 with the standard spiking block: SN(BN(conv(SN(BN(conv x)))) + shortcut(x))
    sew_resnet19   ResNet-19 with SEW additive blocks: SN(BN(conv(SN(BN(conv x))))) + shortcut(x), so block
                   outputs are spike counts above 1, and a spiking FC-256 head before the classifier
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from spikefold.core.errors import ConfigError
from spikefold.train.neurons import AGL, NeuronConfig, SpikingNeuron
from spikefold.train.neurons import build as build_neuron

ARCHS = ("mlp", "vgg", "resnet19", "sew_resnet19")
NORMS = ("bn", "tdbn")
VGG_PLAN = (64, 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A")
RESNET19_STAGES = ((128, 3, 1), (256, 3, 2), (512, 2, 2))  # (channels, blocks, stride)


def check_keys(cls, d: dict, what: str) -> None:
    """A named error listing the valid keys when ``d`` has one the dataclass ``cls`` does not."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
        raise ConfigError(f"unknown {what} {sorted(unknown)}; valid: {sorted(fields)}")


@dataclasses.dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in checkpoints as plain values."""

    arch: str = "mlp"
    input_shape: tuple[int, ...] = (64,)  # (features,) for mlp, (channels, height, width) for conv nets
    classes: int = 10
    timesteps: int = 4
    neuron: NeuronConfig = dataclasses.field(default_factory=NeuronConfig)
    norm: str = "bn"  # "tdbn": threshold-dependent BatchNorm (MPD-AGL), scales x_hat by alpha * Vth
    tdbn_alpha: float = 1.0
    hidden: tuple[int, ...] = (128, 128)  # mlp layer sizes
    width: float = 1.0  # channel multiplier for conv nets
    plan: tuple[Any, ...] | None = None  # vgg: channels and "A" (2x2 average pooling); default VGG_PLAN
    temporal_input: bool = False  # samples are sequences (T, *input_shape), e.g. DVS frames

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["neuron"] = self.neuron.to_dict()
        for key in ("input_shape", "hidden", "plan"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        check_keys(cls, d, "model config keys")
        d = dict(d)
        d["neuron"] = NeuronConfig.from_dict(d.get("neuron", {}))
        for key in ("input_shape", "hidden", "plan"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


class TdBatchNorm(nn.BatchNorm2d):
    """Threshold-dependent BatchNorm: alpha * Vth * gamma * x_hat + beta (per channel). Folds like BatchNorm with
    gamma_eff = alpha * Vth * gamma. Works on (N, C) and (N, C, H, W)."""

    def __init__(self, channels: int, scale: float):
        super().__init__(channels)
        self.scale = scale

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"TdBatchNorm expects (N, C) or (N, C, H, W), got {tuple(x.shape)}")

    def forward(self, x):
        self._check_input_dim(x)
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight * self.scale, self.bias,
                            self.training, self.momentum, self.eps)


def _norm(cfg: ModelConfig, channels: int, dims: int) -> nn.Module:
    if cfg.norm == "tdbn":
        vth = cfg.neuron.options.get("vth", 0.5 if cfg.neuron.kind == "agl" else 1.0)
        return TdBatchNorm(channels, cfg.tdbn_alpha * vth)
    return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)


def _over_time(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample module to (T, batch, ...) by folding T into the batch."""
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class SpikingBlock(nn.Module):
    """weight layer (no bias) -> BatchNorm -> spiking neuron."""

    def __init__(self, weight: nn.Module, cfg: ModelConfig, channels: int, dims: int):
        super().__init__()
        self.weight = weight
        self.bn = _norm(cfg, channels, dims)
        self.neuron = build_neuron(cfg.neuron, cfg.timesteps)
        if isinstance(self.neuron, AGL):
            self.neuron.bind_norm(self.bn)

    def currents(self, x: torch.Tensor, static: bool = False) -> torch.Tensor:
        """Input currents I(t) for x shaped (T, batch, ...); ``static`` input is computed once for all T."""
        if static:
            once = self.bn(self.weight(x[0]))
            return once.unsqueeze(0).expand(x.shape[0], *once.shape)
        return _over_time(lambda z: self.bn(self.weight(z)), x)

    def forward(self, x: torch.Tensor, static: bool = False) -> torch.Tensor:
        return self.neuron(self.currents(x, static))


class SpikingModel(nn.Module, abc.ABC):
    """Common to every architecture: direct input repeated over T, time-averaged logits, auxiliary losses."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg

    @abc.abstractmethod
    def layer_names(self) -> dict[str, str]:
        """The name each weight layer keeps through export, the integer network and every report (``hidden0``,
        ``conv3``, ``block2_conv1``, ``readout``), keyed by the module path of what makes it up."""

    def layer_of(self, path: str, names: dict[str, str] | None = None) -> str:
        """The layer name of the module or parameter at ``path`` (say ``hidden.1.weight.weight``: ``hidden1``);
        ``names``: :meth:`layer_names`, when the caller already has it."""
        names = self.layer_names() if names is None else names
        parts = path.split(".")
        for end in range(len(parts), 0, -1):
            name = names.get(".".join(parts[:end]))
            if name is not None:
                return name
        raise KeyError(f"{path} belongs to no layer of the {self.cfg.arch} model")

    def neurons(self) -> list[tuple[str, SpikingNeuron]]:
        """Every neuron module, with the name of its layer."""
        names = self.layer_names()
        return [(self.layer_of(path, names), m) for path, m in self.named_modules() if isinstance(m, SpikingNeuron)]

    def _neuron_modules(self) -> list[SpikingNeuron]:
        return [m for m in self.modules() if isinstance(m, SpikingNeuron)]

    def set_backend(self, name: str) -> None:
        """Run every neuron layer on ``name``: "auto", "eager" or "triton" (see spikefold.train.kernels)."""
        for neuron in self._neuron_modules():
            neuron.backend = name

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The sum of the neurons' regularisers from the last forward (PDA), or None; every training step."""
        terms = [m.auxiliary_loss for m in self._neuron_modules() if m.auxiliary_loss is not None]
        return torch.stack(terms).sum() if terms else None

    @property
    def static_input(self) -> bool:
        """Direct input: the same x at every timestep, so the first layer's currents are computed once."""
        return not self.cfg.temporal_input

    def repeat(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, ...) input -> (T, batch, *input_shape): direct input repeated, or a sequence transposed."""
        if self.cfg.temporal_input:
            if x.shape[1] != self.cfg.timesteps:
                raise ConfigError(f"sequence input has {x.shape[1]} steps; the model runs {self.cfg.timesteps}")
            return x.reshape(x.shape[0], self.cfg.timesteps, *self.cfg.input_shape).transpose(0, 1)
        x = x.reshape(x.shape[0], *self.cfg.input_shape)
        return x.unsqueeze(0).expand(self.cfg.timesteps, *x.shape)


class SpikingMLP(SpikingModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        sizes = (cfg.input_shape[0], *cfg.hidden)
        self.hidden = nn.ModuleList(SpikingBlock(nn.Linear(a, b, bias=False), cfg, b, 1)
                                    for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = nn.Linear(sizes[-1], cfg.classes)

    def layer_names(self) -> dict[str, str]:
        return {f"hidden.{k}": f"hidden{k}" for k in range(len(self.hidden))} | {"readout": "readout"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, features) -> logits (batch, classes)."""
        h = self.repeat(x)
        for i, block in enumerate(self.hidden):
            h = block(h, static=i == 0 and self.static_input)
        return self.readout(h).mean(0)


class VGGSNN(SpikingModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        channels, height, width = cfg.input_shape
        layers = []
        for item in cfg.plan or VGG_PLAN:
            if item == "A":
                layers.append(nn.AvgPool2d(2))
                height, width = height // 2, width // 2
                continue
            out = max(1, int(round(int(item) * cfg.width)))
            layers.append(SpikingBlock(nn.Conv2d(channels, out, 3, padding=1, bias=False), cfg, out, 2))
            channels = out
        if height < 1 or width < 1:
            raise ConfigError(f"vgg: input {cfg.input_shape} is too small for {sum(i == 'A' for i in cfg.plan or VGG_PLAN)} "
                              "poolings; give a shorter 'plan'")
        self.features = nn.ModuleList(layers)
        self.readout = nn.Linear(channels * height * width, cfg.classes)

    def layer_names(self) -> dict[str, str]:
        blocks = [i for i, item in enumerate(self.features) if isinstance(item, SpikingBlock)]
        return {f"features.{i}": f"conv{k}" for k, i in enumerate(blocks)} | {"readout": "readout"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, static = self.repeat(x), self.static_input
        for layer in self.features:
            if isinstance(layer, SpikingBlock):
                h, static = layer(h, static), False
            else:
                h = _over_time(layer, h)
        return self.readout(h.flatten(2)).mean(0)


class ResidualBlock(nn.Module):
    """Two 3x3 spiking convolutions with a shortcut; ``sew`` adds after the second neuron (SEW ADD), the
    standard block adds the BatchNorm outputs and fires once after the sum."""

    def __init__(self, cfg: ModelConfig, cin: int, cout: int, stride: int, sew: bool):
        super().__init__()
        self.sew = sew
        self.conv1 = SpikingBlock(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), cfg, cout, 2)
        self.conv2 = SpikingBlock(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), cfg, cout, 2)
        self.down = None
        if stride != 1 or cin != cout:
            conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
            # SEW's downsampling shortcut fires (its output joins spikes); the standard one adds currents.
            self.down = SpikingBlock(conv, cfg, cout, 2) if sew else nn.Sequential(conv, _norm(cfg, cout, 2))
        if not sew:
            self.neuron = build_neuron(cfg.neuron, cfg.timesteps)
            if isinstance(self.neuron, AGL):
                self.neuron.bind_norm(self.conv2.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        if self.sew:
            shortcut = x if self.down is None else self.down(x)
            return self.conv2(h) + shortcut
        shortcut = x if self.down is None else _over_time(self.down, x)
        return self.neuron(self.conv2.currents(h) + shortcut)


class ResNet19(SpikingModel):
    def __init__(self, cfg: ModelConfig, sew: bool):
        super().__init__(cfg)
        channels = cfg.input_shape[0]
        stem = max(1, int(round(128 * cfg.width)))
        self.stem = SpikingBlock(nn.Conv2d(channels, stem, 3, 1, 1, bias=False), cfg, stem, 2)
        blocks, cin = [], stem
        for planes, count, stride in RESNET19_STAGES:
            cout = max(1, int(round(planes * cfg.width)))
            for i in range(count):
                blocks.append(ResidualBlock(cfg, cin, cout, stride if i == 0 else 1, sew))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = SpikingBlock(nn.Linear(cin, 256, bias=False), cfg, 256, 1) if sew else None
        self.readout = nn.Linear(256 if sew else cin, cfg.classes)

    def layer_names(self) -> dict[str, str]:
        names = {"stem": "stem", "readout": "readout"} | ({"head": "head"} if self.head is not None else {})
        for k, block in enumerate(self.blocks):
            names |= {f"blocks.{k}.conv1": f"block{k}_conv1", f"blocks.{k}.conv2": f"block{k}_conv2"}
            # A standard block's shortcut and neuron belong to its second layer (it fires once, after the sum);
            # SEW's downsampling shortcut is a layer of its own.
            names |= ({f"blocks.{k}.down": f"block{k}_down"} if block.sew else
                      {f"blocks.{k}.down": f"block{k}_conv2", f"blocks.{k}.neuron": f"block{k}_conv2"})
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(self.repeat(x), static=self.static_input)
        for block in self.blocks:
            h = block(h)
        h = _over_time(self.pool, h).flatten(2)
        if self.head is not None:
            h = self.head(h)
        return self.readout(h).mean(0)


def build_model(cfg: ModelConfig) -> SpikingModel:
    if cfg.arch not in ARCHS:
        raise ConfigError(f"unknown architecture '{cfg.arch}'; valid: {', '.join(ARCHS)}")
    if cfg.norm not in NORMS:
        raise ConfigError(f"unknown norm '{cfg.norm}'; valid: {', '.join(NORMS)}")
    if cfg.timesteps < 1:
        raise ConfigError(f"timesteps must be >= 1, got {cfg.timesteps}")
    conv = cfg.arch != "mlp"
    if conv and len(cfg.input_shape) != 3:
        raise ConfigError(f"{cfg.arch} needs input_shape (channels, height, width), got {cfg.input_shape}")
    if not conv and len(cfg.input_shape) != 1:
        raise ConfigError(f"mlp needs input_shape (features,), got {cfg.input_shape}; flatten the data")
    if cfg.arch == "mlp":
        return SpikingMLP(cfg)
    if cfg.arch == "vgg":
        return VGGSNN(cfg)
    return ResNet19(cfg, sew=cfg.arch == "sew_resnet19")


def batchnorm_from_data(model: nn.Module, x) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``x`` (one pass in training mode, momentum 1).

    After a few optimiser steps the running statistics (momentum 0.1) are far from what the network computes,
    and in eval mode it falls silent; briefly trained test and benchmark models use this so every layer is
    active. Returns the model in eval mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    with torch.no_grad():
        model(torch.as_tensor(x, dtype=torch.float32))
    return model.eval()
