"""The stages end to end, as the CLI runs them: train -> export (fold, quantise, NIR) -> sim -> deploy (Lava)
-> energy, with one run folder holding checkpoint, model.nir, report.json, report.md and plots."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from spikefold import reporting
from spikefold.deploy import lava_runner
from spikefold.deploy.validation import Agreement, compare
from spikefold.core.errors import ConfigError, DataError
from spikefold.export import hw_config, nir_io, qat
from spikefold.export.fold import fold
from spikefold.export.quantise import QatReport, QuantReport, quantise
from spikefold.export.intnet import IntNetwork
from spikefold.sim import energy
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import simulate, spike_table
from spikefold.train import data as datasets
from spikefold.train.loop import TrainConfig, model_from_checkpoint, train
from spikefold.train.models import ModelConfig


def _as_rows(split: datasets.Split, per_timestep: bool, timesteps: int) -> datasets.Split:
    """Samples as rows of features (images included), or as T rows each for input that changes every timestep:
    the form the folded and the integer networks take."""
    shape = (timesteps, -1) if per_timestep else (-1,)
    return dataclasses.replace(split, x_train=split.x_train.reshape(len(split.x_train), *shape),
                               x_test=split.x_test.reshape(len(split.x_test), *shape))


def export_checkpoint(checkpoint: Path, nir_path: Path, hw_name: str = "loihi2",
                      dataset: str = "digits", calibration_samples: int | None = None,
                      input_scale: float | None = None, weight_bits: int | None = None, qat_epochs: int = 0,
                      qat_lr: float = 0.2, on_qat_epoch=None,
                      data_root: str | Path | None = None) -> tuple[IntNetwork, QuantReport, float]:
    """Fold and quantise a checkpoint, optionally fine-tune the integers through the integer forward
    (``qat_epochs`` > 0, on the training split), check the state range on calibration data (the training set),
    write NIR. Returns the network, the quantisation report and the float model's test accuracy."""
    if input_scale is not None and not (math.isfinite(input_scale) and input_scale > 0):
        raise ConfigError(f"--input-scale must be a finite number > 0 (x_int = round(x * scale)), got {input_scale}")
    hw = hw_config.load(hw_name)
    split = datasets.load(dataset, data_root)
    model = model_from_checkpoint(checkpoint)
    expected = ((model.cfg.timesteps,) if model.cfg.temporal_input else ()) + tuple(model.cfg.input_shape)
    if int(np.prod(expected)) != split.features:
        raise DataError(f"checkpoint {checkpoint} expects inputs of shape {expected}; data set "
                        f"'{dataset}' has samples of shape {split.sample_shape}")
    split = _as_rows(split, bool(model.cfg.temporal_input), model.cfg.timesteps)
    fnet = fold(model)
    calib = split.x_train[:calibration_samples] if calibration_samples else split.x_train
    net, report = quantise(fnet, hw, calib, input_scale, weight_bits)
    if qat_epochs > 0:
        check_state_range(net, net.input.encode(calib))  # fail before fine-tuning, not after
        x_test = net.input.encode(split.x_test)
        before = float((simulate(net, x_test).predictions == split.y_test).mean())
        tuned = qat.finetune(fnet, net, hw, split.x_train, split.y_train, epochs=qat_epochs, lr=qat_lr,
                             on_epoch=on_qat_epoch)
        net = tuned.net
        after = float((simulate(net, x_test).predictions == split.y_test).mean())
        report.qat = QatReport(qat_epochs, qat_lr, tuned.history, before, after)
    check_state_range(net, net.input.encode(calib), report)
    logits, _ = fnet.run(split.x_test)
    float_acc = float((logits.argmax(1) == split.y_test).mean())
    int_calib = simulate(net, net.input.encode(calib))
    report.float_int_agreement = float((int_calib.predictions == fnet.run(calib)[0].argmax(1)).mean())
    net.metadata.update({"dataset": dataset, "float_test_accuracy": float_acc})
    nir_io.write(net, nir_path)
    return net, report, float_acc


