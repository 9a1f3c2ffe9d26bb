"""The float reference network: a trained model with BatchNorm and pooling folded away (what
:func:`spikefold.export.fold.fold` makes), in the trained model's units; the integer network approximates it.

:meth:`FloatNetwork.run` runs the trained neuron modules themselves on the folded currents, so the neurons'
equations exist once and the folding is checked against the model it came from; export's calibration reads the
largest state each layer reaches from it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from spikefold.export.intnet import INPUT, Conv2d
from spikefold.train.neurons import SpikingNeuron

FLOAT_RUN_VALUES = 1 << 24  # float64 values (128 MiB) of layer outputs one batch of the float reference holds


@dataclasses.dataclass
class FloatInput:
    """Synapses from one source into a layer, in the trained model's units."""

    source: str  # INPUT or a layer name
    weight: np.ndarray  # (out, in) or (out, in, kh, kw); BatchNorm and pooling folded in
    conv: dict | None = None  # input_shape, stride, padding for a convolution
    delay: int = 0  # timesteps the activity takes to arrive (an imported NIR Delay)

    def current(self, h: torch.Tensor) -> torch.Tensor:
        """Synaptic current (no bias) for (T, batch, ...) presynaptic activity."""
        if self.delay:  # a delay of T steps or more delivers nothing within the window
            shift = min(self.delay, len(h))
            h = torch.cat([torch.zeros_like(h[:shift]), h[: len(h) - shift]])
        steps, batch = h.shape[:2]
        flat, w = h.flatten(0, 1), torch.as_tensor(self.weight)
        if self.conv is None:
            out = flat.flatten(1) @ w.T
        else:
            flat = flat.reshape(-1, *self.conv["input_shape"])
            out = nn.functional.conv2d(flat, w, stride=self.conv["stride"], padding=self.conv["padding"])
        return out.unflatten(0, (steps, batch))

    def output_shape(self) -> tuple[int, ...]:
        if self.conv is None:
            return (int(self.weight.shape[0]),)
        return Conv2d(self.weight, 0, input_shape=self.conv["input_shape"], stride=self.conv["stride"],
                      padding=self.conv["padding"]).output_shape


