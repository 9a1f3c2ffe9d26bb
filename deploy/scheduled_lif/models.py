"""How ScheduledLIF runs: a bit-accurate model that calls spikefold.export.intnet.LIF.step (the simulator's
equations, not a copy) and a floating-point model. See the package docstring."""

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

from spikefold.deploy.scheduled_lif.process import ScheduledLIF  # noqa: E402


class _ScheduledLIFModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)

    def _start_step(self) -> tuple[np.ndarray, int]:
        """Receive this step's input and clear u and v at a sample's first step; returns the input and the
        step's position in its sample."""
        a_in = self.a_in.recv()
        steps, offset = self.proc_params["timesteps"], self.proc_params["offset"]
        if self.time_step % steps == offset:
            self.u[:] = 0
            self.v[:] = 0
        return a_in, (self.time_step - offset) % steps


@implements(proc=ScheduledLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyScheduledLIFFixed(_ScheduledLIFModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    du: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=17)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=3)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._neuron = None  # the parameters are static (no learning): build the neuron and its bias once

    def run_spk(self) -> None:
        a_in, t = self._start_step()
        if self._neuron is None:
            self._neuron = intnet.LIF(du=int(self.du[0]), dv=int(self.dv[0]), vth=np.asarray(self.vth, np.int64),
                                      bias_mant=self.bias_mant, bias_exp=self.bias_exp,
                                      reset=self.proc_params["reset"])
            self._bias = self._neuron.effective_bias()
        out = self._neuron.step(np.asarray(self.u, np.int64), np.asarray(self.v, np.int64), a_in, self._bias, t=t)
        self.u[:] = out.u
        self.v[:] = out.v
        self.s_out.send(out.spikes)


@implements(proc=ScheduledLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyScheduledLIFFloat(_ScheduledLIFModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    du: np.ndarray = LavaPyType(np.ndarray, float)
    dv: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        a_in, t = self._start_step()
        unity = float(intnet.DECAY_UNITY)
        self.u[:] = self.u * (1.0 - (self.du[0] + 1.0) / unity) + a_in * 2.0**intnet.ACT_SHIFT
        self.v[:] = self.v * (1.0 - self.dv[0] / unity) + self.u + self.bias_mant * 2.0**self.bias_exp
        threshold = self.vth[t] * 2.0**intnet.VTH_SHIFT
        spikes = self.v > threshold
        if self.proc_params["reset"] == "subtract":
            self.v[spikes] -= threshold
        else:
            self.v[spikes] = 0.0
        self.s_out.send(spikes.astype(float))
