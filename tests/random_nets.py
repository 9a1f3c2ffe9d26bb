"""Random integer networks that push Lava's fixed-point corner cases: odd mixed-sign weights, negative weight
exponents, per-neuron bias exponents, current wrap-around and voltage saturation."""

from __future__ import annotations

import numpy as np

from spikefold.export.intnet import INPUT, LIF, VTH_NEVER, Connection, Conv2d, Dense, InputEncoding, IntNetwork, Layer


def _random_dense(rng, n_out: int, n_in: int, message_bits: int, weight_exp=None, wild: bool = False) -> Dense:
    sign = rng.choice(["mixed", "exc", "inh"], p=[0.7, 0.15, 0.15])
    w = rng.integers(-256, 256, size=(n_out, n_in))
    if sign == "exc":
        w = np.abs(w) % 256
    elif sign == "inh":
        w = -np.abs(w)
    exp = int(rng.integers(-3, 4)) if weight_exp is None else weight_exp
    if wild:
        exp = int(rng.integers(3, 7))
    return Dense(weights=w.astype(np.int32), weight_exp=exp,
                 num_weight_bits=int(rng.choice([8, 7, 6])) if not wild else 8, num_message_bits=message_bits)


def _random_lif(rng, n: int, readout: bool, wild: bool = False) -> LIF:
    return LIF(
        du=int(rng.choice([4095, int(rng.integers(0, 4096))])),
        dv=0 if readout else int(rng.integers(0, 4096)),
        vth=VTH_NEVER if readout else int(rng.integers(1, 2000 if not wild else 131072)),
        bias_mant=rng.integers(-4096, 4096, size=n).astype(np.int32),
        bias_exp=rng.integers(0, 8 if wild else 4, size=n).astype(np.int32),
    )


def random_network(seed: int, sizes=(12, 16, 10, 5), timesteps: int = 3, input_bits: int = 8,
                   weight_exp=None, wild: bool = False, per_timestep: bool = False) -> IntNetwork:
    """A network ``sizes[0] -> ... -> sizes[-1]`` (last layer a readout) with random integers.

    ``wild`` picks weights and biases large enough that currents wrap and voltages saturate; ``input_bits = 1``
    makes the input binary events (plain spikes), ``per_timestep`` input that changes every timestep.
    """
    rng = np.random.default_rng(seed)
    encoding = InputEncoding(size=sizes[0], scale=255.0 if input_bits > 1 else 1.0, bits=input_bits,
                             per_timestep=per_timestep)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        readout = i == len(sizes) - 2
        synapses = _random_dense(rng, n_out, n_in, encoding.message_bits if i == 0 else 0, weight_exp, wild)
        layers.append(Layer(name=f"layer{i}", inputs=[Connection(INPUT if i == 0 else f"layer{i - 1}", synapses)],
                            neurons=_random_lif(rng, n_out, readout, wild), scale=1.0, readout=readout))
    return IntNetwork(input=encoding, layers=layers, timesteps=timesteps)


def _add_features(net: IntNetwork, rng, offset: int) -> None:
    """Per-timestep thresholds on every other hidden layer, subtractive resets on alternate ones, and an
    initial potential (through its pulse synapses) on each."""
    for i, layer in enumerate(net.layers[:-1]):
        neu = layer.neurons
        if i % 2 == 0:
            neu.vth = rng.integers(1, 2000, size=net.timesteps)
        neu.reset = "subtract" if (i + offset) % 2 == 0 else "zero"
        layer.initial = Dense(weights=rng.integers(-256, 256, size=(neu.size, 1)).astype(np.int32),
                              weight_exp=int(rng.integers(0, 5)))


def residual_network(seed: int, timesteps: int = 4, input_bits: int = 8, per_timestep: bool = False) -> IntNetwork:
    """A graph whose connections skip layers, as residual networks' do, with the neuron features of
    :func:`featured_network`::

        input -> a -> b -> c -> readout      and      input -> b, a -> c, a -> readout, input -> readout

    so layers sum several connections, the graded input reaches a deep layer, and Lava needs synaptic delays of
    1 to 3 steps. ``input_bits`` and ``per_timestep`` as for :func:`random_network`."""
    rng = np.random.default_rng(seed)
    encoding = InputEncoding(size=10, scale=255.0 if input_bits > 1 else 1.0, bits=input_bits,
                             per_timestep=per_timestep)
    sizes = {INPUT: 10, "a": 12, "b": 9, "c": 11, "readout": 5}
    sources = {"a": [INPUT], "b": ["a", INPUT], "c": ["b", "a"], "readout": ["c", "a", INPUT]}
    layers = []
    for name, reads in sources.items():
        readout = name == "readout"
        inputs = [Connection(src, _random_dense(rng, sizes[name], sizes[src],
                                                encoding.message_bits if src == INPUT else 0)) for src in reads]
        layers.append(Layer(name, inputs, _random_lif(rng, sizes[name], readout), 1.0, readout=readout))
    net = IntNetwork(input=encoding, layers=layers, timesteps=timesteps)
    _add_features(net, rng, seed)
    return net


