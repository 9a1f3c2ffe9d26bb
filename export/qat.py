"""Quantisation-aware fine-tuning through the integer forward (straight-through).

The forward pass *is* the integer network: every timestep calls :mod:`spikefold.export.intnet`'s equations on
int64 tensors (the same integers the simulator and Lava compute), so what the loss sees is what the hardware
will do. The backward pass is straight-through: a float64 shadow of the same step, in integer units, whose
values are replaced by the exact ones and whose derivatives treat rounding, truncation, flooring shifts and
wrap-around as the identity, and the spike as a rectangular surrogate one threshold wide::

    a   = sum_c (W_c s_c) 2**e_c              (+ the initial potential's pulse at t = 0)
    u   = u (4096 - du - 1) / 4096 + 64 a
    v'  = v (4096 - dv) / 4096 + u + bias     s = H(v' - 64 vth[t])      v = v'(1 - s) or v' - 64 vth[t] s

What trains are the connections' weights and the neurons' biases, held as reals in integer units: the
forward uses ``integer_weights(w)`` (the values Lava's Dense keeps) and ``round(b / 2**bias_exp)`` as the
bias mantissa. Everything else (scales, weight and bias exponents, thresholds, decays, initial potentials)
stays as export chose it, so the fine-tuned integers are drop-in replacements. :func:`finetune` returns the
integers its final reals round to: the network a forward pass would now run, integer for integer.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spikefold.core.errors import ConfigError
from spikefold.export.float_net import FloatNetwork
from spikefold.export.hw_config import HwConfig
from spikefold.export.intnet import (ACT_SHIFT, DECAY_UNITY, INPUT, VTH_SHIFT, IntNetwork, integer_weights, shift,
                                     weight_step, wrap32)
from spikefold.export.quantise import layer_terms
from spikefold.train import surrogates


@dataclasses.dataclass
class QATResult:
    net: IntNetwork  # the fine-tuned integer network
    history: list[dict]  # per epoch: mean loss and the integer network's accuracy on the batches it trained on


def _straight_through(shadow: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact``'s values with ``shadow``'s derivative."""
    return shadow + (exact.to(shadow.dtype) - shadow).detach()


class IntegerForward(nn.Module):
    """The integer network ``net`` as a torch module whose forward is exact and whose weights and biases
    train (see the module docstring). ``reals`` initialises them: per layer, the unrounded integer-unit weights
    of each connection and the unrounded bias per neuron (what export rounded); by default the network's own
    integers (the weights as Lava's Dense keeps them)."""

    def __init__(self, net: IntNetwork, hw: HwConfig, reals: list[tuple[list[np.ndarray], np.ndarray]] | None = None):
        super().__init__()
        self.net = copy.deepcopy(net)
        self.mant_limit = (1 << (hw.bits("bias_mant_bits") - 1)) - 1
        if reals is None:
            reals = [([c.synapses.effective_weights().astype(np.float64) for c in layer.inputs],
                      shift(np.asarray(layer.neurons.bias_mant, np.int64), np.asarray(layer.neurons.bias_exp)))
                     for layer in net.layers]
        self.weights = nn.ParameterList(nn.Parameter(torch.as_tensor(w, dtype=torch.float64))
                                        for ws, _ in reals for w in ws)
        self.biases = nn.ParameterList(nn.Parameter(torch.as_tensor(b, dtype=torch.float64)) for _, b in reals)

    def _weights(self) -> list[list[torch.Tensor]]:
        """Per layer, per connection: the integer weights (values) with the reals' derivative."""
        it, out = iter(self.weights), []
        for layer in self.net.layers:
            out.append([_straight_through(w, integer_weights(w.detach(), c.synapses.num_weight_bits))
                        for c, w in zip(layer.inputs, it)])
        return out

    def _bias(self, index: int) -> torch.Tensor:
        """The layer's bias values (mantissa << bias_exp) with the real's derivative."""
        b = self.biases[index]
        exp = torch.as_tensor(np.asarray(self.net.layers[index].neurons.bias_exp), dtype=torch.float64,
                              device=b.device)
        mant = torch.clamp(torch.round(b.detach() / 2.0**exp), -self.mant_limit - 1, self.mant_limit)
        return _straight_through(b / 2.0**exp, mant) * 2.0**exp

    def clamp_(self) -> None:
        """Keep the reals within what the integers can represent, so the straight-through gradient always
        acts on a weight or bias that can still move."""
        with torch.no_grad():
            it = iter(self.weights)
            for layer, bias in zip(self.net.layers, self.biases):
                for c, w in zip(layer.inputs, it):
                    step = weight_step(True, c.synapses.num_weight_bits)
                    w.clamp_(-256, 256 - step)
                top = torch.as_tensor(self.mant_limit * 2.0 ** np.asarray(layer.neurons.bias_exp, np.float64),
                                      device=bias.device)
                bias.copy_(torch.maximum(torch.minimum(bias, top), -top))

    def snapshot(self) -> IntNetwork:
        """The integer network the current reals round to (what :meth:`forward` runs)."""
        net = copy.deepcopy(self.net)
        for i, (layer, ws) in enumerate(zip(net.layers, self._weights())):
            for c, w in zip(layer.inputs, ws):
                c.synapses.weights = w.detach().cpu().numpy().astype(np.int32)
            exp = np.asarray(layer.neurons.bias_exp, np.int64)
            layer.neurons.bias_mant = np.rint(self._bias(i).detach().cpu().numpy() / 2.0**exp).astype(np.int32)
        return net

    def forward(self, x_int: torch.Tensor) -> torch.Tensor:
        """The readout's voltage after the last timestep (exact integers, as float64 with the straight-through
        derivative) for encoded input ``x_int`` (batch, inputs), layer-synchronous timing."""
        net, T = self.net, self.net.timesteps
        n, dev = x_int.shape[0], x_int.device
        weights = self._weights()
        biases = [self._bias(i) for i in range(len(net.layers))]
        initials = [layer.initial_input() for layer in net.layers]
        u = [torch.zeros((n, layer.size), dtype=torch.float64, device=dev) for layer in net.layers]
        v = [torch.zeros_like(state) for state in u]
        for t in range(T):
            sent: dict[str, torch.Tensor] = {INPUT: x_int.to(torch.float64)}
            for i, layer in enumerate(net.layers):
                neu = layer.neurons
                a_shadow, a_exact = 0.0, None
                for c, w in zip(layer.inputs, weights[i]):
                    acc = c.synapses.accumulate(sent[c.source], w)  # exact integers in float64
                    part = c.synapses.a_out(acc.detach().to(torch.int64))
                    a_exact = part if a_exact is None else wrap32(a_exact + part)  # Lava sums a port in int32
                    a_shadow = a_shadow + acc * 2.0**c.synapses.weight_exp
                if initials[i] is not None and t == 0:
                    initial = torch.as_tensor(initials[i], device=dev)
                    a_exact, a_shadow = wrap32(a_exact + initial), a_shadow + initial
                a_in = _straight_through(a_shadow, a_exact)
                out = neu.step(u[i].detach().to(torch.int64), v[i].detach().to(torch.int64), a_exact,
                               biases[i].detach().to(torch.int64), t=t)
                u[i] = _straight_through(u[i] * ((DECAY_UNITY - neu.du - 1) / DECAY_UNITY) + a_in * (1 << ACT_SHIFT),
                                         out.u)
                potential = _straight_through(v[i] * ((DECAY_UNITY - neu.dv) / DECAY_UNITY) + u[i] + biases[i],
                                              out.potential)
                threshold = float(neu.threshold(t) << VTH_SHIFT)
                spikes = surrogates.spike(potential - threshold, max(threshold, 1.0), "rectangular")
                reset = potential - threshold * spikes if neu.reset == "subtract" else potential * (1 - spikes)
                v[i] = _straight_through(reset, out.v)
                sent[layer.name] = spikes
        return v[-1]


