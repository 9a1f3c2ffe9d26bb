"""ScheduledLIF, spikefold's own Lava process, for what Lava's stock LIF cannot express: a threshold that
changes with the timestep (DS-ATGO's frozen schedule) and a subtractive (soft) reset (TrSG, soft-reset LIF).

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

from spikefold.deploy.scheduled_lif.process import ScheduledLIF

__all__ = ["ScheduledLIF"]
