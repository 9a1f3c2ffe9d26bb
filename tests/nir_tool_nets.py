"""Networks built, trained briefly and exported to NIR by other tools (snnTorch 1.0, SpikingJelly 2.0, Norse
1.1), with their own simulation of the float network on the test split: what the NIR tests and
benchmarks/nir_interop.py import into spikefold. Input is static (the digits features every step), as
spikefold's own; the prediction is the last layer's spike count."""

from __future__ import annotations

import dataclasses

import nir
import numpy as np
import torch


@dataclasses.dataclass
class ToolNet:
    tool: str
    network: str
    graph: nir.NIRGraph
    dt: float  # the step the tool simulated with, in seconds
    timesteps: int
    spikes: list[np.ndarray]  # the tool's own spikes on the test split, per spiking layer (samples, T, neurons)
    x_train: np.ndarray  # the tool's input: (samples, features), or (samples, T, features) per timestep
    x_test: np.ndarray
    readout: np.ndarray | None = None  # a non-firing last layer's voltage after the last step (samples, classes)

    @property
    def predictions(self) -> np.ndarray:
        """The readout's largest final voltage, or the last spiking layer's largest spike count."""
        return (self.spikes[-1].sum(axis=1) if self.readout is None else self.readout).argmax(axis=1)


def _train(run, params, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """Adam on the cross-entropy of the last layer's spike counts; run(x) returns per-layer (samples, T, n)."""
    opt = torch.optim.Adam(params, 2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = torch.nn.functional.cross_entropy(run(x[idx])[-1].sum(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def spike_trains(x: np.ndarray, timesteps: int, seed: int = 0) -> np.ndarray:
    """Binary input spikes that change every step: (samples, T, features), each spike with probability x."""
    rng = np.random.default_rng(seed)
    return (rng.random((len(x), timesteps, x.shape[1])) < x[:, None, :]).astype(np.float64)


def snntorch_mlp(split, epochs: int, timesteps: int = 6, seed: int = 0, spike_input: bool = False,
                 synaptic: bool = False, recurrent: bool = False) -> ToolNet:
    """64-48-10 of snnTorch Leaky neurons, reset to zero in the step they fire (what its NIR file says). With
    ``spike_input`` the input is :func:`spike_trains` of the digits (samples, T, 64), not the static features.
    With ``synaptic``, Synaptic neurons (a current that carries over, alpha = 0.6: exported as CubaLIF with
    tau_syn = 2.5 dt), whose zero reset with ``reset_delay=False`` keeps the current, as Loihi's does. With
    ``recurrent``, the hidden layer is an RLeaky with a 48 x 48 recurrent Linear (exported as an Affine from the
    LIF back to itself), which adds the previous step's spikes."""
    import snntorch as snn
    from snntorch import utils
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(seed)

    def leaky(n):  # per-neuron parameters, so that the exported LIF nodes carry their shape
        if synaptic:
            return snn.Synaptic(alpha=torch.full((n,), 0.6), beta=torch.full((n,), 0.8), threshold=torch.ones(n),
                                init_hidden=True, reset_mechanism="zero", reset_delay=False)
        return snn.Leaky(beta=torch.full((n,), 0.8), threshold=torch.ones(n), init_hidden=True,
                         reset_mechanism="zero", reset_delay=False)

    hidden = snn.RLeaky(beta=torch.full((48,), 0.8), threshold=torch.ones(48), linear_features=48,
                        init_hidden=True, reset_mechanism="zero", reset_delay=False) if recurrent else leaky(48)
    net = torch.nn.Sequential(torch.nn.Linear(64, 48), hidden, torch.nn.Linear(48, 10), leaky(10))

    def run(x):
        utils.reset(net)
        spikes = [[], []]
        for t in range(timesteps):
            hidden = net[1](net[0](x[:, t] if spike_input else x))
            spikes[0].append(hidden)
            spikes[1].append(net[3](net[2](hidden)))
        return [torch.stack(s, 1) for s in spikes]

    def inputs(features):
        return torch.tensor(spike_trains(features, timesteps) if spike_input else features, dtype=torch.float32)

    x = inputs(split.x_train)
    _train(run, net.parameters(), x, torch.tensor(split.y_train), epochs)
    with torch.no_grad():
        spikes = [s.numpy().astype(bool) for s in run(inputs(split.x_test))]
    graph = export_to_nir(net, torch.tensor(split.x_train[:1], dtype=torch.float32), model_name="snntorch",
                          ignore_dims=[0])
    network = "MLP 64-48-10" + (", Synaptic (CubaLIF, tau_syn = 2.5 dt)" if synaptic else "") + \
        (", RLeaky hidden layer (recurrent)" if recurrent else "") + (", spike input" if spike_input else "")
    return ToolNet("snntorch", network, graph, 1e-4, timesteps, spikes, x.numpy().astype(np.float64),
                   inputs(split.x_test).numpy().astype(np.float64))


def cuba_readout(synaptic: ToolNet) -> ToolNet:
    """A hand-built CubaLI readout (no tool writes one): :func:`snntorch_mlp`'s Synaptic graph with its last CubaLIF
    made a CubaLI of the same constants. Its float run is an independent Euler reading of the graph
    (tests/nir_euler.py): the hidden layer's spikes are snnTorch's, the readout's final voltage predicts."""
    from tests import nir_euler

    last = synaptic.graph.nodes["3"]
    readout = nir.CubaLI(tau_syn=last.tau_syn, tau_mem=last.tau_mem, r=last.r, v_leak=last.v_leak, w_in=last.w_in)
    graph = nir.NIRGraph(nodes=dict(synaptic.graph.nodes, **{"3": readout}), edges=list(synaptic.graph.edges),
                         type_check=False)
    final = nir_euler.run(graph, synaptic.x_test, synaptic.timesteps, synaptic.dt)[-1]
    return dataclasses.replace(synaptic, tool="hand-built", network="MLP 64-48-10, CubaLIF -> CubaLI readout",
                               graph=graph, spikes=synaptic.spikes[:1], readout=final)


def delayed(tool_net: ToolNet, steps: int) -> ToolNet:
    """A hand-built Delay (no tool writes one): :func:`snntorch_mlp`'s graph with a Delay of ``steps`` timesteps
    between the hidden LIF and the output layer's Affine. The hidden layer's spikes stay snnTorch's; the output
    layer's come from an independent Euler reading of the graph (tests/nir_euler.py)."""
    from tests import nir_euler

    hidden = tool_net.graph.nodes["1"]
    nodes = dict(tool_net.graph.nodes, delay=nir.Delay(delay=np.full(np.shape(hidden.tau), steps * tool_net.dt)))
    edges = [e for e in tool_net.graph.edges if e != ("1", "2")] + [("1", "delay"), ("delay", "2")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    out = nir_euler.run(graph, tool_net.x_test, tool_net.timesteps, tool_net.dt)
    return dataclasses.replace(tool_net, tool="hand-built", network=f"MLP 64-48-10, Delay of {steps} steps",
                               graph=graph, spikes=[tool_net.spikes[0], np.stack(out, 1) > 0])


def spikingjelly_cnn(split, epochs: int, timesteps: int = 6, seed: int = 0, conv1d: bool = False,
                     padding: int = 0) -> ToolNet:
    """Conv 3x3 (8 maps) -> LIF -> 2x2 average pooling -> Linear -> LIF on 8 x 8 digits, SpikingJelly's hard
    reset to 0 and ``decay_input=False`` (v = (1 - 1/tau) v + x). With ``conv1d``: Conv1d (8 channels, kernel 5,
    stride 2, ``padding`` zeros at both ends) -> LIF -> Linear -> LIF on the digits as one 64-long signal."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate
    from spikingjelly.activation_based.nir_exchange.to_nir import export_to_nir

    torch.manual_seed(seed)

    def lif():
        return neuron.LIFNode(tau=2.0, decay_input=False, v_reset=0.0, v_threshold=1.0,
                              surrogate_function=surrogate.ATan())

    if conv1d:
        length = (64 + 2 * padding - 5) // 2 + 1
        net = torch.nn.Sequential(layer.Conv1d(1, 8, 5, stride=2, padding=padding), lif(), layer.Flatten(),
                                  layer.Linear(8 * length, 10), lif())
        shape = (1, 64)
    else:
        net = torch.nn.Sequential(layer.Conv2d(1, 8, 3, padding=1), lif(), layer.AvgPool2d(2), layer.Flatten(),
                                  layer.Linear(8 * 4 * 4, 10), lif())
        shape = (1, 8, 8)

    def run(x):
        functional.reset_net(net)
        spikes = [[], []]
        for _ in range(timesteps):
            hidden = net[1](net[0](x))
            spikes[0].append(hidden.flatten(1))
            spikes[1].append(net[2:](hidden))
        return [torch.stack(s, 1) for s in spikes]

    x = torch.tensor(split.x_train, dtype=torch.float32).reshape(-1, *shape)
    _train(run, net.parameters(), x, torch.tensor(split.y_train), epochs)
    with torch.no_grad():
        spikes = [s.numpy().astype(bool)
                  for s in run(torch.tensor(split.x_test, dtype=torch.float32).reshape(-1, *shape))]
    functional.reset_net(net)
    dt = 1e-4
    network = f"CNN conv1d8 (k5, s2{f', p{padding}' if padding else ''})-10" if conv1d else "CNN conv8-pool-10"
    return ToolNet("spikingjelly", network, export_to_nir(net, x[:1], dt=dt), dt, timesteps, spikes,
                   split.x_train, split.x_test)


def norse_mlp(split, epochs: int, timesteps: int = 6, seed: int = 0, leaky_readout: bool = False) -> ToolNet:
    """64-48-10 of Norse LIFBoxCell neurons (no synaptic current) at dt = 1e-3. Norse 1.1's exporter writes
    ``tau = dt / tau_mem_inv``, dt times the true tau, so the graph reads right at dt**2: that is the dt given.
    With ``leaky_readout`` the last layer is a LIBoxCell (exported as LI, tau = 4 ms), whose voltage after the
    last step is the prediction."""
    import norse.torch as norse
    from norse.torch.functional.leaky_integrator_box import LIBoxParameters
    from norse.torch.functional.lif_box import LIFBoxParameters
    from norse.torch.module.leaky_integrator_box import LIBoxCell
    from norse.torch.module.lif_box import LIFBoxCell

    torch.manual_seed(seed)
    dt = 1e-3
    p = LIFBoxParameters(tau_mem_inv=torch.tensor(500.0), v_th=torch.tensor(0.25), v_leak=torch.tensor(0.0),
                         v_reset=torch.tensor(0.0))
    last = LIBoxCell(LIBoxParameters(tau_mem_inv=torch.tensor(250.0), v_leak=torch.tensor(0.0)), dt=dt) \
        if leaky_readout else LIFBoxCell(p, dt=dt)
    net = norse.SequentialState(torch.nn.Linear(64, 48), LIFBoxCell(p, dt=dt), torch.nn.Linear(48, 10), last)
    layers = list(net.children())

    def run(x):
        spikes, hidden_state, out_state = [[], []], None, None
        for _ in range(timesteps):
            hidden, hidden_state = layers[1](layers[0](x), hidden_state)
            out, out_state = layers[3](layers[2](hidden), out_state)
            spikes[0].append(hidden)
            spikes[1].append(out)
        return [torch.stack(s, 1) for s in spikes]

    x = torch.tensor(split.x_train, dtype=torch.float32)
    _train(run, net.parameters(), x, torch.tensor(split.y_train), epochs)
    with torch.no_grad():
        out = [s.numpy() for s in run(torch.tensor(split.x_test, dtype=torch.float32))]
    spikes = [s.astype(bool) for s in (out[:1] if leaky_readout else out)]
    return ToolNet("norse", "MLP 64-48-10" + (", LI readout" if leaky_readout else ""),
                   norse.to_nir(net, x[:1], dt=dt), dt * dt, timesteps, spikes, split.x_train, split.x_test,
                   readout=out[1][:, -1].astype(np.float64) if leaky_readout else None)

def summed_output(module, x: torch.Tensor, steps: int) -> np.ndarray:
    """What a tool's imported module outputs for static input, summed over the steps (nirtorch's executors return
    (output, state); the state goes back in)."""
    total, state = 0, None
    for _ in range(steps):
        out = module(x) if state is None else module(x, state)
        if isinstance(out, tuple):
            out, state = out
        total = total + out.detach()
    return total.numpy()
