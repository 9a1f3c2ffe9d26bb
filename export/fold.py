"""Fold a trained model into the float reference network (:mod:`spikefold.export.float_net`). Folding is exact
in floating point:

- BatchNorm (linear or conv, tdBN included) into the preceding weights: ``W' = diag(g / sqrt(var + eps)) W``,
  ``b' = beta - g mean / sqrt(var + eps)`` per output channel;
- 2x2 average pooling into the *next* synapse: a pooled map feeding a k x k convolution (stride s, padding p)
  is the unpooled map feeding a 2k x 2k convolution (stride 2s, padding 2p) whose kernel repeats each weight over
  a 2x2 block, divided by 4; a pooled map feeding the readout likewise spreads each weight over its 2x2 block;
- residual blocks into layers that sum several connections (a SEW block's sum stays a sum of spike sources).

The neurons stay as trained: their inference forms (input gain, output scale, decay, threshold, initial
potential, reset) are folded into integers by :func:`spikefold.export.quantise.quantise`.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from torch import nn

from spikefold.core.errors import ConfigError
from spikefold.export.float_net import FloatInput, FloatLayer, FloatNetwork
from spikefold.export.intnet import INPUT
from spikefold.train.models import ResidualBlock, SpikingBlock, SpikingModel, TdBatchNorm
from spikefold.train.neurons import SpikingNeuron

EXPORTABLE = ("mlp", "vgg", "resnet19", "sew_resnet19")


def _bn_fold(weight: torch.Tensor, bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    inv_std = 1.0 / torch.sqrt(bn.running_var.detach().cpu().double() + bn.eps)
    gamma = bn.weight.detach().cpu().double() if bn.affine else torch.ones_like(inv_std)
    if isinstance(bn, TdBatchNorm):
        gamma = gamma * bn.scale
    beta = bn.bias.detach().cpu().double() if bn.affine else torch.zeros_like(inv_std)
    scale = gamma * inv_std
    w = weight.detach().cpu().double()
    w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    return w.numpy(), (beta - gamma * bn.running_mean.detach().cpu().double() * inv_std).numpy()


def pool_into_conv(kernel: np.ndarray, stride: int, padding: int) -> tuple[np.ndarray, int, int]:
    """A k x k convolution after 2x2 average pooling, as one 2k x 2k convolution of the unpooled map."""
    return np.repeat(np.repeat(kernel, 2, axis=2), 2, axis=3) / 4.0, 2 * stride, 2 * padding


def pool_into_linear(weight: np.ndarray, shape: tuple[int, int, int], window: int = 2) -> np.ndarray:
    """A linear layer on a flattened ``window`` x ``window``-average-pooled (C, H, W) map (stride = window), as
    one on the unpooled map; rows and columns the pooling drops get zero weight."""
    c, h, w = shape
    pooled = weight.reshape(-1, c, h // window, w // window)
    spread = np.zeros((weight.shape[0], c, h, w))
    spread[:, :, : h // window * window, : w // window * window] = \
        np.repeat(np.repeat(pooled, window, axis=2), window, axis=3) / window**2
    return spread.reshape(weight.shape[0], -1)


@dataclasses.dataclass
class _Signal:
    """What a weight layer of the model reads, in the folded network's terms: the sum of some layers' outputs
    (or the input), all of one shape, seen through a pooling that folds into the weights reading it. A SEW
    block's output is such a sum: each reader gets one connection per addend, so no neuron ever sends more
    than a binary spike."""

    sources: list[str]
    shape: tuple[int, ...]
    pool: str | None = None  # "avg2" (2x2 average, stride 2) or "global" (average over the whole map)

    def pooled(self, kind: str) -> "_Signal":
        if self.pool is not None:
            raise ConfigError(f"export folds one pooling between two weight layers; '{kind}' follows '{self.pool}'")
        return _Signal(self.sources, self.shape, kind)


class _Folder:
    """Walks a model's blocks in execution order, folding each into a :class:`FloatLayer`."""

    def __init__(self):
        self.layers: list[FloatLayer] = []

    def inputs(self, signal: _Signal, weight: np.ndarray, geometry: tuple[int, int] | None) -> list[FloatInput]:
        """One connection per source of ``signal`` into a weight layer (its weight already folded with BatchNorm;
        ``geometry``: a convolution's (stride, padding), None for a linear layer), with the signal's pooling
        folded into the weights."""
        conv = None
        if geometry is not None:
            stride, padding = geometry
            if signal.pool == "avg2":
                weight, stride, padding = pool_into_conv(weight, stride, padding)
            elif signal.pool == "global":
                raise ConfigError("a convolution after global average pooling cannot be exported")
            conv = {"input_shape": tuple(signal.shape), "stride": stride, "padding": padding}
        elif signal.pool is not None:
            window = 2 if signal.pool == "avg2" else signal.shape[1]
            if signal.pool == "global" and signal.shape[1] != signal.shape[2]:
                raise ConfigError(f"global pooling of a non-square {signal.shape[1:]} map cannot be exported")
            weight = pool_into_linear(weight, signal.shape, window)
        return [FloatInput(source, weight, conv) for source in signal.sources]

    def geometry(self, module: nn.Module) -> tuple[int, int] | None:
        """(stride, padding) of a convolution, None for a linear layer."""
        if not isinstance(module, nn.Conv2d):
            return None
        if module.groups != 1 or module.dilation not in (1, (1, 1)):
            raise ConfigError(f"layer {len(self.layers)}: grouped or dilated convolutions cannot be exported yet")
        return module.stride[0], module.padding[0]

    def add(self, name: str, inputs: list[FloatInput], bias: np.ndarray, neuron: SpikingNeuron | None) -> _Signal:
        self.layers.append(FloatLayer(name, inputs, bias, neuron))
        return _Signal([name], inputs[0].output_shape())

    def block(self, name: str, signal: _Signal, block: SpikingBlock) -> _Signal:
        """weight -> BatchNorm -> neuron, reading ``signal``."""
        weight, bias = _bn_fold(block.weight.weight, block.bn)
        return self.add(name, self.inputs(signal, weight, self.geometry(block.weight)), bias, block.neuron)

    def residual(self, names: dict[str, str], path: str, x: _Signal, block: ResidualBlock) -> _Signal:
        """The block at module ``path``, its layers named as the model names them (``names``)."""
        h = self.block(names[f"{path}.conv1"], x, block.conv1)
        if block.sew:  # SN(BN(conv2 h)) + shortcut: the sum stays a sum of binary spike sources
            out = self.block(names[f"{path}.conv2"], h, block.conv2)
            shortcut = x if block.down is None else self.block(names[f"{path}.down"], x, block.down)
            return _Signal(out.sources + shortcut.sources, out.shape)
        # Standard block: SN(BN(conv2 h) + shortcut x), the shortcut a 1x1 conv + BN or the identity.
        weight, bias = _bn_fold(block.conv2.weight.weight, block.conv2.bn)
        inputs = self.inputs(h, weight, self.geometry(block.conv2.weight))
        if block.down is None:  # the identity, as a 1x1 convolution
            channels = x.shape[0]
            inputs += self.inputs(x, np.eye(channels).reshape(channels, channels, 1, 1), (1, 0))
        else:
            conv, norm = block.down
            down_weight, down_bias = _bn_fold(conv.weight, norm)
            inputs += self.inputs(x, down_weight, self.geometry(conv))
            bias = bias + down_bias
        return self.add(names[f"{path}.conv2"], inputs, bias, block.neuron)

    def readout(self, name: str, signal: _Signal, linear: nn.Linear) -> None:
        weight = linear.weight.detach().cpu().double().numpy()
        bias = linear.bias.detach().cpu().double().numpy() if linear.bias is not None else np.zeros(linear.out_features)
        self.add(name, self.inputs(signal, weight, None), bias, None)


