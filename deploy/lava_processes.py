"""spikefold's own Lava process, for what Lava's stock LIF cannot express: a threshold that changes with the
timestep (DS-ATGO's frozen schedule) and a subtractive (soft) reset (TrSG, soft-reset LIF).

Built like Lava's own LIF: the process declares what the neuron is (ports and variables); process models say
how it runs. The bit-accurate model (tag ``fixed_pt``) does not restate the equations: it calls
``spikefold.export.intnet.LIF.step``, the same function the simulator runs, so the two cannot drift. The
floating-point model (tag ``floating_pt``) reads the same variables as real numbers (decays as fractions of
4096, no wrap-around or saturation), like Lava's float LIF.

Samples are ``timesteps`` long; u and v are cleared at the first step of each sample (``time_step % timesteps
== offset``, as in Lava's ``LIFReset``) and the threshold used is ``vth[t]`` for the step's position t in the
sample. These run in simulation only: on Loihi 2 they would need a microcode neuron model, which lava-loihi
provides to its licensees, so the export marks such layers "custom (simulation only)".
"""

from __future__ import annotations

import numpy as np

from spikefold.deploy.lava_compat import ensure_lava
from spikefold.export import intnet

ensure_lava()

from lava.magma.core.decorator import implements, requires, tag  # noqa: E402
from lava.magma.core.model.py.model import PyLoihiProcessModel  # noqa: E402
from lava.magma.core.model.py.ports import PyInPort, PyOutPort  # noqa: E402
from lava.magma.core.model.py.type import LavaPyType  # noqa: E402
from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402
from lava.magma.core.resources import CPU  # noqa: E402
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol  # noqa: E402


class ScheduledLIF(AbstractProcess):
    """CUBA LIF with a per-timestep threshold schedule ``vth`` (length ``timesteps``) and a zero or
    subtractive reset; equations in :class:`spikefold.export.intnet.LIF`."""

    def __init__(self, *, shape: tuple[int, ...], du: int, dv: int, vth: np.ndarray, bias_mant: np.ndarray,
                 bias_exp: np.ndarray, reset: str, timesteps: int, offset: int, name: str | None = None):
        vth = np.broadcast_to(np.asarray(vth, np.int64), (timesteps,)).copy()
        super().__init__(shape=shape, name=name, reset=reset, timesteps=timesteps, offset=offset % timesteps)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.u = Var(shape=shape, init=0)
        self.v = Var(shape=shape, init=0)
        self.du = Var(shape=(1,), init=du)
        self.dv = Var(shape=(1,), init=dv)
        self.vth = Var(shape=(timesteps,), init=vth)
        self.bias_mant = Var(shape=shape, init=bias_mant)
        self.bias_exp = Var(shape=shape, init=bias_exp)


class _ScheduledLIFModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)

    def _position(self) -> tuple[bool, int]:
        """(is this the first step of a sample, the step's position in its sample)."""
        steps, offset = self.proc_params["timesteps"], self.proc_params["offset"]
        return self.time_step % steps == offset, (self.time_step - offset) % steps


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

    def run_spk(self) -> None:
        a_in = self.a_in.recv()
        first, t = self._position()
        if first:
            self.u[:] = 0
            self.v[:] = 0
        neuron = intnet.LIF(du=int(self.du[0]), dv=int(self.dv[0]), vth=np.asarray(self.vth, np.int64),
                            bias_mant=self.bias_mant, bias_exp=self.bias_exp, reset=self.proc_params["reset"])
        out = neuron.step(np.asarray(self.u, np.int64), np.asarray(self.v, np.int64), a_in, t=t)
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
        a_in = self.a_in.recv()
        first, t = self._position()
        if first:
            self.u[:] = 0.0
            self.v[:] = 0.0
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