def unrounded(fnet: FloatNetwork, net: IntNetwork) -> list[tuple[list[np.ndarray], np.ndarray]]:
    """Per layer of ``net`` (quantised from ``fnet``): each connection's weights and the bias per neuron in
    integer units, before rounding: where fine-tuning starts."""
    reals = []
    for lt, layer in zip(layer_terms(fnet, net.input.scale), net.layers):
        ws = [w * layer.scale / (unit * (1 << ACT_SHIFT) * 2.0**c.synapses.weight_exp)
              for w, unit, c in zip(lt.weights, lt.units, layer.inputs)]
        reals.append((ws, lt.neuron_bias() * layer.scale))
    return reals


def finetune(fnet: FloatNetwork, net: IntNetwork, hw: HwConfig, x: np.ndarray, y: np.ndarray, epochs: int = 5,
             lr: float = 0.2, batch_size: int = 64, seed: int = 0, device: str = "cpu",
             on_epoch: Callable[[dict], None] | None = None) -> QATResult:
    """Fine-tune ``net`` (quantised from ``fnet``) on float inputs ``x`` in [0, 1] and labels ``y``.

    Adam on the integer-unit reals (``lr`` is about how far one step moves a weight, in integer units; 0.2
    crosses a rounding boundary of 8-bit weights in a few consistent steps, coarser weights take more), cross-
    entropy on the integer network's logits. Returns the fine-tuned network and, per epoch, the mean loss and
    the integer accuracy on the batches as they were trained."""
    if epochs < 1:
        raise ConfigError(f"QAT epochs must be >= 1, got {epochs}")
    if lr <= 0 or batch_size < 1:
        raise ConfigError(f"QAT needs lr > 0 and batch_size >= 1, got {lr} and {batch_size}")
    torch.manual_seed(seed)
    model = IntegerForward(net, hw, unrounded(fnet, net)).to(device)
    model.clamp_()
    x_int = torch.as_tensor(net.input.encode(x), device=device)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long, device=device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(x_int), generator=generator).to(device)
        total, correct = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits = model(x_int[idx]) / (net.readout.scale * net.timesteps)  # the float model's units
            loss = F.cross_entropy(logits, labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            model.clamp_()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == labels[idx]).sum())
        record = {"epoch": epoch + 1, "loss": total / len(order), "train_accuracy": correct / len(order)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return QATResult(model.snapshot(), history)
