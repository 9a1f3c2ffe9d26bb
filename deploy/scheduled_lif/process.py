"""The ScheduledLIF process: what the neuron is (ports and variables). Its models are in models.py beside it,
where Lava's compiler looks for them. See the package docstring."""

from __future__ import annotations

import numpy as np

from spikefold.deploy.lava_compat import ensure_lava

ensure_lava()

from lava.magma.core.process.ports.ports import InPort, OutPort  # noqa: E402
from lava.magma.core.process.process import AbstractProcess  # noqa: E402
from lava.magma.core.process.variable import Var  # noqa: E402


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