def fold(model: SpikingModel) -> FloatNetwork:
    """Fold BatchNorm (with its running statistics) and pooling; the neurons stay as trained (their input gain,
    output scale, threshold and initial potential are folded by :func:`quantise`)."""
    cfg = model.cfg
    if cfg.arch not in EXPORTABLE:
        raise ConfigError(f"export folds {', '.join(EXPORTABLE)} models; '{cfg.arch}' cannot be exported yet")
    # On the CPU, where the float reference network runs (a model trained on a GPU stays there, untouched).
    model = copy.deepcopy(model).cpu().eval()
    folder = _Folder()
    names = model.layer_names()  # the layers keep the model's names, as the training probes report them
    signal = _Signal([INPUT], tuple(cfg.input_shape))
    if cfg.arch == "mlp":
        for k, block in enumerate(model.hidden):
            signal = folder.block(names[f"hidden.{k}"], signal, block)
    elif cfg.arch == "vgg":
        for i, item in enumerate(model.features):
            if isinstance(item, nn.AvgPool2d):
                if item.kernel_size not in (2, (2, 2)) or item.stride not in (2, (2, 2)):
                    raise ConfigError("export folds 2x2 average pooling (stride 2) only")
                signal = signal.pooled("avg2")
            else:
                signal = folder.block(names[f"features.{i}"], signal, item)
    else:
        signal = folder.block(names["stem"], signal, model.stem)
        for k, block in enumerate(model.blocks):
            signal = folder.residual(names, f"blocks.{k}", signal, block)
        signal = signal.pooled("global")
        if model.head is not None:
            signal = folder.block(names["head"], signal, model.head)
    folder.readout(names["readout"], signal, model.readout)
    return FloatNetwork(folder.layers, cfg.timesteps, tuple(cfg.input_shape), bool(cfg.temporal_input))
