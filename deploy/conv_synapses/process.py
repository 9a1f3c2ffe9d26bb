"""The ConvSynapses process: what the synapses are (ports and variables). Its model is in models.py beside it,
where Lava's compiler looks for it. See the package docstring."""

from __future__ import annotations

import numpy as np

from spikefold.deploy.lava_compat import ensure_lava

ensure_lava()

from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402


class ConvSynapses(AbstractProcess):
    """Convolution synapses between flat (C*H*W,) ports, with the fields of
    :class:`spikefold.export.intnet.Conv2d` and a synaptic ``delay`` in steps beyond the first."""

    def __init__(self, *, weights: np.ndarray, weight_exp: int, num_weight_bits: int, num_message_bits: int,
                 input_shape: tuple[int, int, int], stride: int, padding: int, output_size: int, delay: int = 0,
                 name: str | None = None):
        super().__init__(name=name, weight_exp=int(weight_exp), num_weight_bits=int(num_weight_bits),
                         num_message_bits=int(num_message_bits), input_shape=tuple(int(v) for v in input_shape),
                         stride=int(stride), padding=int(padding), delay=int(delay))
        self.s_in = InPort(shape=(int(np.prod(input_shape)),))
        self.a_out = OutPort(shape=(int(output_size),))
        self.weights = Var(shape=np.shape(weights), init=np.asarray(weights, np.int32))
