"""Bit-exact simulation of an integer network, vectorised over samples, on CPU or GPU (torch).

The arithmetic is ``spikefold.export.intnet``'s, unchanged: its equations run here on int64 tensors, and its
synapses' sums (``Dense.accumulate``: a matrix product, or a convolution kept as one, never unrolled) run in
the float type ``intnet.exact_dtype`` picks for each connection, where every partial sum is an exact integer
(see :func:`matmul_plan`): BLAS, oneDNN and GPUs do that fast. :func:`_torch_settings` keeps the libraries to
algorithms that add products (no TF32/bf16 substitution in matrix products, no cuDNN convolution, whose
Winograd and FFT algorithms would round).

Two timings:

- ``"synchronous"``: at timestep t every layer sees its input layer's output of the same t. Arrays are
  (sample, timestep, neuron) with T timesteps.
- ``"lava"``: Lava's. Each Dense delivers one step late, so a layer at depth d (``IntNetwork.depths``) works
  on a sample's timestep tau at step ``tau + d``, and a connection that skips layers carries the extra synaptic
  delay ``IntNetwork.delay`` gives it; each layer's state is reset every T steps at its own offset, as
  ``spikefold.deploy`` sets up Lava's ``LIFReset``. Arrays are (sample, step, neuron) with T + D steps
  (D the deepest layer's depth), from the step the input is first sent. :func:`align_to_synchronous` takes
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
from spikefold.export.state_range import LayerStats

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
class SimResult:
    """What a run produced. Arrays are indexed (sample, timestep, neuron); with ``timing == "lava"`` the
    second axis is Lava's step (see the module docstring)."""

    spikes: list[np.ndarray]  # one bool array per layer (the readout's is all False)
    readout_v: np.ndarray  # int64, the readout layer's voltage after every timestep
    stats: list[LayerStats]
    u: list[np.ndarray] | None = None  # per-layer state traces when recorded
    v: list[np.ndarray] | None = None
    timing: str = "synchronous"
    spiking_output: bool = False  # the last layer fires: its spike counts, not its voltage, are the logits

    @property
    def logits(self) -> np.ndarray:
        return self.spikes[-1].sum(axis=1) if self.spiking_output else self.readout_v[:, -1, :]

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def spike_counts(self) -> np.ndarray:
        """Spikes per layer and timestep, summed over samples: shape (layers, T)."""
        return np.stack([s.sum(axis=(0, 2)) for s in self.spikes])


@contextlib.contextmanager
def _torch_settings(threads: int | None) -> Iterator[None]:
    """For the duration: IEEE float32 products (no TF32/bf16 substitution, whatever the caller set), no cuDNN
    (its convolution algorithms include Winograd and FFT, which round; without it torch convolves by im2col and
    a matrix product) and, when given, the number of CPU threads."""
    precision, before_threads = torch.get_float32_matmul_precision(), torch.get_num_threads()
    torch.set_float32_matmul_precision("highest")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.backends.cudnn.flags(enabled=False):
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
        # In layer-synchronous timing only a connection's own delay, and a recurrent one's step, hold it back.
        self.sync_lags = [int(c.source == layer.name) + c.delay for c in layer.inputs]
        self.bias = torch.as_tensor(layer.neurons.effective_bias(), dtype=torch.int64, device=device)
        initial = layer.initial_input()
        self.initial = None if initial is None else torch.as_tensor(initial, dtype=torch.int64, device=device)


