"""Random integer networks that push Lava's fixed-point corner cases: odd mixed-sign weights, negative weight
exponents, per-neuron bias exponents, current wrap-around and voltage saturation."""

from __future__ import annotations

import numpy as np

from spikefold.export.intnet import LIF, VTH_NEVER, Dense, InputEncoding, IntNetwork, Layer


def random_network(seed: int, sizes=(12, 16, 10, 5), timesteps: int = 3, input_bits: int = 8,
                   weight_exp=None, wild: bool = False) -> IntNetwork:
    """A network ``sizes[0] -> ... -> sizes[-1]`` (last layer a readout) with random integers.

    ``wild`` picks weights and biases large enough that currents wrap and voltages saturate.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        readout = i == len(sizes) - 2
        sign = rng.choice(["mixed", "exc", "inh"], p=[0.7, 0.15, 0.15])
        w = rng.integers(-256, 256, size=(n_out, n_in))
        if sign == "exc":
            w = np.abs(w) % 256
        elif sign == "inh":
            w = -np.abs(w)
        exp = int(rng.integers(-3, 4)) if weight_exp is None else weight_exp
        if wild:
            exp = int(rng.integers(3, 7))
        layers.append(Layer(
            name=f"layer{i}",
            synapses=Dense(weights=w.astype(np.int32), weight_exp=exp,
                           num_weight_bits=int(rng.choice([8, 7, 6])) if not wild else 8,
                           num_message_bits=input_bits if i == 0 else 0),
            neurons=LIF(
                du=int(rng.choice([4095, int(rng.integers(0, 4096))])),
                dv=0 if readout else int(rng.integers(0, 4096)),
                vth=VTH_NEVER if readout else int(rng.integers(1, 2000 if not wild else 131072)),
                bias_mant=rng.integers(-4096, 4096, size=n_out).astype(np.int32),
                bias_exp=rng.integers(0, 8 if wild else 4, size=n_out).astype(np.int32),
            ),
            scale=1.0,
            readout=readout,
        ))
    return IntNetwork(input=InputEncoding(size=sizes[0], scale=255.0, bits=input_bits), layers=layers,
                      timesteps=timesteps)


def random_input(net: IntNetwork, samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << net.input.bits, size=(samples, net.input.size))
