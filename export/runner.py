"""The integer network run step by step, vectorised over samples, on CPU or GPU (torch): the one runner behind
export's state-range check and the simulator (``spikefold.sim.simulator``), which collect what they need from it.

The arithmetic is :mod:`spikefold.export.intnet`'s, unchanged: its equations run here on int64 tensors, and its
synapses' sums (``Dense.accumulate``: a matrix product, or a convolution kept as one, never unrolled) run in
the float type ``intnet.exact_dtype`` picks for each connection, where every partial sum is an exact integer
(see :func:`matmul_plan`): BLAS, oneDNN and GPUs do that fast. Only algorithms that add products may run:
:func:`_torch_settings` forbids TF32/bf16 substitution in matrix products, and no convolution reaches cuDNN,
whose Winograd and FFT algorithms would round (``intnet.Conv2d`` convolves GPU tensors by a matrix product).

Two timings:

- ``"synchronous"``: at timestep t every layer sees its input layer's output of the same t. Arrays are
  (sample, timestep, neuron) with T timesteps.
- ``"lava"``: Lava's. Each Dense delivers one step late, so a layer at depth d (``IntNetwork.depths``) works
  on a sample's timestep tau at step ``tau + d``, and a connection that skips layers carries the extra synaptic
  delay ``IntNetwork.delay`` gives it; each layer's state is reset every T steps at its own offset, as
  ``spikefold.deploy`` sets up Lava's ``LIFReset``. Arrays are (sample, step, neuron) with T + D steps
  (D the deepest layer's depth), from the step the input is first sent. ``simulator.align_to_synchronous`` takes
  every layer's window back out, and the two timings agree spike for spike.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np
import torch

from spikefold.core.devices import resolve_device
from spikefold.core.errors import ConfigError, HardwareRangeError
from spikefold.export.intnet import INPUT, Connection, IntNetwork, Layer, exact_dtype, wrap32

TIMINGS = ("synchronous", "lava")
CPU_STATE_VALUES = 1 << 17  # a CPU pass keeps each layer's int64 state near 1 MiB, in cache (measured)
GPU_STATE_VALUES = 1 << 27  # a GPU pass keeps u (and v) of all layers within 1 GiB each


@dataclasses.dataclass(frozen=True)
class MatmulPrecision:
    """How one connection's ``W_eff @ s`` is computed exactly."""

    layer: str
    source: str
    dtype: str  # "float32" or "float64"
    bound: int  # largest |partial sum| any output can reach


def matmul_precision(layer: Layer, connection: Connection) -> MatmulPrecision:
    """The narrowest float type in which every partial sum of this connection's sum is exact."""
    bound = connection.synapses.partial_sum_bound()
    dtype = exact_dtype(bound)
    if dtype == "int64":
        # 2**53 needs a fan-in above 10**11 at full 8-bit weights and inputs: far beyond any core's axons.
        raise HardwareRangeError(
            f"layer '{layer.name}': partial sums from '{connection.source}' can reach {bound}, beyond 2**53, where "
            "no float type is exact; such a fan-in cannot be mapped onto hardware either: split the layer")
    return MatmulPrecision(layer.name, connection.source, dtype, bound)


def matmul_plan(net: IntNetwork) -> list[MatmulPrecision]:
    """One :class:`MatmulPrecision` per connection, layer by layer (graded input can reach 2**bits - 1, spikes
    are 0 or 1: each connection's ``num_message_bits`` says which)."""
    return [matmul_precision(layer, c) for layer in net.layers for c in layer.inputs]


@dataclasses.dataclass
class LayerStats:
    """Range use of one layer's 24-bit state over a run."""

    max_abs_u: int = 0
    max_abs_v: int = 0
    u_wraps: int = 0
    v_saturations: int = 0

    def merge(self, other: LayerStats) -> None:
        self.max_abs_u = max(self.max_abs_u, other.max_abs_u)
        self.max_abs_v = max(self.max_abs_v, other.max_abs_v)
        self.u_wraps += other.u_wraps
        self.v_saturations += other.v_saturations


