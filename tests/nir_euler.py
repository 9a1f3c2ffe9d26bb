"""An independent float reading of a NIR graph: NIR's continuous-time equations stepped by forward Euler at a
given dt, with numpy, written from NIR's node definitions (not from spikefold's writer or importer). Chains and
graphs whose nodes merge by summation; Input, Affine, Linear, Flatten, Delay (whole steps), LIF, IF, CubaLIF,
LI, CubaLI and Output nodes. A synaptic current (CubaLIF, CubaLI) steps first and the voltage reads the stepped current, the order
snnTorch's Synaptic and Norse's importer use."""

from __future__ import annotations

import nir
import numpy as np


def run(graph: nir.NIRGraph, x: np.ndarray, timesteps: int, dt: float) -> list[np.ndarray]:
    """The Output node's value at every step for static input ``x`` (samples, features): (T, samples, ...)."""
    order, done = [], set()
    preds = {name: [a for a, b in graph.edges if b == name] for name in graph.nodes}
    while len(order) < len(graph.nodes):
        for name in graph.nodes:
            if name not in done and all(p in done for p in preds[name]):
                order.append(name)
                done.add(name)
    state: dict[str, np.ndarray] = {}
    outputs = []
    for _ in range(timesteps):
        value: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.nodes[name]
            inp = x if isinstance(node, nir.Input) else sum(value[p] for p in preds[name])
            if isinstance(node, (nir.Affine, nir.Linear)):
                out = inp @ np.asarray(node.weight).T + (node.bias if isinstance(node, nir.Affine) else 0)
            elif isinstance(node, nir.Flatten):
                out = inp.reshape(len(inp), -1)
            elif isinstance(node, nir.Delay):  # what arrived delay / dt steps before (zero before the first)
                held = state.setdefault(name, [])
                held.append(inp)
                steps = int(round(float(np.ravel(node.delay)[0]) / dt))
                out = held[-1 - steps] if len(held) > steps else np.zeros_like(inp)
            elif isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.CubaLI)):
                v = state.get(name, np.zeros_like(inp))
                if isinstance(node, (nir.CubaLIF, nir.CubaLI)):  # tau_syn dI/dt = -I + w_in x
                    current = state.get(name + ".I", np.zeros_like(inp))
                    inp = state[name + ".I"] = current + dt / node.tau_syn * (node.w_in * inp - current)
                if isinstance(node, nir.IF):  # dv/dt = r I
                    v = v + dt * node.r * inp
                else:  # tau dv/dt = (v_leak - v) + r I
                    tau = node.tau_mem if isinstance(node, (nir.CubaLIF, nir.CubaLI)) else node.tau
                    v = v + dt / tau * (node.v_leak - v + node.r * inp)
                if isinstance(node, (nir.LI, nir.CubaLI)):  # no threshold: the output is the voltage
                    out = state[name] = v
                else:
                    out = (v > node.v_threshold).astype(np.float64)
                    state[name] = np.where(out > 0, node.v_reset, v)
            else:  # Input, Output
                out = inp
            value[name] = out
        outputs.append(value[next(n for n, node in graph.nodes.items() if isinstance(node, nir.Output))])
    return outputs
