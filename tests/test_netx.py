"""lava-dl netx both ways, each checked against lava-dl's own ``netx.hdf5.Network`` running in Lava: every spike of
every layer, and the last layer's voltage, equal to spikefold's simulator.

netx out: integer networks written by ``spikefold.export.netx_io``; netx in: networks lava-dl's SLAYER builds
(random weights, quantised by SLAYER itself) and exports with its own ``export_hdf5``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from spikefold.cli import main
from spikefold.core.errors import ExportFormatError, NetxFileError
from spikefold.export import netx_io, nir_io
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.intnet import INPUT, LIF, VTH_NEVER, Connection, Conv2d, Dense, InputEncoding, IntNetwork, Layer
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import SimResult, simulate
from tests.lava_dl import import_netx
from tests.random_nets import featured_network, random_input, residual_network
from tests.same_runs import assert_same_runs


def run_netx(path, x_int: np.ndarray, timesteps: int, input_bits: int) -> SimResult:
    """Build lava-dl's netx Network from ``path`` and run the samples back to back in Lava's bit-accurate CPU
    model, each held ``timesteps`` steps, with netx's own staggered resets; returns every layer's spikes and the
    last layer's voltage, re-aligned to layer-synchronous time like spikefold's Lava runner does it."""
    netx, _ = import_netx()
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    from spikefold.deploy.lava_runtime import lava_run

    network = netx.hdf5.Network(net_config=str(path), input_message_bits=0 if input_bits == 1 else input_bits,
                                reset_interval=timesteps, reset_offset=netx_io.NETX_RESET_OFFSET)
    depth = len(network.layers)
    n = len(x_int)
    steps = n * timesteps + depth
    data = np.zeros((x_int.shape[1], steps), np.int32)
    data[:, : n * timesteps] = np.repeat(x_int.T, timesteps, axis=1)
    in_shape = network.inp.shape
    if len(in_shape) == 3:  # Lava's (x, y, c) layout of a (C, H, W) input
        c, h, w = in_shape[2], in_shape[1], in_shape[0]
        data = data.reshape(c, h, w, steps).transpose(2, 1, 0, 3).reshape(-1, steps)
    source = RingBuffer(data=data.reshape(*in_shape, steps))
    source.s_out.connect(network.inp)
    monitors = []
    for i, block in enumerate(network.layers):
        m = Monitor()
        m.probe(block.neuron.s_out, steps)
        monitors.append((m, block.neuron, "s_out"))
    mv = Monitor()
    mv.probe(network.layers[-1].neuron.v, steps)
    with lava_run(source, Loihi2SimCfg(select_tag="fixed_pt"), steps):
        recorded = [np.asarray(m.get_data()[neu.name][var]) for m, neu, var in monitors]
        v_last = np.asarray(mv.get_data()[network.layers[-1].neuron.name]["v"])

    def window(rows: np.ndarray, i: int) -> np.ndarray:
        rows = rows[i + 1 : i + 1 + n * timesteps]  # layer i works on a sample's first step at row i + 1
        shape = network.layers[i].neuron.s_out.shape
        if len(shape) == 3:  # back to spikefold's (channel, row, column) order
            rows = rows.reshape(-1, *shape).transpose(0, 3, 2, 1)
        return rows.reshape(n, timesteps, -1)

    spikes = [window(r, i).astype(bool) for i, r in enumerate(recorded)]
    return SimResult(spikes=spikes, readout_v=window(v_last, depth - 1).astype(np.int64), stats=[])


def assert_equal_runs(net: IntNetwork, x_int: np.ndarray, lava: SimResult) -> int:
    """Every layer's spikes and the last layer's voltage equal; returns the spikes compared."""
    return assert_same_runs(net, simulate(net, x_int), lava, states=False)


def netx_ready_network(seed: int, timesteps: int = 4) -> IntNetwork:
    """A random chain dense 10 -> 14 -> 9 -> readout 4 of integers netx expresses: weight_exp >= 0 (the first
    layer's graded input too), effective biases multiples of 64, decays and thresholds anywhere in range."""
    rng = np.random.default_rng(seed)
    sizes = (10, 14, 9, 4)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        readout = i == len(sizes) - 2
        exp = 0 if i == 0 else int(rng.integers(0, 2))
        # Mixed sign: Lava keeps even weights; netx holds what a spike delivers, within 8 bits.
        w = rng.integers(-128 >> exp, 128 >> exp, size=(n_out, n_in)) * 2
        dense = Dense(weights=w.astype(np.int32), weight_exp=exp, num_message_bits=8 if i == 0 else 0)
        neurons = LIF(du=int(rng.choice([4095, int(rng.integers(0, 4096))])), dv=0 if readout else int(rng.integers(0, 4096)),
                      vth=VTH_NEVER if readout else int(rng.integers(20, 400)),
                      bias_mant=(rng.integers(-60, 60, size=n_out)).astype(np.int32),
                      bias_exp=np.full(n_out, 6, np.int32))
        layers.append(Layer(f"l{i}", [Connection(INPUT if i == 0 else f"l{i - 1}", dense)], neurons, 1.0, readout=readout))
    return IntNetwork(InputEncoding(size=10, scale=255.0, bits=8), layers, timesteps)


def netx_ready_conv(seed: int, timesteps: int = 3) -> IntNetwork:
    """(1, 6, 6) graded input -> 3x3 conv, 3 maps, padding 1 -> 4x4 stride-2 conv (pooling folded in), 2 maps ->
    dense readout of 3: conv, flatten and dense in one netx file."""
    rng = np.random.default_rng(seed)

    def lif(n, readout=False):
        return LIF(du=4095, dv=0 if readout else int(rng.integers(100, 4000)),
                   vth=VTH_NEVER if readout else int(rng.integers(50, 600)),
                   bias_mant=rng.integers(-20, 20, size=n).astype(np.int32), bias_exp=np.full(n, 6, np.int32))

    c1 = Conv2d(weights=(rng.integers(-40, 40, size=(3, 1, 3, 3)) * 2).astype(np.int32), weight_exp=0,
                num_message_bits=8, input_shape=(1, 6, 6), stride=1, padding=1)
    c2 = Conv2d(weights=(rng.integers(-128, 128, size=(2, 3, 4, 4)) * 2).astype(np.int32), weight_exp=0,
                input_shape=(3, 6, 6), stride=2, padding=1)
    out = Dense(weights=(rng.integers(-64, 64, size=(3, 18)) * 2).astype(np.int32), weight_exp=1)
    layers = [Layer("conv1", [Connection(INPUT, c1)], lif(c1.shape[0]), 1.0),
              Layer("conv2", [Connection("conv1", c2)], lif(c2.shape[0]), 1.0),
              Layer("readout", [Connection("conv2", out)], lif(3, readout=True), 1.0, readout=True)]
    return IntNetwork(InputEncoding(size=36, scale=255.0, bits=8), layers, timesteps)


@pytest.mark.parametrize("build", [netx_ready_network, netx_ready_conv], ids=["dense", "conv"])
def test_netx_out_runs_in_lava_dl_spike_for_spike(tmp_path, build):
    """spikefold's file, built by lava-dl's own hdf5.Network and run in Lava: every spike and the readout's
    voltage as spikefold's simulator computes them; and read back, the same integer network."""
    net = build(seed=3)
    path = netx_io.write(net, tmp_path / "net.h5")
    x = random_input(net, 5, seed=4)
    compared = assert_equal_runs(net, x, run_netx(path, x, net.timesteps, net.input.bits))
    assert compared > 0
    sim = simulate(net, x)
    assert all(s.any() for s in sim.spikes[:-1]), "every hidden layer must fire for the check to mean something"
    back = netx_io.read(path)
    assert_same_runs(net, sim, simulate(back, x), states=False)


def test_trained_mlp_exported_for_netx_runs_in_lava_dl(trained, split, tmp_path):
    """The digits MLP quantised for the loihi2_netx hw_config (weight exponent 0, bias exponent 6) is a netx
    file that lava-dl runs exactly as the simulator does. With no exponent after the sum, the graded input's
    weights fit 8 bits only for a coarse input scale (8 levels per unit instead of 255)."""
    from spikefold.export import hw_config

    net, report = quantise(fold(trained[0].model), hw_config.load("loihi2_netx"), split.x_train, input_scale=8)
    check_state_range(net, net.input.encode(split.x_train), report)
    path = netx_io.write(net, tmp_path / "mlp.h5")
    x = net.input.encode(split.x_test[:6])
    assert_equal_runs(net, x, run_netx(path, x, net.timesteps, net.input.bits))
    back = netx_io.read(path)  # read back (checked against loihi2: its weights may sit at exponent -1)
    assert back.hw_config == "loihi2"
    np.testing.assert_array_equal(simulate(back, x).readout_v, simulate(net, x).readout_v)


def test_netx_out_refuses_what_netx_cannot_express(exported, tmp_path):
    """Each feature that needs spikefold's own processes is refused by name, and no file is left."""
    with pytest.raises(ExportFormatError, match="layer 'layer0' has a per-timestep threshold.*spikefold deploy"):
        netx_io.write(featured_network(1), tmp_path / "x.h5")
    residual = residual_network(2)
    for layer in residual.layers:  # basic neurons, so that the skip connections are what is refused
        layer.neurons.vth, layer.neurons.reset, layer.initial = 500, "zero", None
    with pytest.raises(ExportFormatError, match="layer 'b' takes input from.*skip connections.*spikefold deploy"):
        netx_io.write(residual, tmp_path / "x.h5")
    sub = netx_ready_network(5)
    sub.layers[1].neurons.reset = "subtract"
    with pytest.raises(ExportFormatError, match="subtractive reset.*own Lava process"):
        netx_io.write(sub, tmp_path / "x.h5")
    init = netx_ready_network(5)
    init.layers[0].initial = Dense(weights=np.full((14, 1), 9, np.int32), weight_exp=0)
    with pytest.raises(ExportFormatError, match="initial potential"):
        netx_io.write(init, tmp_path / "x.h5")
    odd_bias = netx_ready_network(5)
    odd_bias.layers[0].neurons.bias_exp[:] = 3
    with pytest.raises(ExportFormatError, match="bias exponent 6"):
        netx_io.write(odd_bias, tmp_path / "x.h5")
    _, loihi2_net, _ = exported  # the default loihi2 export uses negative weight exponents
    assert any(np.any(c.synapses.weight_exp < 0) for layer in loihi2_net.layers for c in layer.inputs)
    with pytest.raises(ExportFormatError, match="loihi2_netx"):
        netx_io.write(loihi2_net, tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())


def _slayer_network(slayer, conv: bool):
    """A SLAYER network of CUBA blocks with random weights, quantised by SLAYER's own weight hook (as its
    training does); one forward pass sets the neuron shapes its export writes."""
    params = {"threshold": 1.25, "current_decay": 0.25, "voltage_decay": 0.03, "requires_grad": False}
    if conv:
        blocks = [slayer.block.cuba.Conv(params, 1, 4, 3, padding=1, weight_scale=2),
                  slayer.block.cuba.Conv(params, 4, 3, 4, stride=2, padding=1, weight_scale=2),
                  slayer.block.cuba.Flatten(),
                  slayer.block.cuba.Dense(params, 3 * 4 * 4, 5, weight_scale=2)]
        shape = (1, 8, 8)
    else:
        blocks = [slayer.block.cuba.Dense(params, 20, 16, weight_scale=3),
                  slayer.block.cuba.Dense(params, 16, 12, weight_scale=3),
                  slayer.block.cuba.Dense(params, 12, 5, weight_scale=3)]
        shape = (20,)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(blocks)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

        def export_hdf5(self, path):
            with h5py.File(path, "w") as f:
                group = f.create_group("layer")
                group.create_group("0").create_dataset("type", (1,), "S10", [b"input"])
                group["0"].create_dataset("shape", data=np.array(shape))
                for i, block in enumerate(self.blocks):
                    block.export_hdf5(group.create_group(str(i + 1)))

    torch.manual_seed(7)
    net = Net()
    with torch.no_grad():
        net(torch.rand(1, *shape, 4).lt(0.3).float())
    return net, shape


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
def test_netx_in_from_slayer_equals_lava_dl(tmp_path, conv):
    """A network SLAYER builds and exports, converted by `spikefold convert --from netx`: spikefold's simulator
    gives lava-dl's netx Network's spikes, every one, on binary input held for T steps."""
    _, slayer = import_netx()
    model, shape = _slayer_network(slayer, conv)
    path = tmp_path / "slayer.net"
    model.export_hdf5(path)
    timesteps = 5
    # As a lava-dl user gets it: converted to spikefold's NIR by the CLI, then read as sim and validate read it.
    assert main(["convert", str(path), str(tmp_path / "slayer.nir"), "--from", "netx", "-T", str(timesteps)]) == 0
    net = nir_io.read(tmp_path / "slayer.nir")
    rng = np.random.default_rng(11)
    x = (rng.random((4, int(np.prod(shape)))) < 0.5).astype(np.int64)
    sim = simulate(net, x)
    assert all(s.any() for s in sim.spikes), "every layer must fire for the check to mean something"
    assert_equal_runs(net, x, run_netx(path, x, timesteps, input_bits=1))


def test_netx_in_names_what_it_cannot_read(tmp_path):
    """Unknown or unsupported layer types, non-CUBA neurons, a file that is no netx file: NetxFileError naming
    the layer; from the CLI, exit status 2."""
    net = netx_ready_network(1)
    good = netx_io.write(net, tmp_path / "good.h5")
    for kind, match in (("pool", "does not implement pooling"), ("dense_rec", "recurrent"), ("foo", "unknown")):
        bad = tmp_path / f"{kind}.h5"
        bad.write_bytes(good.read_bytes())
        with h5py.File(bad, "r+") as f:
            del f["layer/2/type"]
            f["layer/2"].create_dataset("type", (1,), "S10", [kind.encode()])
        with pytest.raises(NetxFileError, match=f"layer/2.*{match}"):
            netx_io.read(bad)
    sdnn = tmp_path / "sdnn.h5"
    sdnn.write_bytes(good.read_bytes())
    with h5py.File(sdnn, "r+") as f:
        del f["layer/1/neuron/type"]
        f["layer/1/neuron"].create_dataset("type", (1,), "S10", [b"SDNN"])
    with pytest.raises(NetxFileError, match="layer/1: neuron type 'SDNN'"):
        netx_io.read(sdnn)
    not_netx = tmp_path / "other.h5"
    with h5py.File(not_netx, "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(NetxFileError, match="no 'layer' group"):
        netx_io.read(not_netx)
    assert main(["convert", str(sdnn), str(tmp_path / "out.nir"), "--from", "netx"]) == 2
    assert not (tmp_path / "out.nir").exists()
