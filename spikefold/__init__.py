"""spikefold: train adaptive spiking networks, fold them into Loihi 2 integers, export them through NIR,
run them bit-exactly in Lava and estimate their energy and latency.

The stages are subpackages, in the order they may import each other:
``spikefold.train`` -> ``spikefold.export`` -> ``spikefold.sim`` -> ``spikefold.deploy``.
"""

__version__ = "0.1.0"