def random_input(net: IntNetwork, samples: int, seed: int) -> np.ndarray:
    """Encoded input of the shape ``net`` takes: (samples, size), or (samples, T, size) per timestep."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << net.input.bits, size=(samples, *net.input.sample_shape(net.timesteps)))


def featured_network(seed: int, timesteps: int = 4) -> IntNetwork:
    """A random network whose hidden layers use what Lava's stock LIF lacks or re-encodes: per-timestep
    threshold schedules, subtractive reset, initial potentials (through their pulse synapses)."""
    net = random_network(seed, timesteps=timesteps)
    _add_features(net, np.random.default_rng(1000 + seed), seed)
    return net


def conv_network(seed: int, timesteps: int = 3) -> IntNetwork:
    """Input (1, 6, 6) -> 3x3 conv (4 maps, padding 1) -> 4x4 stride-2 conv, as pooling folds into it
    (3 maps, 3x3) -> readout of 4."""
    rng = np.random.default_rng(seed)

    def lif(n, readout=False):
        return LIF(du=4095, dv=0 if readout else int(rng.integers(100, 4000)),
                   vth=VTH_NEVER if readout else int(rng.integers(50, 800)),
                   bias_mant=rng.integers(-500, 500, size=n).astype(np.int32),
                   bias_exp=rng.integers(0, 3, size=n).astype(np.int32))

    c1 = Conv2d(weights=rng.integers(-256, 256, size=(4, 1, 3, 3)).astype(np.int32), weight_exp=-1,
                num_message_bits=8, input_shape=(1, 6, 6), stride=1, padding=1)
    c2 = Conv2d(weights=rng.integers(-256, 256, size=(3, 4, 4, 4)).astype(np.int32), weight_exp=2,
                input_shape=(4, 6, 6), stride=2, padding=1)
    readout = Dense(weights=rng.integers(-256, 256, size=(4, 27)).astype(np.int32), weight_exp=1)
    layers = [Layer("conv1", [Connection(INPUT, c1)], lif(c1.shape[0]), 1.0),
              Layer("conv2", [Connection("conv1", c2)], lif(c2.shape[0]), 1.0),
              Layer("readout", [Connection("conv2", readout)], lif(4, readout=True), 1.0, readout=True)]
    return IntNetwork(input=InputEncoding(size=36, scale=255.0, bits=8), layers=layers, timesteps=timesteps)


def conv_skip_network(seed: int, timesteps: int = 3) -> IntNetwork:
    """Convolutions with stride, padding, a pooled kernel and skips, with the neuron features of
    :func:`featured_network`::

        input (2, 8, 8) --3x3, pad 1--> a (4, 8, 8) --3x3, stride 2, pad 1--> b (5, 4, 4)
        c (3, 4, 4) = 1x1 of b + 2x2 average pooling of a folded into a 3x3 pad 1 kernel (6x6, stride 2, pad 2)
                      + 2x2 stride 2 of the graded input
        readout (4) = dense from c + dense from b

    so convolutions sum at one neuron, the graded input reaches a deep layer through a convolution, and Lava
    needs synaptic delays of 1 and 2 steps on convolutions."""
    rng = np.random.default_rng(seed)

    def conv(c_out, source_shape, k, stride, padding, graded=False, pooled=False):
        kernel = rng.integers(-256, 256, size=(c_out, source_shape[0], k, k))
        if pooled:  # a pooled map read by this kernel: each weight spread over a 2x2 block (as export folds it)
            kernel = np.repeat(np.repeat(kernel // 4, 2, axis=2), 2, axis=3)
            k, stride, padding = 2 * k, 2 * stride, 2 * padding
        sign = rng.choice(["mixed", "exc", "inh"], p=[0.6, 0.2, 0.2])
        if sign == "exc":
            kernel = np.abs(kernel) % 256
        elif sign == "inh":
            kernel = -np.abs(kernel)
        return Conv2d(weights=kernel.astype(np.int32), weight_exp=int(rng.integers(-2, 3)),
                      num_weight_bits=int(rng.choice([8, 7, 6])), num_message_bits=8 if graded else 0,
                      input_shape=tuple(source_shape), stride=stride, padding=padding)

    def lif(n, readout=False):
        return LIF(du=int(rng.choice([4095, int(rng.integers(0, 4096))])),
                   dv=0 if readout else int(rng.integers(100, 4000)),
                   vth=VTH_NEVER if readout else int(rng.integers(50, 800)),
                   bias_mant=rng.integers(-500, 500, size=n).astype(np.int32),
                   bias_exp=rng.integers(0, 3, size=n).astype(np.int32))

    a = conv(4, (2, 8, 8), 3, 1, 1, graded=True)
    b = conv(5, a.output_shape, 3, 2, 1)
    c_from_a = conv(3, a.output_shape, 3, 1, 1, pooled=True)  # pooled (4, 4, 4) -> (3, 4, 4)
    c_from_b = conv(3, b.output_shape, 1, 1, 0)
    c_from_input = conv(3, (2, 8, 8), 2, 2, 0, graded=True)
    layers = [Layer("a", [Connection(INPUT, a)], lif(a.shape[0]), 1.0),
              Layer("b", [Connection("a", b)], lif(b.shape[0]), 1.0),
              Layer("c", [Connection("b", c_from_b), Connection("a", c_from_a), Connection(INPUT, c_from_input)],
                    lif(c_from_b.shape[0]), 1.0)]
    sizes = [("c", layers[2].size), ("b", layers[1].size)]
    layers.append(Layer("readout", [Connection(src, _random_dense(rng, 4, n, 0)) for src, n in sizes],
                        lif(4, readout=True), 1.0, readout=True))
    net = IntNetwork(input=InputEncoding(size=128, scale=255.0, bits=8), layers=layers, timesteps=timesteps)
    _add_features(net, rng, seed)
    return net
