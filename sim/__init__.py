"""Simulation stage: a fast simulator of the integer network, bit-exact to Lava's fixed-point models, and the
energy and latency model driven by the spike counts a run measured."""