@contextlib.contextmanager
def _torch_settings(threads: int | None) -> Iterator[None]:
    """For the duration: IEEE float32 products (no TF32/bf16 substitution, whatever the caller set) and, when
    given, the number of CPU threads."""
    precision, before_threads = torch.get_float32_matmul_precision(), torch.get_num_threads()
    torch.set_float32_matmul_precision("highest")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.set_num_threads(before_threads)


class _DeviceConnection:
    """One connection's constants on the device: its source's index (-1 for the input) and its effective weights
    (a matrix or a kernel) in the float type where their sum is exact."""

    def __init__(self, net: IntNetwork, connection: Connection, precision: MatmulPrecision, device):
        self.synapses = connection.synapses
        self.source = -1 if connection.source == INPUT else net.index(connection.source)
        self.weights = torch.as_tensor(self.synapses.effective_weights(), dtype=getattr(torch, precision.dtype),
                                       device=device).contiguous()

    def synaptic_input(self, s):
        """Lava's Dense output for presynaptic output ``s`` (bool spikes or graded int64)."""
        return self.synapses.forward(s, self.weights)


class _DeviceLayer:
    """One layer's constants on the device: its connections, the effective bias and initial-potential input,
    and its depth (on Lava, the steps it lags the input)."""

    def __init__(self, net: IntNetwork, index: int, depths: list[int], plan: list[MatmulPrecision], device):
        self.layer = layer = net.layers[index]
        self.depth = depths[index]
        self.connections = [_DeviceConnection(net, c, p, device) for c, p in zip(layer.inputs, plan)]
        # On Lava, what a connection delivers at step t was sent `lag` steps before: one for the Dense, plus
        # the delay that keeps a skip connection in step (both are 0 in layer-synchronous timing).
        self.lava_lags = [1 + net.delay(index, c, depths) for c in layer.inputs]
        self.sync_lags = [layer.lag(c) for c in layer.inputs]
        self.bias = torch.as_tensor(layer.neurons.effective_bias(), dtype=torch.int64, device=device)
        initial = layer.initial_input()
        self.initial = None if initial is None else torch.as_tensor(initial, dtype=torch.int64, device=device)


