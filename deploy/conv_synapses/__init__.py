"""ConvSynapses, spikefold's own Lava process for convolution synapses, so a convolution runs in Lava as a
kernel (memory grows with the kernel, not with the dense matrix it stands for) and bit-exactly.

Lava 0.10's stock ``lava.proc.conv.Conv`` does not compute what Loihi's synapses do: its fixed-point CPU model
(``PyConvModelFixed``) never applies ``weight_exp``, never clips or truncates the weights to
``num_weight_bits``, and wraps its output to 24 bits where Lava's Dense wraps to 32; it also has no synaptic
delay, which a skip connection between convolutions needs. So this process does the Dense's arithmetic on a
kernel. Built like ``scheduled_lif``: the process declares ports and variables; the bit-accurate model (tag
``fixed_pt``) calls ``spikefold.export.intnet.Conv2d.forward``, the same function the simulator runs.

Timing is Lava Dense's: what arrives at step t is sent at step t + 1 + ``delay`` (``delay = 0``: the Dense's one
step; more: as ``DelayDense`` with every synapse delayed alike). Simulation only: on Loihi 2 a convolution is
mapped by lava-loihi's compiler, which is not available here.
"""

from spikefold.deploy.conv_synapses.process import ConvSynapses

__all__ = ["ConvSynapses"]
