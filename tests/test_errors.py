"""Bad input gets one named error line from the CLI (exit status 2), never a traceback."""

from __future__ import annotations

import dataclasses
import os

import nir
import numpy as np
import pytest
import torch

from spikefold.cli import main
from spikefold.export import nir_io


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, " ".join(err.split())


def test_missing_checkpoint(capsys, tmp_path):
    code, err = _run(capsys, "export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.nir"))
    assert code == 2 and "nope.pt does not exist" in err


def test_corrupt_checkpoint(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(os.urandom(300))
    code, err = _run(capsys, "export", str(bad), "--out", str(tmp_path / "m.nir"))
    assert code == 2 and "bad.pt cannot be read safely" in err


class _Payload:
    """Unpickling this would create a file: a checkpoint must never run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_pickled_code_is_refused(capsys, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "spikefold-checkpoint-1", "model_config": {}, "state_dict": _Payload(str(marker))}, path)
    code, err = _run(capsys, "export", str(path), "--out", str(tmp_path / "m.nir"))
    assert code == 2 and "cannot be read safely" in err
    assert not marker.exists()


def test_missing_and_corrupt_nir(capsys, tmp_path):
    code, err = _run(capsys, "deploy", str(tmp_path / "none.nir"))
    assert code == 2 and "none.nir does not exist" in err
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5 at all" * 20)
    code, err = _run(capsys, "deploy", str(bad))
    assert code == 2 and "bad.nir cannot be read" in err and "corrupt" in err


def test_unmappable_node_is_named(capsys, tmp_path, exported):
    _, net, _ = exported
    graph = nir_io.to_nir(net)
    width = net.layers[0].size
    graph.nodes["squash"] = nir.Threshold(threshold=np.ones(width))
    graph.edges = [e for e in graph.edges if e != ("hidden0.neuron", "hidden1.synapse")]
    graph.edges += [("hidden0.neuron", "squash"), ("squash", "hidden1.synapse")]
    path = tmp_path / "odd.nir"
    nir.write(path, graph)
    code, err = _run(capsys, "deploy", str(path))
    assert code == 2 and "node 'squash' has type Threshold" in err and "supported node types" in err


@pytest.mark.parametrize("change,message", [
    ("cycle", "the graph has a cycle through the neurons ['hidden0.neuron', 'hidden1.neuron']"),
    ("stray", "found Inputs ['input'] and Outputs ['output', 'output_stray']"),  # NIR gives a loose end an Output
    ("bare", "node 'hidden0.neuron' (LIF) feeds the neuron 'twin'; only Affine or Conv2d synapses may"),
])
def test_graphs_deploy_cannot_map_are_named(capsys, tmp_path, exported, change, message):
    """A graph of neurons and synapses, but one no spikefold network has: a loop, a node off the path from input
    to output, a neuron that reads another without synapses."""
    _, net, _ = exported
    graph = nir_io.to_nir(net)
    back = graph.nodes["hidden0.synapse"]
    loop = nir.Affine(weight=np.zeros((net.layers[0].size, net.layers[1].size)), bias=np.zeros(net.layers[0].size),
                      metadata=back.metadata)
    if change == "cycle":
        graph.nodes["loop"] = loop
        graph.edges += [("hidden1.neuron", "loop"), ("loop", "hidden0.neuron")]
    elif change == "stray":
        graph.nodes["stray"] = loop
        graph.edges += [("hidden1.neuron", "stray")]
    else:  # a second hidden0 that reads the first directly, and hidden1 reads both
        graph.nodes["twin"] = graph.nodes["hidden0.neuron"]
        graph.nodes["twin.synapse"] = graph.nodes["hidden1.synapse"]
        graph.edges += [("hidden0.neuron", "twin"), ("twin", "twin.synapse"), ("twin.synapse", "hidden1.neuron")]
    path = tmp_path / f"{change}.nir"
    nir.write(path, nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, metadata=graph.metadata, type_check=False))
    code, err = _run(capsys, "deploy", str(path))
    assert code == 2 and message in err, err


def test_foreign_graph_without_integers(capsys, tmp_path):
    graph = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)),
                                   nir.LIF(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3),
                                           v_threshold=np.ones(3)))
    path = tmp_path / "foreign.nir"
    nir.write(path, graph)
    code, err = _run(capsys, "deploy", str(path))
    assert code == 2 and "not written by spikefold" in err


def test_out_of_range_parameter_in_file(capsys, tmp_path, exported):
    _, net, _ = exported
    bad = dataclasses.replace(net, layers=list(net.layers))
    bad.layers[1] = dataclasses.replace(bad.layers[1], neurons=dataclasses.replace(bad.layers[1].neurons, vth=200000))
    path = nir_io.write(bad, tmp_path / "hot.nir")
    code, err = _run(capsys, "deploy", str(path))
    assert code == 2 and "layer 'hidden1': vth = 200000 is outside the hardware range [0, 131071]" in err


def test_unknown_and_unreachable_targets(capsys, tmp_path, exported):
    _, net, _ = exported
    path = nir_io.write(net, tmp_path / "m.nir")
    code, err = _run(capsys, "deploy", str(path), "--target", "spinnaker")
    assert code == 2 and "unknown target 'spinnaker'" in err and "loihi2-sim" in err
    code, err = _run(capsys, "deploy", str(path), "--target", "loihi2")
    assert code == 2 and "lava-loihi" in err and "--target loihi2-sim" in err


def test_wrong_input_shape_and_range(exported):
    from spikefold.core.errors import DataError
    from spikefold.sim.simulator import simulate

    _, net, _ = exported
    with pytest.raises(DataError, match=r"shape \(3, 10\); this network takes \(samples, 64\)"):
        simulate(net, np.zeros((3, 10), np.int64))
    with pytest.raises(DataError, match=r"span \[999, 999\]; the encoding allows \[0, 255\]"):
        simulate(net, np.full((2, 64), 999, np.int64))


def test_float_input_outside_the_encoding(exported):
    from spikefold.core.errors import DataError

    _, net, _ = exported
    with pytest.raises(DataError, match=r"span \[0, 3\].*represents \[0, 1\]; scale the data to \[0, 1\]"):
        net.input.encode(np.array([[0.0, 3.0]]))