def default_batch_size(net: IntNetwork, device: torch.device) -> int:
    """Samples per pass when the caller gives none: on the CPU as many as keep the widest layer's state near
    1 MiB (1 to 1024), on a GPU as many as keep every layer's state within 1 GiB."""
    if device.type == "cpu":
        return min(1024, max(1, CPU_STATE_VALUES // max(layer.size for layer in net.layers)))
    return max(1, GPU_STATE_VALUES // sum(layer.size for layer in net.layers))


def run_batches(net: IntNetwork, x: np.ndarray, record_state: bool, timing: str, device: str | None,
             batch_size: int | None, threads: int | None) -> Iterator[tuple[int, int, BatchRun]]:
    """Run checked input ``x`` batch by batch: (first sample, end, what the batch produced, on the device)."""
    if timing not in TIMINGS:
        raise ConfigError(f"unknown timing '{timing}'; choose one of: {', '.join(TIMINGS)}")
    dev = resolve_device(device)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch size must be >= 1 sample, got {batch_size}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    batch = batch_size or default_batch_size(net, dev)
    plan, depths = iter(matmul_plan(net)), net.depths()
    layers = [_DeviceLayer(net, i, depths, [next(plan) for _ in layer.inputs], dev)
              for i, layer in enumerate(net.layers)]
    steps = net.timesteps + (max(depths) if timing == "lava" else 0)
    carrier = input_carrier(net.input.bits)
    with _torch_settings(threads), torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            stop = min(start + batch, x.shape[0])
            xb = torch.as_tensor(x[start:stop].astype(carrier, copy=False), device=dev)
            yield start, stop, _run_batch(net, layers, xb, steps, timing, record_state)


def input_carrier(bits: int) -> np.dtype:
    """The narrowest integer type that holds every encoded input value (0 to 2**bits - 1): what a batch of input
    travels in, to a GPU an eighth of its int64 bytes for 8-bit input, until the synapses' sums convert it to
    their float type."""
    return np.dtype(np.uint8 if bits <= 8 else np.int16 if bits < 16 else np.int32 if bits < 32 else np.int64)


class _StatsOnDevice:
    """LayerStats accumulated as device tensors, read back once per batch (a read-back per step would
    synchronise the GPU every step)."""

    def __init__(self, device):
        zero = torch.zeros((), dtype=torch.int64, device=device)
        self.max_u, self.max_v, self.wraps, self.saturations = zero, zero.clone(), zero.clone(), zero.clone()

    def update(self, out) -> None:
        for name, state in (("max_u", out.u), ("max_v", out.v)):
            low, high = torch.aminmax(state)
            setattr(self, name, torch.maximum(getattr(self, name), torch.maximum(high, -low)))
        self.wraps = self.wraps + out.u_wrapped.sum()
        self.saturations = self.saturations + out.v_saturated.sum()

    def result(self) -> LayerStats:
        return LayerStats(int(self.max_u), int(self.max_v), int(self.wraps), int(self.saturations))


@dataclasses.dataclass
class BatchRun:
    """What one batch produced, on the device: spikes (and u, v traces when recorded) per layer, the readout's
    voltage, each layer's range use."""

    spikes: list
    readout_v: object
    traces: dict
    stats: list


def _run_batch(net: IntNetwork, layers: list[_DeviceLayer], x, steps: int, timing: str,
               record_state: bool) -> BatchRun:
    n, dev, T = x.shape[0], x.device, net.timesteps
    lava = timing == "lava"
    u = [torch.zeros((n, dl.layer.size), dtype=torch.int64, device=dev) for dl in layers]
    v = [torch.zeros_like(state) for state in u]
    spikes = [torch.zeros((n, steps, dl.layer.size), dtype=torch.bool, device=dev) for dl in layers]
    traces = {name: [torch.zeros((n, steps, dl.layer.size), dtype=torch.int64, device=dev) for dl in layers]
              for name in (("u", "v") if record_state else ())}
    readout_v = torch.zeros((n, steps, net.readout.size), dtype=torch.int64, device=dev)
    stats = [_StatsOnDevice(dev) for _ in layers]
    # Static input: the same message at every timestep (sent at steps 0..T-1), so what an input connection
    # delivers is constant while the input is on. Per-timestep input: row tau of x is sent at step tau.
    per_timestep = net.input.per_timestep
    input_current = [[dc.synaptic_input(x) if dc.source < 0 and not per_timestep else None
                      for dc in dl.connections] for dl in layers]
    for t in range(steps):
        # Synchronous: a layer receives what its sources send in this step (they come earlier in the list).
        # Lava: what they sent `lag` steps before, which `spikes` already holds.
        for i, dl in enumerate(layers):
            a_in = None
            for dc, lag, sync_lag, constant in zip(dl.connections, dl.lava_lags, dl.sync_lags, input_current[i]):
                sent_at = t - lag if lava else t - sync_lag
                if dc.source < 0:
                    if not 0 <= sent_at < T:
                        part = None
                    else:
                        part = dc.synaptic_input(x[:, sent_at]) if per_timestep else constant
                else:
                    part = dc.synaptic_input(spikes[dc.source][:, sent_at]) if sent_at >= 0 else None
                if part is not None:  # Lava sums the Dense outputs arriving at a port in int32
                    a_in = part if a_in is None else wrap32(a_in + part)
            if a_in is None:
                a_in = torch.zeros((n, dl.layer.size), dtype=torch.int64, device=dev)
            position = (t - dl.depth) % T if lava else t  # the timestep within the sample
            if lava and position == 0:  # LIFReset: this layer starts a sample's timestep 0
                u[i].zero_()
                v[i].zero_()
            if dl.initial is not None and position == 0 and (not lava or t >= dl.depth):
                # MP-Init's initial potential: one spike through its own synapses, summed like the others.
                a_in = wrap32(a_in + dl.initial)
            out = dl.layer.neurons.step(u[i], v[i], a_in, dl.bias, t=position)
            u[i], v[i] = out.u, out.v
            stats[i].update(out)
            spikes[i][:, t] = out.spikes
            if record_state:
                traces["u"][i][:, t] = out.u
                traces["v"][i][:, t] = out.v
        readout_v[:, t] = v[-1]
    return BatchRun(spikes, readout_v, traces, stats)
