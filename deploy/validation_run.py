"""Hardware-in-the-loop validation: stream a data set through a target in chunks and hold it against golden
references, the integer simulator (exact by default) and, when given, the float model.

The target runs ``model``; the integer-sim reference runs ``reference`` (by default the same file). So a
changed model is validated against the export it came from with ``validate changed.nir --reference
model.nir``, and the report names the layer and timestep where the two first part.

Each finished chunk's target output is saved under ``out/chunks/`` before the next chunk starts; a run that
was interrupted (Ctrl-C, a crash) continues from its last finished chunk with ``resume=True``, provided the
model, target, data and chunking are the same (recorded in ``out/chunks/manifest.json``).

A network too big to run whole is validated layer by layer instead (``layers``; see
:mod:`spikefold.deploy.layerwise`), with the same chunks and resumption per (chunk, layer).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spikefold.core import files
from spikefold.deploy import data_source, layerwise, lava_runner
from spikefold.deploy.validation import Agreement, Check, Chunks, Tolerances, ValidationSummary, compare
from spikefold.core.errors import ConfigError, DataError, NIRFileError
from spikefold.export import hw_config, nir_io
from spikefold.export.intnet import IntNetwork
from spikefold.sim import energy
from spikefold.export.runner import matmul_plan
from spikefold.sim.simulator import SimResult, simulate


@dataclasses.dataclass
class ValidationConfig:
    model: Path
    reference: Path | None = None  # golden integer network; default: the model itself
    float_model: Path | None = None  # checkpoint of the float model, for the float reference
    data: str | None = None  # data set name[:split] or .npz file; default: the model's own test split
    data_root: str | None = None  # local folder of a data set that is not embedded (cifar10, ...)
    samples: int | None = None
    target: str = "loihi2-sim"
    chunk: int = 100
    out: Path = Path("runs/validate")
    resume: bool = False
    states: bool = False  # also compare every u and v integer
    layers: str | None = None  # "whole", "each" or layer names (see layerwise.choose_layers); default by size
    hw_config: str | None = None  # for energy and latency; default: the model's
    tolerances: Tolerances = dataclasses.field(default_factory=Tolerances)


@dataclasses.dataclass
class PredictionAgreement:
    agreement_with_int_sim: float  # share of samples the target predicts as the integer sim does
    agreement_with_float: float | None  # the same against the float model, when given
    per_sample: dict[str, list[int] | None]  # each run's predictions, and the labels


@dataclasses.dataclass
class ValidationReport(ValidationSummary):
    """A whole-network validation: besides the summary, the agreement per layer and timestep, accuracies,
    per-sample predictions, and energy and latency from the target's spikes."""

    float_model: str | None
    agreement: Agreement
    accuracy: dict[str, float | None]  # per run (target, int_sim, float); None without labels
    predictions: PredictionAgreement
    energy: energy.EnergyReport


