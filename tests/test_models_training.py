"""Models for every neuron type, running statistics across save/load and processes, data loaders, probes."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from spikefold.cli import main
from spikefold.core.errors import ConfigError, DataError
from spikefold.train import checkpoint, data, probes
from spikefold.train.loop import TrainConfig, augment, model_from_checkpoint, train
from spikefold.train.models import ModelConfig, build_model
from spikefold.train.neurons import NEURONS, NeuronConfig
from tests import ddp

KINDS = list(NEURONS)


def _tiny(arch: str, kind: str, timesteps: int = 2) -> ModelConfig:
    shapes = {"mlp": (64,), "vgg": (1, 8, 8), "resnet19": (3, 16, 16), "sew_resnet19": (3, 16, 16)}
    return ModelConfig(arch=arch, input_shape=shapes[arch], classes=5, timesteps=timesteps,
                       neuron=NeuronConfig(kind), norm="tdbn" if kind == "agl" else "bn",
                       hidden=(16,), width=1 / 16, plan=(64, "A", 128, "A") if arch == "vgg" else None)


@pytest.mark.parametrize("arch", ["mlp", "vgg", "resnet19", "sew_resnet19"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_architecture_with_every_neuron(arch, kind):
    torch.manual_seed(0)
    model = build_model(_tiny(arch, kind)).train()
    x = torch.rand(3, *model.cfg.input_shape)
    logits = model(x)
    assert logits.shape == (3, 5)
    loss = logits.logsumexp(1).mean() + (model.auxiliary_loss() or 0)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:1]) and any(float(g.abs().sum()) > 0 for g in grads if g is not None)


def test_vgg_paper_plan_and_resnet19_layout():
    vgg = build_model(ModelConfig(arch="vgg", input_shape=(2, 48, 48), classes=10, timesteps=1, width=1 / 32))
    convs = [m for m in vgg.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and vgg.readout.in_features == 16 * 3 * 3  # 512/32 channels at 48/16
    for arch, heads in (("resnet19", 0), ("sew_resnet19", 1)):
        net = build_model(ModelConfig(arch=arch, input_shape=(3, 32, 32), timesteps=1, width=1 / 16))
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) == 1 + 2 * 8  # stem + 8 blocks of two: with the two FC layers, 19 weight layers
        assert (net.head is not None) == bool(heads)


def test_sequence_input_for_event_data():
    cfg = ModelConfig(arch="vgg", input_shape=(2, 8, 8), classes=3, timesteps=4, temporal_input=True,
                      plan=(8, "A"))
    model = build_model(cfg)
    assert model(torch.rand(2, 4, 2, 8, 8)).shape == (2, 3)
    with pytest.raises(ConfigError, match="sequence input has 3 steps; the model runs 4"):
        model(torch.rand(2, 3, 2, 8, 8))


@pytest.mark.parametrize("kind", ["atgo", "mpinit_trsg"])
def test_running_statistics_survive_save_load_and_freeze_in_eval(kind, split, tmp_path):
    cfg = ModelConfig(hidden=(32,), timesteps=3, neuron=NeuronConfig(kind))
    result = train(cfg, TrainConfig(epochs=1), split, out=tmp_path)
    buffers = {k: v.clone() for k, v in result.model.named_buffers() if "running_threshold" in k
               or "initial_potential" in k}
    assert buffers, "the neuron must keep its statistic as a buffer"
    initial = 1.0 if kind == "atgo" else 0.0
    assert any(float((b - initial).abs().max()) > 1e-4 for b in buffers.values()), "training moved them"
    loaded = model_from_checkpoint(tmp_path / "model.pt")
    for name, value in buffers.items():
        assert torch.equal(dict(loaded.named_buffers())[name], value)
    x = torch.as_tensor(split.x_test[:50])
    with torch.no_grad():
        first = loaded(x)
        second = loaded(x)
    torch.testing.assert_close(first, second)
    for name, value in buffers.items():
        assert torch.equal(dict(loaded.named_buffers())[name], value), "eval must not update statistics"
    with torch.no_grad():  # and eval really reads them
        for name, buf in loaded.named_buffers():
            if name in buffers:
                buf.add_(0.5)
        assert not torch.allclose(loaded(x), first)


def _ddp_work(rank: int, world: int, folder: str, kind: str) -> None:
    torch.set_num_threads(1)
    split = data.digits()
    cfg = ModelConfig(hidden=(24,), timesteps=2, neuron=NeuronConfig(kind))
    result = train(cfg, TrainConfig(epochs=1, batch_size=64), split)
    stats = {k: v.tolist() for k, v in result.model.named_buffers()
             if "running_threshold" in k or "initial_potential" in k}
    # Without DDP's buffer broadcast: each rank sees different data, yet the statistics agree because
    # the neurons average them over processes as they compute them.
    from spikefold.train.neurons import build

    neuron = build(NeuronConfig(kind), 2).train()
    torch.manual_seed(rank)
    neuron(torch.randn(2, 16, 32) * (rank + 1) + rank)
    stats["direct"] = [b.tolist() for b in neuron.buffers()]
    with open(f"{folder}/rank{rank}.json", "w") as f:
        json.dump(stats, f)


@pytest.mark.parametrize("kind", ["atgo", "mpinit_trsg"])
def test_ddp_two_processes_end_with_identical_statistics(kind, tmp_path):
    ddp.spawn(_ddp_work, 2, str(tmp_path), kind)
    a = json.loads((tmp_path / "rank0.json").read_text())
    b = json.loads((tmp_path / "rank1.json").read_text())
    trained = [k for k in a if k != "direct"]
    assert trained, "the trained model must keep its statistics as buffers"
    initial = 1.0 if kind == "atgo" else 0.0  # both the trained and the direct statistics moved from it
    for values in [*(a[k] for k in trained), *a["direct"]]:
        assert any(abs(v - initial) > 1e-4 for v in np.ravel(values)), "the statistics never moved"
    assert a == b


def _write_cifar(root, n=4, variant="cifar-10-batches-py"):
    base = root / variant
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if "10-" in variant else ["train", "test"]
    key = "labels" if "10-" in variant else "fine_labels"
    for name in names:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key.encode(): list(range(n))}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


def test_cifar_loaders_read_local_copies(tmp_path):
    _write_cifar(tmp_path)
    split = data.load("cifar10", tmp_path)
    assert split.x_train.shape == (20, 3, 32, 32) and split.x_test.shape == (4, 3, 32, 32)
    assert 0 <= split.x_train.min() and split.x_train.max() <= 1
    _write_cifar(tmp_path / "c100", variant="cifar-100-python")
    assert data.load("cifar100", tmp_path / "c100").y_train.tolist() == [0, 1, 2, 3]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_loader_refuses_code_and_names_missing_files(tmp_path):
    with pytest.raises(DataError, match="pass its folder with --data-root"):
        data.load("cifar10")
    with pytest.raises(DataError, match=r"data root .*nowhere does not exist"):
        data.load("cifar10", tmp_path / "nowhere")
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    with pytest.raises(DataError, match=r"missing file .*data_batch_1"):
        data.load("cifar10", tmp_path)
    with open(base / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil()}, f)
    with pytest.raises(DataError, match=r"refusing to load builtins.print"):
        data.load("cifar10", tmp_path)
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        data.load("mnist")


def test_probes_match_the_spikes(split):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=(32, 16), timesteps=3))
    x = split.x_test[:64]
    summary = probes.observe(model, x)
    # Independent count: re-run and collect the spikes each neuron layer emits.
    emitted = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: emitted.__setitem__(name, out))
             for name, m in model.neurons()]
    with torch.no_grad():
        model(torch.as_tensor(x))
    for h in hooks:
        h.remove()
    for name, spikes in emitted.items():
        expected = spikes.mean(dim=tuple(range(1, spikes.dim()))).tolist()
        assert summary[name]["firing_rate"] == pytest.approx(expected)
        counts = np.asarray(summary[name]["histogram"]["counts"])
        assert counts.sum() + summary[name]["histogram"]["outside_range"] == spikes.numel()


def test_recipe_training_writes_probes(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: digits\nmodel: {arch: mlp, input_shape: [64], classes: 10, timesteps: 2,\n"
                      "  hidden: [32], neuron: {kind: mpinit_trsg, options: {reset: subtract}}}\n"
                      "train: {epochs: 2, optimiser: sgd, lr: 0.05, label_smoothing: 0.1}\n")
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "probes" / "probes.json").read_text())
    # The probes name layers as export does: the spiking layers, and every weight layer for the gradients.
    assert set(report["activity"]) == {"hidden0"} and set(report["gradients"]) == {"hidden0", "readout"}
    assert all(0 <= g["p10"] <= g["median"] <= g["p90"] for g in report["gradients"].values())
    for png in ("firing_rate.png", "window_share.png", "potentials.png", "gradients.png"):
        assert (tmp_path / "run" / "probes" / png).stat().st_size > 1000
    assert checkpoint.load(tmp_path / "run" / "model.pt")["model_config"]["neuron"]["kind"] == "mpinit_trsg"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {arch: transformer}\n")
    assert main(["train", "--recipe", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "unknown architecture 'transformer'" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(p.name for p in (
    __import__("pathlib").Path(__file__).parent.parent / "recipes").glob("*.yaml")))
def test_shipped_recipes_build(recipe):
    import pathlib

    import yaml

    r = yaml.safe_load((pathlib.Path(__file__).parent.parent / "recipes" / recipe).read_text())
    assert r["dataset"] in data.DATASETS and r["description"]
    cfg = ModelConfig.from_dict(r["model"])
    TrainConfig.from_dict(r["train"])
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > (1_000 if r["dataset"] == "digits" else 1_000_000)


def test_augmentation_crops_the_padded_image_and_mirrors_some():
    """Every augmented image is the window of its 4-pixel zero-padded original at one offset in [0, 8] x [0, 8],
    mirrored or not (random pixels: exactly one window matches); across a batch the offsets vary and both
    orientations occur; the same seed gives the same batch."""
    x = torch.rand(64, 3, 8, 8)
    out = augment(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    found = []
    for image, source in zip(out, padded):
        matches = [(dy, dx, mirrored) for dy in range(9) for dx in range(9) for mirrored in (False, True)
                   if torch.equal(image, source[:, dy:dy + 8, dx:dx + 8].flip(-1) if mirrored
                                  else source[:, dy:dy + 8, dx:dx + 8])]
        assert len(matches) == 1
        found += matches
    assert len({(dy, dx) for dy, dx, _ in found}) > 20 and {mirrored for *_, mirrored in found} == {False, True}
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(0)))
