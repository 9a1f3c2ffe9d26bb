"""Seeded damage to a NIR file written by spikefold export, for the reader's fuzz tests and the bad-input campaign
(benchmarks/bad_input_campaign.py).

Two kinds of damage: to the bytes of the file (flipped bits, truncation, zeroed or repeated ranges), which the
HDF5 library meets; and to the graph it holds (a metadata value or node parameter replaced by a value of another
type, range or shape, a key or an edge removed), which the mapping to the integer network meets. Every case must
end in the integer network or in a spikefold error; one that loads must also simulate or be refused by name.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import nir
import numpy as np

from spikefold.core.errors import SpikefoldError
from spikefold.export import nir_io
from spikefold.sim.simulator import simulate


@dataclasses.dataclass
class Outcome:
    case: str
    result: str  # "loaded", "named" (a spikefold error), or the unnamed exception's type name
    detail: str
    seconds: float


def damage_bytes(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    buf = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:
        flips = int(rng.integers(1, 9))
        for pos in rng.integers(0, len(buf), flips):
            buf[pos] ^= 1 << int(rng.integers(8))
        return f"{flips} bit flips", bytes(buf)
    if kind == 1:
        cut = int(rng.integers(0, len(buf)))
        return f"truncated at {cut}", bytes(buf[:cut])
    start = int(rng.integers(0, len(buf)))
    length = int(rng.integers(1, 256))
    if kind == 2:
        buf[start : start + length] = bytes(len(buf[start : start + length]))
        return f"{length} bytes zeroed at {start}", bytes(buf)
    source = int(rng.integers(0, len(buf)))
    buf[start : start + length] = buf[source : source + length]
    return f"{length} bytes copied from {source} to {start}", bytes(buf)


def _replacement(value, rng: np.random.Generator):
    arr = np.asarray(value) if value is not None else np.zeros(0)
    choices = [
        lambda: np.nan, lambda: np.inf, lambda: -1, lambda: 0, lambda: 2**31 - 1, lambda: 2**40, lambda: -(2**40),
        lambda: "text", lambda: None, lambda: True, lambda: np.zeros(0), lambda: np.zeros((2, 3, 4)),
        lambda: arr.astype(np.float64) + 0.5 if arr.dtype.kind in "iuf" else 1.5,
        lambda: arr.T if arr.ndim == 2 else arr.reshape(-1)[:1],
        lambda: -arr if arr.dtype.kind in "if" else 7,
        lambda: np.concatenate([arr.reshape(-1), arr.reshape(-1)]) if arr.size else np.ones(3, np.int64),
        lambda: arr.reshape(-1)[: max(arr.size // 2, 0)],
        lambda: np.full(arr.shape, np.nan) if arr.dtype.kind == "f" else
        (arr * 1000 if arr.dtype.kind in "iu" else b"\xff"),
    ]
    return choices[int(rng.integers(len(choices)))]()


def damage_graph(graph: nir.NIRGraph, rng: np.random.Generator) -> tuple[str, nir.NIRGraph]:
    graph = copy.deepcopy(graph)
    kind = rng.integers(10)
    names = sorted(graph.nodes)
    if kind == 0 and graph.edges:
        edge = graph.edges[int(rng.integers(len(graph.edges)))]
        graph.edges = [e for e in graph.edges if e != edge]
        return f"edge {edge} removed", graph
    if kind == 1:
        a, b = names[int(rng.integers(len(names)))], names[int(rng.integers(len(names)))]
        graph.edges = [*graph.edges, (a, b)]
        return f"edge ({a}, {b}) added", graph
    if kind == 2:
        key = sorted(graph.metadata)[int(rng.integers(len(graph.metadata)))]
        graph.metadata[key] = _replacement(graph.metadata[key], rng)
        return f"graph metadata {key} = {_short(graph.metadata[key])}", graph
    name = names[int(rng.integers(len(names)))]
    node = graph.nodes[name]
    meta = node.metadata or {}
    if kind < 7 and meta:
        key = sorted(meta)[int(rng.integers(len(meta)))]
        if rng.integers(6) == 0:
            del meta[key]
            return f"node {name} metadata {key} removed", graph
        meta[key] = _replacement(meta[key], rng)
        return f"node {name} metadata {key} = {_short(meta[key])}", graph
    fields = [f for f, v in vars(node).items() if isinstance(v, np.ndarray)]
    if not fields:
        return "unchanged", graph
    field = fields[int(rng.integers(len(fields)))]
    setattr(node, field, _replacement(getattr(node, field), rng))
    return f"node {name} {field} = {_short(getattr(node, field))}", graph


def _short(value) -> str:
    text = repr(value) if not isinstance(value, np.ndarray) else f"array{value.shape} {value.dtype}"
    return text[:40]


def _judge(case: str, load, x: np.ndarray) -> Outcome:
    """Load (and, when it loads, simulate two samples); classify what happened."""
    t0 = time.perf_counter()
    try:
        net = load()
        simulate(net, net.input.encode(x[:, : net.input.size]) if x.shape[1] >= net.input.size
                 else np.zeros((len(x), net.input.size), np.int64))
        result, detail = "loaded", ""
    except SpikefoldError as exc:
        result, detail = "named", str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
        result, detail = type(exc).__name__, str(exc)[:200]
    return Outcome(case, result, detail, time.perf_counter() - t0)


def fuzz_bytes(nir_file: Path, work: Path, cases: int, seed: int, x: np.ndarray,
               timeout_s: float = 20.0) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    data = Path(nir_file).read_bytes()
    outcomes = []
    for i in range(cases):
        what, damaged = damage_bytes(data, rng)
        path = work / f"fuzz-{i}.nir"
        path.write_bytes(damaged)
        outcomes.append(_judge(f"bytes: {what}", lambda: nir_io.read(path, timeout_s=timeout_s), x))
        path.unlink()
    return outcomes


def fuzz_graph(nir_file: Path, cases: int, seed: int, x: np.ndarray) -> list[Outcome]:
    rng = np.random.default_rng(seed)
    graph = nir.read(nir_file)
    outcomes = []
    for _ in range(cases):
        what, damaged = damage_graph(graph, rng)
        outcomes.append(_judge(f"graph: {what}", lambda: nir_io.checked_network(damaged, "fuzzed.nir"), x))
    return outcomes
