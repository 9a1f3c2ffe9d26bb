"""How ConvSynapses runs: a bit-accurate model that calls spikefold.export.intnet.Conv2d.forward (the
simulator's arithmetic, not a copy). See the package docstring."""

from __future__ import annotations

import numpy as np

from spikefold.deploy.lava_compat import ensure_lava
from spikefold.export import intnet

ensure_lava()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402

from spikefold.deploy.conv_synapses.process import ConvSynapses  # noqa: E402


@implements(proc=ConvSynapses, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyConvSynapsesFixed(PyLoihiProcessModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    weights: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=8)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._synapses = None  # static weights (no learning): the kernel Lava keeps is built once

    def run_spk(self) -> None:
        if self._synapses is None:
            p = self.proc_params
            self._synapses = intnet.Conv2d(weights=np.asarray(self.weights, np.int64), weight_exp=p["weight_exp"],
                                           num_weight_bits=p["num_weight_bits"],
                                           num_message_bits=p["num_message_bits"], input_shape=p["input_shape"],
                                           stride=p["stride"], padding=p["padding"])
            self._kernel = self._synapses.exact_weights()
            # Row k is sent k steps from now; what arrives now joins row `delay`, as in Lava's DelayDense.
            self._queue = np.zeros((p["delay"] + 1, self.a_out.shape[0]), np.int32)
        self.a_out.send(self._queue[0])
        self._queue = np.roll(self._queue, -1, axis=0)
        self._queue[-1] = 0
        s_in = np.asarray(self.s_in.recv(), np.int64)
        if self.proc_params["num_message_bits"] == 0:
            s_in = s_in != 0  # binary spikes, as Lava's Dense reads them
        self._queue[-1] = self._synapses.forward(s_in[None], self._kernel)[0]