@dataclasses.dataclass
class FloatLayer:
    """One layer of the folded network: the currents of its inputs summed, plus a bias, into the trained
    neuron (None for the readout)."""

    name: str
    inputs: list[FloatInput]
    bias: np.ndarray  # (out channels,)
    neuron: SpikingNeuron | None
    # A synaptic current that carries over (an imported CubaLIF's 1 - dt / tau_syn): what the neuron receives is
    # I(t) = current_decay I(t-1) + (synapses + bias)(t), as Loihi's u with du + 1 = 4096 (1 - current_decay).
    current_decay: float = 0.0
    readout_decay: float = 1.0  # the readout's voltage decay per step: 1 integrates (dv = 0), below 1 leaks (LI)

    @property
    def readout(self) -> bool:
        return self.neuron is None

    @property
    def recurrent(self) -> list[FloatInput]:
        """The synapses from the layer's own output (of the previous timestep)."""
        return [fi for fi in self.inputs if fi.source == self.name]

    def feed(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the other sources and the bias send, given every earlier layer's (T, batch, ...) output by name."""
        total = sum(fi.current(outputs[fi.source]) for fi in self.inputs if fi.source != self.name)
        bias = torch.as_tensor(self.bias)
        return total + bias.reshape(-1, *([1] * (total.dim() - 3)))

    def currents(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Input currents I(t) of a layer without recurrence."""
        total = self.feed(outputs)
        return _leaky_sum(total, self.current_decay) if self.current_decay else total

    def run_recurrent(self, feed: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Step a layer that reads its own output: each step's current is ``feed`` plus the recurrent synapses'
        share of the previous step's output (carried over as the current decays); returns the (T, batch, ...)
        output and the largest |potential| or |current| reached."""
        form = self.neuron.recurrence_form(len(feed))
        state, current = form.initial_state(feed[0]), torch.zeros_like(feed[0])
        sent, outputs, peak = torch.zeros_like(feed[0]), [], 0.0
        synapses = self.recurrent
        for t in range(len(feed)):
            recurrent = sum(fi.current(sent.unsqueeze(0))[0] for fi in synapses)
            current = self.current_decay * current + feed[t] + recurrent
            out = form.step(state, current, t)
            state, sent = out.state, out.output
            outputs.append(sent)
            peak = max(peak, float(out.potential.abs().max()), float(current.abs().max()))
        return torch.stack(outputs), peak

    def output_size(self) -> int:
        return int(np.prod(self.inputs[0].output_shape()))


def _leaky_sum(x: torch.Tensor, decay: float) -> torch.Tensor:
    """y(t) = decay y(t-1) + x(t) over the first (time) axis, y(-1) = 0."""
    y, carried = torch.empty_like(x), torch.zeros_like(x[0])
    for t in range(len(x)):
        carried = decay * carried + x[t]
        y[t] = carried
    return y


class _Peaks:
    """Probe interface: the largest |potential| each neuron layer reaches."""

    def __init__(self):
        self.peak: dict[int, float] = {}

    def observe(self, name, t, potential, spikes, threshold, window):
        self.peak[int(name)] = max(self.peak.get(int(name), 0.0), float(potential.abs().max()))


@dataclasses.dataclass
class FloatNetwork:
    """The trained model with BatchNorm and pooling folded away: what the integer network approximates."""

    layers: list[FloatLayer]
    timesteps: int
    input_shape: tuple[int, ...]
    temporal_input: bool = False  # samples are sequences of T inputs (event frames), not one static input

    @torch.no_grad()
    def run(self, x: np.ndarray, batch_size: int | None = None) -> tuple[np.ndarray, list[float]]:
        """Time-averaged logits for x (samples, features), or (samples, T, ...) for temporal input, and, per
        layer, the largest |state| reached in state units: the neuron's potential or its current (input gain
        included), whichever is larger; for the readout, its voltage (the running sum of currents, leaky for
        a leaky readout) or its current.

        Samples run ``batch_size`` at a time (default: as many as keep every layer's float64 output for all
        timesteps within :data:`FLOAT_RUN_VALUES`), so memory is bounded whatever the number of samples."""
        x = np.asarray(x, np.float64)
        if batch_size is None:
            neurons = sum(layer.output_size() for layer in self.layers) * self.timesteps
            batch_size = max(1, FLOAT_RUN_VALUES // max(neurons, 1))
        logits, peaks = [], None
        for start in range(0, len(x), batch_size):
            part_logits, part_peaks = self._run_batch(x[start : start + batch_size])
            logits.append(part_logits)
            peaks = part_peaks if peaks is None else [max(a, b) for a, b in zip(peaks, part_peaks)]
        return np.concatenate(logits), peaks

    def _run_batch(self, x: np.ndarray) -> tuple[np.ndarray, list[float]]:
        inp = torch.as_tensor(x)
        if self.temporal_input:
            outputs = {INPUT: inp.reshape(len(x), self.timesteps, *self.input_shape).transpose(0, 1)}
        else:
            inp = inp.reshape(len(x), *self.input_shape)
            outputs = {INPUT: inp.unsqueeze(0).expand(self.timesteps, *inp.shape)}
        peaks = []
        for i, layer in enumerate(self.layers):
            if layer.recurrent and not layer.readout:  # (imported graphs only: input gain 1, no initial potential)
                neuron = layer.neuron.double().eval()
                try:
                    outputs[layer.name], peak = layer.run_recurrent(layer.feed(outputs))
                finally:
                    neuron.float()
                peaks.append(peak)
                continue
            current = layer.currents(outputs)
            if layer.readout:  # its voltage after the last step (over T: an integrator's mean input) is the logit
                voltage = _leaky_sum(current.flatten(2), layer.readout_decay)
                peaks.append(max(float(voltage.abs().max()), float(current.abs().max())))
                return (voltage[-1] / self.timesteps).numpy(), peaks
            neuron = layer.neuron.double().eval()
            form = neuron.inference_form()
            recorder = _Peaks()
            neuron.probe, neuron.probe_name = recorder, str(i)
            try:
                outputs[layer.name] = neuron(current)
            finally:
                neuron.probe = None
                neuron.float()
            peaks.append(max(recorder.peak[i], form.input_gain * float(current.abs().max()),
                             abs(form.decay * form.initial) + form.input_gain * float(current.abs().max())))
        # A spiking last layer (an imported graph's): its time-averaged spikes are the logits.
        return outputs[self.layers[-1].name].flatten(2).mean(0).numpy(), peaks
