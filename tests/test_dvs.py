"""CIFAR10-DVS end to end on a small synthetic event set written in the on-disk form tonic's CIFAR10DVS reads
(AEDAT4 files in class folders): the loader, a tiny VGGSNN trained a few steps on it, exported with input that
changes every timestep, simulated, and run in Lava spike for spike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("tonic", reason="tonic (the dvs extra) is not installed; `make test` installs it")
pytest.importorskip("dv_processing", reason="dv-processing (the dvs extra) is not installed; `make test` installs it")

from spikefold.cli import main  # noqa: E402
from spikefold.deploy import lava_runner  # noqa: E402
from spikefold.deploy.validation import compare  # noqa: E402
from spikefold.core.errors import DataError  # noqa: E402
from spikefold.export import hw_config, nir_io  # noqa: E402
from spikefold.export.fold import fold  # noqa: E402
from spikefold.export.quantise import quantise  # noqa: E402
from spikefold.export.state_range import check_state_range  # noqa: E402
from spikefold.sim.simulator import simulate  # noqa: E402
from spikefold.train.data import cifar10_dvs  # noqa: E402
from spikefold.train.loop import TrainConfig, train  # noqa: E402
from spikefold.train.models import ModelConfig  # noqa: E402
from tests.dvs_events import write_dataset  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.fixture(scope="module")
def dvs_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dvs"), per_class=10)


def test_loader_reads_tonic_layout_into_frames(dvs_root, tmp_path):
    split = cifar10_dvs(dvs_root, timesteps=10, size=48)
    assert split.x_train.shape == (90, 10, 2, 48, 48) and split.x_test.shape == (10, 10, 2, 48, 48)
    assert sorted(np.bincount(split.y_test).tolist()) == [1] * 10  # 10 % of each class held out
    assert split.x_train.min() == 0 and split.x_train.max() == 1
    # The class's bar drifts down over the recording: later frames have their events lower on the sensor.
    rows = np.arange(48)
    sample = split.x_train[0].sum(axis=(1, 3))  # (T, rows)
    assert (sample[-1] @ rows) / sample[-1].sum() > (sample[0] @ rows) / sample[0].sum()
    again = cifar10_dvs(dvs_root, timesteps=10, size=48)
    np.testing.assert_array_equal(again.x_test, split.x_test)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no CIFAR10-DVS recordings under .*never downloads"):
        cifar10_dvs(empty)
    (tmp_path / "odd" / "CIFAR10DVS" / "zebra").mkdir(parents=True)
    with pytest.raises(DataError, match=r"folders \['zebra'\] are not CIFAR10-DVS classes"):
        cifar10_dvs(tmp_path / "odd")
    broken = tmp_path / "broken" / "CIFAR10DVS" / "cat"
    broken.mkdir(parents=True)
    (broken / "cat_0.aedat4").write_bytes(b"#!AER-DAT4.0\r\nnot really")
    with pytest.raises(DataError, match="cat_0.aedat4 cannot be read as an AEDAT4 event recording"):
        cifar10_dvs(tmp_path / "broken")


def _dvs_model(recipe: str, **shrink) -> ModelConfig:
    model = yaml.safe_load((RECIPES / recipe).read_text())["model"]
    return ModelConfig.from_dict(model | shrink)


def test_tiny_vggsnn_exports_with_per_timestep_input_and_runs_spike_exact_in_lava(dvs_root):
    """DS-ATGO's VGGSNN recipe (threshold schedules: spikefold's ScheduledLIF in Lava) shrunk to one conv
    layer on 16 x 16 frames, T = 4: graded per-timestep input, sim = Lava on every spike, u and v."""
    split = cifar10_dvs(dvs_root, timesteps=4, size=16)
    cfg = _dvs_model("ds_atgo_cifar10dvs_vggsnn.yaml", input_shape=[2, 16, 16], timesteps=4, plan=[4, "A"])
    model = train(cfg, TrainConfig(epochs=2, batch_size=16, optimiser="adamw", lr=5e-3), split).model
    fnet = fold(model)
    net, report = quantise(fnet, hw_config.load("loihi2"), split.x_train)
    assert net.input.per_timestep and net.input.bits == 8
    x = net.input.encode(split.x_test[:3])
    assert x.shape == (3, 4, 2 * 16 * 16)
    check_state_range(net, net.input.encode(split.x_train), report)
    ref = simulate(net, x, record_state=True)
    assert ref.spikes[0].any(), "the conv layer must spike"
    got = lava_runner.run(net, x, record_state=True)
    assert compare(net, ref, got).exact
    for i in range(len(net.layers)):
        np.testing.assert_array_equal(ref.u[i], got.u[i])
        np.testing.assert_array_equal(ref.v[i], got.v[i])


def test_binary_event_input_exports_as_plain_spikes(dvs_root):
    """Events as 0/1 per pixel and timestep: bits = 1, the first synapses take plain spikes, and sim = Lava."""
    split = cifar10_dvs(dvs_root, timesteps=3, size=8)
    events = dataclasses.replace(split, x_train=(split.x_train > 0).astype(np.float32),
                                 x_test=(split.x_test > 0).astype(np.float32))
    cfg = _dvs_model("mpd_agl_cifar10dvs_vggsnn.yaml", input_shape=[2, 8, 8], timesteps=3, plan=[4])
    model = train(cfg, TrainConfig(epochs=1, batch_size=16), events).model
    net, _ = quantise(fold(model), hw_config.load("loihi2"), events.x_train, binary_input=True)
    assert (net.input.bits, net.input.scale, net.layers[0].inputs[0].synapses.num_message_bits) == (1, 1.0, 0)
    with pytest.raises(DataError, match="binary event input"):
        net.input.encode(split.x_test)  # counts scaled to [0, 1] are not events
    x = net.input.encode(events.x_test[:3])
    ref = simulate(net, x)
    assert ref.spikes[0].any()
    assert compare(net, ref, lava_runner.run(net, x)).exact


@pytest.mark.slow
def test_vggsnn_recipe_shapes_train_export_sim_deploy_from_the_cli(dvs_root, tmp_path, capsys):
    """The DVS recipe's shapes (2 x 48 x 48 frames, T = 10), VGGSNN shrunk to two convs, each followed by
    pooling: trained a few steps from the command line, exported with the data set as calibration, simulated
    on the synthetic test split, deployed in Lava spike-exact against the sim."""
    recipe = yaml.safe_load((RECIPES / "ds_atgo_cifar10dvs_vggsnn.yaml").read_text())
    recipe["model"] |= {"plan": [4, "A", 4, "A"]}
    recipe["train"] |= {"epochs": 3, "batch_size": 16, "optimiser": "adamw", "lr": 0.005}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert main(["train", "--recipe", str(tmp_path / "tiny.yaml"), "--data-root", str(dvs_root),
                 "--out", str(run), "--device", "cpu"]) == 0
    from spikefold.pipeline import export_checkpoint

    net, _, _ = export_checkpoint(run / "model.pt", run / "model.nir", dataset="cifar10_dvs", data_root=dvs_root)
    assert net.input.per_timestep and nir_io.read(run / "model.nir").input.per_timestep
    split = cifar10_dvs(dvs_root)
    np.savez(tmp_path / "test.npz", x=split.x_test.reshape(len(split.x_test), 10, -1), y=split.y_test)
    # The simulator on the whole test split. (`spikefold sim` also maps the network onto cores, which refuses
    # 48 x 48 maps until layers over a core's 4096 input axons are partitioned: issue 13, item 3.) Trained this
    # briefly on so few recordings the network fires little (its deeper conv may stay silent); spike-level
    # agreement with active layers is what the fast tests above check, this one the shapes, timing and files.
    x = net.input.encode(split.x_test)
    ref = simulate(net, x)
    assert ref.readout_v.any()
    capsys.readouterr()
    assert main(["deploy", str(run / "model.nir"), "--data", str(tmp_path / "test.npz"), "--samples", "2"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    compared = ref.spikes[0][:2].size + ref.spikes[1][:2].size + ref.spikes[2][:2].size
    assert f"spike agreement with spikefold sim: {compared:,} / {compared:,} equal; readout equal: True" in \
        " ".join(out.out.split())