def simulate(net: IntNetwork, x_int: np.ndarray, record_state: bool = False, timing: str = "synchronous",
             device: str | None = "cpu", batch_size: int | None = None, threads: int | None = None) -> SimResult:
    """Run every sample of ``x_int`` (samples, inputs), or (samples, T, inputs) for per-timestep input, for
    ``net.timesteps`` steps from zero state.

    ``device``: "cpu" (default), "cuda[:N]", or "auto". ``batch_size``: samples per pass (default on CPU:
    as many as keep the widest layer's state near 1 MiB, 1..1024; on GPU: as many as keep all layers' state
    within 1 GiB); ``threads``: CPU threads (default: torch's). Results depend on neither.
    """
    x = net.input.check(x_int, net.timesteps)
    n = x.shape[0]
    steps = net.timesteps + (max(net.depths()) if timing == "lava" else 0)
    spikes = [np.zeros((n, steps, layer.size), bool) for layer in net.layers]
    traces = {name: [np.zeros((n, steps, layer.size), np.int64) for layer in net.layers]
              for name in (("u", "v") if record_state else ())}
    readout_v = traces["v"][-1] if record_state else np.zeros((n, steps, net.readout.size), np.int64)
    stats = [LayerStats() for _ in net.layers]
    for start, stop, run in _batches(net, x, record_state, timing, device, batch_size, threads):
        for i in range(len(net.layers)):
            spikes[i][start:stop] = run.spikes[i].cpu().numpy()
            for name, arrays in traces.items():
                arrays[i][start:stop] = run.traces[name][i].cpu().numpy()
            stats[i].merge(run.stats[i].result())
        if not record_state:
            readout_v[start:stop] = run.readout_v.cpu().numpy()
    return SimResult(spikes=spikes, readout_v=readout_v, stats=stats, u=traces.get("u"), v=traces.get("v"),
                     timing=timing, spiking_output=not net.readout.readout)


def _batches(net: IntNetwork, x: np.ndarray, record_state: bool, timing: str, device: str | None,
             batch_size: int | None, threads: int | None) -> Iterator[tuple[int, int, _BatchRun]]:
    """Run checked input ``x`` batch by batch: (first sample, end, what the batch produced, on the device)."""
    if timing not in TIMINGS:
        raise ConfigError(f"unknown timing '{timing}'; choose one of: {', '.join(TIMINGS)}")
    dev = resolve_device(device)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch size must be >= 1 sample, got {batch_size}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if dev.type == "cpu":
        default = min(1024, max(1, CPU_STATE_VALUES // max(layer.size for layer in net.layers)))
    else:
        default = max(1, GPU_STATE_VALUES // sum(layer.size for layer in net.layers))
    batch = batch_size or default
    plan, depths = iter(matmul_plan(net)), net.depths()
    layers = [_DeviceLayer(net, i, depths, [next(plan) for _ in layer.inputs], dev)
              for i, layer in enumerate(net.layers)]
    steps = net.timesteps + (max(depths) if timing == "lava" else 0)
    with _torch_settings(threads), torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            stop = min(start + batch, x.shape[0])
            xb = torch.as_tensor(x[start:stop], device=dev)
            yield start, stop, _run_batch(net, layers, xb, steps, timing, record_state)


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
class _BatchRun:
    spikes: list
    readout_v: object
    traces: dict
    stats: list


def _run_batch(net: IntNetwork, layers: list[_DeviceLayer], x, steps: int, timing: str,
               record_state: bool) -> _BatchRun:
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
    return _BatchRun(spikes, readout_v, traces, stats)


def align_to_synchronous(net: IntNetwork, result: SimResult) -> SimResult:
    """A Lava-timing result re-indexed to layer-synchronous time: each layer's window starts as many steps
    late as its depth (the same shift ``spikefold.deploy`` applies to what Lava's monitors record)."""
    if result.timing != "lava":
        raise ValueError(f"align_to_synchronous needs a Lava-timing result, got '{result.timing}'")
    T, depths = net.timesteps, net.depths()

    def window(i: int, a: np.ndarray) -> np.ndarray:
        return a[:, depths[i] : depths[i] + T]

    last = len(net.layers) - 1
    return SimResult(
        spikes=[window(i, s) for i, s in enumerate(result.spikes)],
        readout_v=window(last, result.readout_v),
        stats=result.stats,
        u=[window(i, a) for i, a in enumerate(result.u)] if result.u is not None else None,
        v=[window(i, a) for i, a in enumerate(result.v)] if result.v is not None else None,
        timing="synchronous",
        spiking_output=result.spiking_output,
    )


def spike_table(net: IntNetwork, result: SimResult) -> list[dict]:
    """Spikes per layer, per sample and per timestep (means over samples), as plain rows for reports."""
    n = max(len(result.readout_v), 1)
    return [{"layer": layer.name, "neurons": layer.size,
             "spikes_per_sample": float(result.spikes[i].sum()) / n,
             "per_timestep": (result.spikes[i].sum(axis=(0, 2)) / n).tolist()}
            for i, layer in enumerate(net.layers)]