ProgressCallback = Callable[[int, int, int], None]  # (samples done, samples in all, samples reused)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_validation(cfg: ValidationConfig, on_progress: ProgressCallback | None = None
                   ) -> ValidationReport | layerwise.LayerwiseReport:
    """Run the whole validation (its chunks kept in ``cfg.out / "chunks"``) and return its report; ``passed``
    says whether every check held. ``spikefold.reporting`` writes it."""
    cfg.tolerances.check()
    lava_runner.check_chunk(cfg.chunk)
    lava_runner.check_target(cfg.target)  # an unreachable target fails before anything else runs
    net = nir_io.read(cfg.model)
    reference_path = cfg.reference or cfg.model
    reference = nir_io.read(reference_path) if cfg.reference else net
    _check_same_shape(net, reference, cfg.model, reference_path)
    matmul_plan(reference)  # the simulator's own limits, checked before the long target run rather than after it
    data = data_source.load(cfg.data, reference, cfg.samples, str(reference_path), cfg.data_root)
    layers = layerwise.choose_layers(net, cfg.layers)
    if layers is not None:
        return _run_layerwise(cfg, net, reference, data, layers, on_progress)
    timings: dict[str, float] = {}
    float_predictions = None
    if cfg.float_model is not None:  # before the long target run, so a bad checkpoint fails fast
        t0 = time.perf_counter()
        float_predictions = _float_predictions(Path(cfg.float_model), data.x, reference)
        timings["float_model_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    store = ChunkStore(cfg.out / "chunks", {
        "model_sha256": file_digest(Path(cfg.model)), "target": cfg.target, "data": data.source,
        "data_fingerprint": data.fingerprint, "samples": len(data.x_int), "chunk": cfg.chunk,
        "states": cfg.states, "layers": "whole"}, cfg.resume)
    target, reused = _run_target(net, data.x_int, cfg, store, on_progress)
    timings["target_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    golden = simulate(reference, data.x_int, record_state=cfg.states)
    timings["int_sim_s"] = time.perf_counter() - t0

    agreement = compare(reference, golden, target)
    hw = hw_config.load(cfg.hw_config or net.hw_config)
    estimate = energy.estimate(net, data.x_int, target, hw, hw_config.load("ann_45nm"))
    return _report(cfg, net, data, reused, agreement, golden, target, float_predictions, estimate, timings)


def _run_layerwise(cfg: ValidationConfig, net: IntNetwork, reference: IntNetwork, data: data_source.RunData,
                   layers: list[int], on_progress: ProgressCallback | None) -> layerwise.LayerwiseReport:
    if cfg.float_model is not None:
        raise ConfigError("--float-model compares the whole network's predictions, which a layer-wise run does not "
                          "produce; validate with --layers whole, or drop --float-model")
    store = ChunkStore(cfg.out / "chunks", {
        "model_sha256": file_digest(Path(cfg.model)), "target": cfg.target, "data": data.source,
        "data_fingerprint": data.fingerprint, "samples": len(data.x_int), "chunk": cfg.chunk,
        "states": cfg.states, "layers": [net.layers[i].name for i in layers]}, cfg.resume)
    return layerwise.run(cfg, net, reference, data, layers, store, on_progress)


def _check_same_shape(net: IntNetwork, reference: IntNetwork, model: Path, reference_path: Path) -> None:
    def shape(n: IntNetwork) -> tuple:
        return (n.input.size, n.input.bits, n.input.scale, n.input.per_timestep, n.timesteps,
                [layer.size for layer in n.layers], [[c.source for c in layer.inputs] for layer in n.layers])

    ours, theirs = shape(net), shape(reference)
    if ours != theirs:
        what = ("input size", "input bits", "input scale", "input per timestep", "timesteps", "layer sizes",
                "connections")
        differ = [f"{name} {a} vs {b}" for name, a, b in zip(what, ours, theirs) if a != b]
        raise NIRFileError(f"{model} and the reference {reference_path} are not the same network shape "
                           f"({'; '.join(differ)}); validate a model against the export it came from")


def _run_target(net: IntNetwork, x_int: np.ndarray, cfg: ValidationConfig, store: ChunkStore,
                on_progress: ProgressCallback | None) -> tuple[SimResult, int]:
    """The target's output for every sample, chunk by chunk, reusing chunks a resumed run already has.
    Returns it and the number of samples reused."""
    n = len(x_int)
    reused = store.held(lava_runner.chunk_bounds(n, cfg.chunk))
    if on_progress is not None:
        on_progress(reused, n, reused)
    progress = None if on_progress is None else (lambda done: on_progress(reused + done, n, reused))
    return lava_runner.run_in_chunks(net, x_int, cfg.target, cfg.chunk, cfg.states, progress, store), reused


def _float_predictions(checkpoint: Path, x: np.ndarray, reference: IntNetwork) -> np.ndarray:
    # Only a float reference needs torch and the training code's model definitions.
    from spikefold.export.fold import fold
    from spikefold.train.loop import model_from_checkpoint

    model = model_from_checkpoint(checkpoint)
    cfg, classes = model.cfg, reference.readout.size
    features = int(np.prod(cfg.input_shape)) * (cfg.timesteps if cfg.temporal_input else 1)
    if features != int(np.prod(x.shape[1:])) or cfg.classes != classes:
        raise DataError(f"float model {checkpoint} maps {features} inputs to {cfg.classes} classes, but the data "
                        f"has samples of shape {x.shape[1:]} and the integer model {classes} outputs; pass the "
                        "checkpoint the reference was exported from")
    folded = fold(model)
    ours = (folded.timesteps, [layer.output_size() for layer in folded.layers])
    theirs = (reference.timesteps, [layer.size for layer in reference.layers])
    if ours != theirs:  # another architecture would be compared sample by sample as if it were the same model
        raise DataError(f"float model {checkpoint} is not the architecture of the integer model: timesteps and layer "
                        f"sizes {ours[0]}, {ours[1]} vs {theirs[0]}, {theirs[1]}; pass the checkpoint the reference "
                        "was exported from")
    logits, _ = folded.run(x)
    return logits.argmax(axis=1)


class ChunkStore:
    """Finished chunks of a run on disk, each written atomically, with the manifest a resume must match."""

    def __init__(self, folder: Path, manifest: dict[str, Any], resume: bool):
        self.folder = folder
        path = folder / "manifest.json"
        if resume and path.is_file():
            before = json.loads(path.read_text())
            differ = [f"{key} {before.get(key)!r} -> {value!r}" for key, value in manifest.items()
                      if before.get(key) != value]
            if differ:
                raise ConfigError(f"cannot resume the run in {folder.parent}: {'; '.join(differ)}; "
                                  "run without --resume to start over")
        else:
            for old in folder.glob("chunk-*.npz"):
                old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        files.write_json(path, manifest)

    @staticmethod
    def key(chunk: int, layer: int | None = None) -> str:
        """A chunk's name: its number, and for a layer-wise run the layer's index too."""
        return f"{chunk:05d}" if layer is None else f"{chunk:05d}-layer-{layer:03d}"

    def _path(self, key: str) -> Path:
        return self.folder / f"chunk-{key}.npz"

    def has(self, key: str) -> bool:
        return self._path(key).is_file()

    def held(self, bounds: list[tuple[int, int]], layers: Sequence[int | None] = (None,)) -> int:
        """How many samples of the chunks ``bounds`` (for each of ``layers``, in a layer-wise run) are held."""
        return sum(stop - start for k, (start, stop) in enumerate(bounds) for i in layers if self.has(self.key(k, i)))

    def save_arrays(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        files.write_bytes(self._path(key), buffer.getvalue())

    def load_arrays(self, key: str) -> dict[str, np.ndarray]:
        with np.load(self._path(key)) as f:
            return {name: f[name] for name in f.files}

    def save(self, key: str, part: SimResult) -> None:
        arrays = {"readout_v": part.readout_v}
        for name in ("spikes", "u", "v"):
            for i, a in enumerate(getattr(part, name) or []):
                arrays[f"{name}_{i}"] = a
        self.save_arrays(key, arrays)

    def load(self, key: str) -> SimResult:
        arrays = self.load_arrays(key)

        def layers(name: str) -> list[np.ndarray] | None:
            found = sorted((int(key.rsplit("_", 1)[1]), a) for key, a in arrays.items() if key.startswith(f"{name}_"))
            return [a for _, a in found] or None

        return SimResult(spikes=layers("spikes"), readout_v=arrays["readout_v"], stats=[], u=layers("u"),
                         v=layers("v"))


def _checks(tol: Tolerances, agreement: Agreement, accuracy: dict, float_agreement: float | None) -> list[Check]:
    checks = []
    for row in agreement.layers:
        share = row.differing_share
        checks.append(Check(f"spikes {row.name}", share <= tol.spikes, share, tol.spikes,
                            f"{sum(row.differing):,} of {row.slots * len(row.differing):,} spike slots differ"))
    checks.append(Check("readout voltages", agreement.max_logit_difference <= tol.logits,
                        agreement.max_logit_difference, tol.logits, "largest absolute readout-voltage difference vs the integer sim"))
    if agreement.states_differing is not None:  # --states: every u and v integer, exactly
        checks.append(Check("neuron states (u, v)", agreement.states_differing == 0, agreement.states_differing, 0,
                            "u and v integers that differ from the integer sim"))
    checks.append(Check("predictions vs integer sim", agreement.predictions_equal >= tol.agreement,
                        agreement.predictions_equal, tol.agreement, "share of samples predicted alike"))
    if float_agreement is not None:
        checks.append(Check("predictions vs float model", float_agreement >= tol.float_agreement,
                            float_agreement, tol.float_agreement, "share of samples predicted alike"))
        if accuracy.get("float") is not None and accuracy.get("target") is not None:
            drop = accuracy["float"] - accuracy["target"]
            checks.append(Check("accuracy vs float model", drop <= tol.accuracy_drop, drop, tol.accuracy_drop,
                                f"target {accuracy['target']:.4f} vs float {accuracy['float']:.4f}"))
    return checks


def _report(cfg: ValidationConfig, net: IntNetwork, data: data_source.RunData, reused: int,
            agreement: Agreement, golden: SimResult, target: SimResult, float_predictions: np.ndarray | None,
            estimate: energy.EnergyReport, timings: dict[str, float]) -> ValidationReport:
    predictions = {"target": target.predictions, "int_sim": golden.predictions}
    if float_predictions is not None:
        predictions["float"] = float_predictions
    accuracy = {name: (float((p == data.labels).mean()) if data.labels is not None else None)
                for name, p in predictions.items()}
    float_agreement = (float((target.predictions == float_predictions).mean())
                       if float_predictions is not None else None)
    checks = _checks(cfg.tolerances, agreement, accuracy, float_agreement)
    n = len(data.x_int)
    return ValidationReport(
        passed=all(c.passed for c in checks), model=str(cfg.model), reference=str(cfg.reference or cfg.model),
        float_model=str(cfg.float_model) if cfg.float_model else None, target=cfg.target, data=data.source,
        samples=n, timesteps=net.timesteps,
        chunks=Chunks(cfg.chunk, len(lava_runner.chunk_bounds(n, cfg.chunk)), reused),
        tolerances=cfg.tolerances, checks=checks, first_divergence=agreement.first, agreement=agreement,
        accuracy=accuracy,
        predictions=PredictionAgreement(
            agreement_with_int_sim=agreement.predictions_equal, agreement_with_float=float_agreement,
            per_sample={name: p.tolist() for name, p in predictions.items()}
            | {"labels": data.labels.tolist() if data.labels is not None else None}),
        energy=estimate, timings=timings)