def test_inputs(net: IntNetwork, samples: int | None,
                data_root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The encoded test split of the data set the network was trained on (first ``samples`` of it)."""
    split = datasets.load(str(net.metadata.get("dataset", "digits")), data_root)
    if split.features != int(np.prod(net.input.sample_shape(net.timesteps))):
        raise DataError(f"the network takes samples of shape {net.input.sample_shape(net.timesteps)} but the "
                        f"data set's have shape {split.sample_shape}")
    split = _as_rows(split, net.input.per_timestep, net.timesteps)
    x, y = split.x_test, split.y_test
    if samples is not None:
        if samples < 1:
            raise DataError(f"--samples must be >= 1, got {samples}")
        x, y = x[:samples], y[:samples]
    return net.input.encode(x), y


@dataclasses.dataclass
class PipelineConfig:
    out: Path = Path("runs/demo")
    dataset: str = "digits"
    data_root: str | Path | None = None
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=30))
    hw_config: str = "loihi2"
    target: str = "loihi2-sim"
    lava_samples: int = 200
    chunk: int = 100
    argv: list[str] | None = None  # the command line, for the report's run metadata


@dataclasses.dataclass
class PipelineAccuracy:
    float: float  # the float model, whole test split
    int_sim: float  # the integer simulator, whole test split
    lava: float  # Lava, on its samples (the first lava_samples of the test split)
    int_sim_on_lava_samples: float  # the integer simulator on Lava's samples
    test_samples: int
    lava_samples: int


@dataclasses.dataclass
class PipelineReport:
    """Everything a pipeline run measured, stage by stage (report.json)."""

    dataset: str
    model: dict[str, Any]  # ModelConfig.to_dict()
    target: str
    hw_config: str
    accuracy: PipelineAccuracy
    agreement: Agreement  # Lava vs the integer sim on Lava's samples
    quantisation: QuantReport
    processes: dict[str, str]  # layer name -> the Lava process that runs it (lava_runner.lava_process)
    spikes: list[dict]  # Lava's, per layer (simulator.spike_table)
    energy: energy.EnergyReport
    timings: dict[str, float]
    history: list[dict]  # training, per epoch
    files: dict[str, str]
    run: dict[str, Any]  # reporting.run_metadata


def run_pipeline(cfg: PipelineConfig, progress) -> PipelineReport:
    """Run every stage; ``progress`` is a rich Progress (or anything with add_task/update/advance)."""
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    lava_runner.check_target(cfg.target)  # fail before training, not after
    split = datasets.load(cfg.dataset, cfg.data_root)
    model_cfg = dataclasses.replace(cfg.model, input_shape=(split.features,), classes=split.classes)

    t0 = time.perf_counter()
    task = progress.add_task("train", total=cfg.train.epochs)
    result = train(model_cfg, cfg.train, split, out=out,
                   on_epoch=lambda rec: progress.update(task, advance=1,
                                                        description=f"train  acc {rec['test_accuracy']:.3f}"))
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    task = progress.add_task("export", total=1)
    net, qreport, float_acc = export_checkpoint(out / "model.pt", out / "model.nir", cfg.hw_config, cfg.dataset,
                                                data_root=cfg.data_root)
    net = nir_io.read(out / "model.nir")  # everything downstream runs what the file holds
    progress.update(task, advance=1)
    timings["export_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    task = progress.add_task("sim", total=1)
    x_all, y_all = test_inputs(net, None, cfg.data_root)
    sim_all = simulate(net, x_all)
    sim_acc = float((sim_all.predictions == y_all).mean())
    progress.update(task, advance=1)
    timings["sim_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_lava = min(cfg.lava_samples, len(x_all))
    task = progress.add_task(f"deploy {cfg.target}", total=n_lava)
    x, y = x_all[:n_lava], y_all[:n_lava]
    lava = lava_runner.run_in_chunks(net, x, cfg.target, cfg.chunk,
                                     on_chunk=lambda done: progress.update(task, completed=done))
    lava_acc = float((lava.predictions == y).mean())
    timings["deploy_s"] = time.perf_counter() - t0

    sim_sub = simulate(net, x)
    agreement = compare(net, sim_sub, lava)
    hw = hw_config.load(cfg.hw_config)
    report = energy.estimate(net, x, lava, hw, hw_config.load("ann_45nm"))

    summary = PipelineReport(
        dataset=cfg.dataset, model=model_cfg.to_dict(), target=cfg.target, hw_config=cfg.hw_config,
        accuracy=PipelineAccuracy(float=float_acc, int_sim=sim_acc, lava=lava_acc,
                                  int_sim_on_lava_samples=float((sim_sub.predictions == y).mean()),
                                  test_samples=len(y_all), lava_samples=n_lava),
        agreement=agreement, quantisation=qreport,
        processes=lava_runner.lava_processes(net), spikes=spike_table(net, lava),
        energy=report, timings=timings, history=result.history, files={"checkpoint": "model.pt", "nir": "model.nir"},
        run=reporting.run_metadata(cfg.argv, cfg.train.seed))
    reporting.write_pipeline(out, summary)
    return summary
