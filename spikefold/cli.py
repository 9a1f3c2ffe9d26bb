"""The ``spikefold`` command: one subcommand per stage, and ``pipeline`` for the whole chain.

Errors a user can act on print one line (no traceback) and exit with status 2; a failed check exits 1.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from spikefold import __version__, reporting
from spikefold.core import files
from spikefold.core.errors import ConfigError, SpikefoldError

console = Console(stderr=True)
out_console = Console()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _table(title: str, rows, headers=("what", "value")) -> Table:
    table = Table(title=title)
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    return table


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated layer sizes like 128,128, got '{text}'")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--hidden sizes must be positive integers, got '{text}'")
    return sizes


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=_sizes, default=(128, 128), help="hidden layer sizes (default 128,128)")
    p.add_argument("--timesteps", "-T", type=int, default=4, help="timesteps per sample (default 4)")
    p.add_argument("--beta", type=float, default=0.5, help="membrane decay in [0, 1) (default 0.5)")
    p.add_argument("--learn-beta", action="store_true", help="learn the decay per layer (PLIF)")
    p.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and batch order (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument("--neuron", default="lif", help="lif, atgo, agl, mpinit_trsg or psg_pda (default lif)")
    p.add_argument("--option", type=_option, action="append", metavar="KEY=VALUE",
                   help="a neuron option, e.g. --option reset=subtract --option surrogate=arctan (repeatable)")


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option takes key=value (e.g. reset=subtract), got '{text}'")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def _positive_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, got '{text}'") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text} (x_int = round(x * scale))")
    return value


def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads torch uses (default: torch's, one per core; 1 is fastest on a busy machine)")


def _use_threads(args) -> None:
    """Fix torch's CPU thread count for the whole command, before any work."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _force_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="overwrite the results of an earlier run at the output path "
                                                        "(without it, existing results are kept and the run refused)")


def _model_config(args, features: int = 64, classes: int = 10):
    from spikefold.train.models import ModelConfig
    from spikefold.train.neurons import NeuronConfig

    if args.timesteps < 1:
        raise SpikefoldError(f"--timesteps must be >= 1, got {args.timesteps}")
    if not 0 <= args.beta < 1:
        raise SpikefoldError(f"--beta must be in [0, 1), got {args.beta}")
    kind = args.neuron
    options = dict(args.option or [])
    if kind == "lif":
        options = {"beta": args.beta, "learn_beta": args.learn_beta, **options}
    return ModelConfig(arch="mlp", input_shape=(features,), classes=classes, hidden=tuple(args.hidden),
                       timesteps=args.timesteps, neuron=NeuronConfig(kind, options),
                       norm="tdbn" if kind == "agl" else "bn")


def _train_config(args):
    from spikefold.train.loop import TrainConfig

    if args.epochs < 1:
        raise SpikefoldError(f"--epochs must be >= 1, got {args.epochs}")
    return TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device)


def _shipped_recipes():
    import importlib.resources

    return importlib.resources.files("spikefold.recipes")


def _recipe(path: str) -> dict:
    """A recipe by path, or by the name of one shipped with spikefold (``digits_cnn``)."""
    shipped = _shipped_recipes() / f"{Path(path).stem}.yaml"
    try:
        if Path(path).is_file():
            text = Path(path).read_text()
        elif "/" not in path and shipped.is_file():
            text = shipped.read_text()
        else:
            names = sorted(p.name[:-5] for p in _shipped_recipes().iterdir() if p.name.endswith(".yaml"))
            raise ConfigError(f"recipe {path} does not exist; give a YAML file or a shipped recipe: {', '.join(names)}")
        recipe = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe {path} cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {exc}") from None
    unknown = set(recipe or {}) - {"dataset", "model", "train", "description"}
    if not isinstance(recipe, dict) or unknown or "model" not in recipe:
        raise ConfigError(f"recipe {path} needs 'dataset', 'model' and 'train' sections"
                          + (f" (unknown: {sorted(unknown)})" if unknown else ""))
    return recipe


def cmd_train(args) -> int:
    from spikefold.train import data as datasets
    from spikefold.train import probes
    from spikefold.train.loop import TrainConfig, distributed_rank, train
    from spikefold.train.models import ModelConfig

    files.check_output_folder(args.out, "--out", args.force or args.resume, ("model.pt", "last.pt"))
    if args.recipe:
        recipe = _recipe(args.recipe)
        split = datasets.load(recipe.get("dataset", "digits"), args.data_root)
        model_cfg = ModelConfig.from_dict(recipe["model"])
        overrides = {"device": args.device} | ({"epochs": args.epochs} if args.epochs_given else {})
        train_cfg = TrainConfig.from_dict({**recipe.get("train", {}), **overrides})
    else:
        split = datasets.load(args.dataset, args.data_root)
        model_cfg = _model_config(args, split.features, split.classes)
        train_cfg = _train_config(args)
    gradients = probes.GradientProbe() if args.probes else None
    with _progress() as progress:
        task = progress.add_task("train", total=train_cfg.epochs)
        result = train(model_cfg, train_cfg, split, out=args.out, resume=args.resume,
                       on_epoch=lambda r: progress.update(task, completed=r["epoch"],
                                                          description=f"train  acc {r['test_accuracy']:.3f}"),
                       after_backward=gradients)
    if distributed_rank() != 0:  # under torchrun, rank 0 alone reports and writes files
        return 0
    reporting.write_training_curve(result.history, Path(args.out) / "training.png")
    out_console.print(f"test accuracy {result.test_accuracy * 100:.2f} %; checkpoint {Path(args.out) / 'model.pt'}; "
                      "training curve training.png")
    if args.probes:
        written = reporting.write_probes(Path(args.out) / "probes", probes.observe(result.model, split.x_test),
                                         gradients.summary())
        out_console.print(f"probes: {', '.join(str(p) for p in written)}")
    return 0


def cmd_export(args) -> int:
    from spikefold.deploy.lava_runner import lava_processes
    from spikefold.export.quantise import ExportReport
    from spikefold.pipeline import export_checkpoint

    if args.qat_epochs < 0 or not args.qat_lr > 0 or not math.isfinite(args.qat_lr):
        raise SpikefoldError(f"--qat-epochs must be >= 0 and --qat-lr > 0 (finite), got {args.qat_epochs} "
                             f"and {args.qat_lr}")
    nir_path = files.check_output_file(args.out, "--out", args.force)
    report_path = files.check_output_file(nir_path.with_suffix(".report.json"), "--out's report", args.force)
    with _progress() as progress:
        task = progress.add_task("QAT (integer forward)", total=args.qat_epochs, visible=args.qat_epochs > 0)
        net, report, float_acc = export_checkpoint(
            Path(args.checkpoint), nir_path, args.hw_config, args.dataset, args.calibration_samples,
            args.input_scale, args.weight_bits, args.qat_epochs, args.qat_lr, data_root=args.data_root,
            on_qat_epoch=lambda r: progress.update(task, completed=r["epoch"],
                                                   description=f"QAT  loss {r['loss']:.4f}"))
    reporting.write_export(report_path, ExportReport(
        checkpoint=args.checkpoint, nir=str(nir_path), float_test_accuracy=float_acc, quantisation=report,
        processes=lava_processes(net)), reporting.run_metadata(args.argv))
    rows = [(q.name, q.weight_exp, q.max_abs_weight, f"{q.weight_rel_error:.4f}", q.vth,
             f"{q.headroom_bits:.2f}") for q in report.layers]
    out_console.print(_table(f"exported {nir_path} and {report_path.name} (float test accuracy "
                             f"{float_acc * 100:.2f} %)", rows,
                             ("layer", "weight_exp", "max |w|", "weight rel. error", "vth", "headroom bits")))
    if report.qat:
        q = report.qat
        out_console.print(f"QAT, {q.epochs} epochs: integer test accuracy {q.integer_test_accuracy_before * 100:.2f}"
                          f" % -> {q.integer_test_accuracy_after * 100:.2f} %")
    return 0


def cmd_import(args) -> int:
    """Quantise a foreign NIR graph (snnTorch, SpikingJelly, Norse, ...) into a spikefold NIR file."""
    import nir
    import numpy as np

    from spikefold.core.errors import DataError, NIRFileError
    from spikefold.export import hw_config, nir_io
    from spikefold.export.nir_import import import_graph
    from spikefold.deploy.lava_runner import process_kind
    from spikefold.export.state_range import check_state_range

    out = files.check_output_file(args.out, "--out", args.force)
    try:
        graph = nir.read(args.graph)
    except Exception as exc:  # h5py/nir raise many types for a missing or damaged file
        raise NIRFileError(f"NIR file {args.graph} cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        loaded = np.load(args.calibration)
        x = loaded[args.calibration_key] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"calibration file {args.calibration} cannot be read as .npy, or as .npz with the array "
                        f"'{args.calibration_key}' ({type(exc).__name__}: {exc})") from None
    net, report, _ = import_graph(graph, hw_config.load(args.hw_config), args.dt, args.timesteps, x, args.reset,
                                  args.weight_bits, source=args.graph)
    check_state_range(net, net.input.encode(x), report)
    nir_io.write(net, out)
    rows = [(q.name, process_kind(layer), q.weight_exp, q.max_abs_weight, f"{q.weight_rel_error:.4f}",
             f"{q.bias_rel_error:.4f}", q.vth, f"{q.headroom_bits:.2f}") for q, layer in zip(report.layers, net.layers)]
    out_console.print(_table(f"imported {args.graph} -> {args.out} ({report.calibration_samples} calibration samples)",
                             rows, ("layer", "process", "weight_exp", "max |w|", "weight rel. error",
                                    "bias rel. error", "vth", "headroom bits")))
    return 0


class _ImportHelp(argparse.HelpFormatter):
    """Writes the tools' dt conventions (export's) into ``import --help`` only when it is shown: building the parser
    for another command, ``train`` among them, imports no stage."""

    def _get_help_string(self, action):
        help_text = super()._get_help_string(action)
        if "{dt_conventions}" not in help_text:
            return help_text
        from spikefold.export.nir_io import DT_CONVENTIONS

        return help_text.replace("{dt_conventions}", DT_CONVENTIONS)


def _add_import_command(sub) -> None:
    p = sub.add_parser("import", help="quantise a NIR graph from another tool into Loihi 2 integers (a spikefold "
                                      "NIR file that sim, deploy and validate run)", formatter_class=_ImportHelp)
    p.add_argument("graph", help="a NIR file written by snnTorch, SpikingJelly, Norse, Sinabs, Rockpool, ...")
    p.add_argument("--dt", type=float, required=True,
                   help="the tool's timestep in seconds (NIR stores none). {dt_conventions}")
    p.add_argument("--timesteps", type=int, required=True, help="timesteps per sample")
    p.add_argument("--calibration", required=True,
                   help="calibration inputs in [0, 1]: .npy (samples, features), or .npz (see --calibration-key)")
    p.add_argument("--calibration-key", default="x", help="the array's name in an .npz (default x)")
    p.add_argument("--reset", choices=("zero", "subtract"), default="zero",
                   help="NIR's reset to v_reset = 0 (default), or the subtractive reset snnTorch uses by default")
    p.add_argument("--hw-config", default="loihi2", help="shipped name or path of a YAML file")
    p.add_argument("--weight-bits", type=int, default=None, help="Lava's num_weight_bits, 1..8 (default 8)")
    p.add_argument("--out", default="loihi.nir", help="the spikefold NIR file to write (default loihi.nir)")
    _force_arg(p)
    _threads_arg(p)
    p.set_defaults(func=cmd_import)


def _load_net(path: str):
    from spikefold.export import nir_io

    return nir_io.read(path)


def _run_data(args, net):
    from spikefold.deploy import data_source

    return data_source.load(args.data, net, args.samples, args.model, root=args.data_root)


def cmd_deploy(args) -> int:
    from spikefold.deploy import lava_runner
    from spikefold.deploy.validation import DeployReport, compare
    from spikefold.export.runner import matmul_plan
    from spikefold.sim.simulator import simulate, spike_table

    if args.report:
        files.check_output_file(args.report, "--report", args.force)
    lava_runner.check_target(args.target)
    net = _load_net(args.model)
    matmul_plan(net)  # the simulator's limits (it checks Lava's spikes afterwards), before the Lava run
    data = _run_data(args, net)
    with _progress() as progress:
        task = progress.add_task(f"deploy {args.target}", total=len(data.x_int))
        result = lava_runner.run_in_chunks(net, data.x_int, args.target, args.chunk,
                                           on_chunk=lambda done: progress.update(task, completed=done))
    agreement = compare(net, simulate(net, data.x_int), result)
    accuracy = float((result.predictions == data.labels).mean()) if data.labels is not None else None
    report = DeployReport(target=args.target, data=data.source, samples=len(data.x_int), accuracy=accuracy,
                          spikes=spike_table(net, result), agreement=agreement)
    rows = [(r["layer"], r["neurons"], f"{r['spikes_per_sample']:.1f}",
             " ".join(f"{v:.1f}" for v in r["per_timestep"])) for r in report.spikes]
    title = f"{args.target} on {len(data.x_int)} samples of {data.source}"
    if accuracy is not None:
        title += f": accuracy {accuracy * 100:.2f} %"
    out_console.print(_table(title, rows, ("layer", "neurons", "spikes / sample", "per timestep (0 .. T-1)")))
    out_console.print(f"spike agreement with spikefold sim: {agreement.spikes_compared - agreement.spikes_differing:,}"
                      f" / {agreement.spikes_compared:,} equal; readout equal: {agreement.readout_equal}")
    if args.report:
        reporting.write_deploy(Path(args.report), report, reporting.run_metadata(args.argv))
    return 0


def cmd_sim(args) -> int:
    from spikefold.export import hw_config
    from spikefold.sim import energy
    from spikefold.sim.simulator import simulate

    if args.out:
        files.check_output_folder(args.out, "--out", args.force, SIM_RESULTS)
    net = _load_net(args.model)
    data = _run_data(args, net)
    result = simulate(net, data.x_int, device=args.device, batch_size=args.batch_size, threads=args.threads)
    hw = hw_config.load(args.hw_config or net.hw_config)
    estimate = energy.estimate(net, data.x_int, result, hw, hw_config.load("ann_45nm"))
    accuracy = float((result.predictions == data.labels).mean()) if data.labels is not None else None
    report = energy.SimReport(model=str(args.model), data=data.source, samples=len(data.x_int), accuracy=accuracy,
                              energy=estimate)
    rows = [(r.name, r.neurons, r.cores, f"{r.spikes:.1f}", f"{r.firing_rate:.3f}", f"{r.synaptic_ops:.0f}",
             reporting.uJ(r.energy_j)) for r in estimate.layers]
    title = f"integer sim on {len(data.x_int)} samples of {data.source}"
    if accuracy is not None:
        title += f": accuracy {accuracy * 100:.2f} %"
    out_console.print(_table(
        f"{title}; {reporting.uJ(estimate.total_j)} uJ and {reporting.us(estimate.latency_s)} us per inference on "
        f"{estimate.hw_config}", rows,
        ("layer", "neurons", "cores", "spikes", "rate", "synaptic ops", "dynamic energy (uJ)")))
    if args.energy_engine == "sanafe":
        report.sanafe = _sanafe_beside(net, data.x_int, estimate)
    if args.out:
        out = reporting.write_sim(Path(args.out), report, reporting.run_metadata(args.argv))
        out_console.print(f"report: {out} ({', '.join(reporting.SIM_FILES)})")
    return 0


def _sanafe_beside(net, x_int, report) -> dict:
    """SANA-FE's run of the same network and samples, checked spike for spike against the simulator."""
    from spikefold.export import hw_config
    from spikefold.sim import sanafe_engine
    from spikefold.sim.cores import map_onto_cores
    from spikefold.sim.simulator import simulate

    lava_timed = simulate(net, x_int, timing="lava")
    # SANA-FE runs its own Loihi architecture, so the network is mapped with its limits (loihi1_sanafe),
    # whatever --hw-config chose for spikefold's estimate.
    run = sanafe_engine.run(net, x_int, map_onto_cores(net, hw_config.load("loihi1_sanafe")), lava_timed)
    side = sanafe_engine.compare(run, lava_timed, report)
    out_console.print(f"SANA-FE ({run.release}): {reporting.uJ(run.energy_j)} uJ, {reporting.us(run.latency_s)} us per "
                      f"inference; spikefold: {reporting.uJ(report.dynamic_j)} uJ dynamic, "
                      f"{reporting.us(report.latency_s)} us; "
                      f"spikes equal: {side['spikes_equal']}")
    return side


def cmd_validate(args) -> int:
    from spikefold.deploy.layerwise import LayerwiseReport
    from spikefold.deploy.validation import Tolerances
    from spikefold.deploy.validation_run import ValidationConfig, run_validation

    # A run folder with finished chunks is kept: it is resumed (--resume) or, with --force, started over.
    files.check_output_folder(args.out, "--out", args.force or args.resume,
                                     ("report.json", "chunks/manifest.json"))
    cfg = ValidationConfig(
        model=Path(args.model), reference=Path(args.reference) if args.reference else None,
        float_model=Path(args.float_model) if args.float_model else None, data=args.data, samples=args.samples,
        data_root=args.data_root,
        target=args.target, chunk=args.chunk, out=Path(args.out), resume=args.resume, states=args.states,
        layers=args.layers, hw_config=args.hw_config,
        tolerances=Tolerances(spikes=args.spike_tolerance, logits=args.logit_tolerance,
                              agreement=args.min_agreement, float_agreement=args.min_float_agreement,
                              accuracy_drop=args.max_accuracy_drop))
    with _progress() as progress:
        tasks = []  # made on the first report, once the data is known to be good

        def on_progress(done: int, total: int, reused: int) -> None:
            text = f"validate {args.target}" + (f" (resumed {reused})" if reused else "")
            if not tasks:
                tasks.append(progress.add_task(text, total=total))
            progress.update(tasks[0], completed=done, description=text)

        try:
            report = run_validation(cfg, on_progress)
        except KeyboardInterrupt:
            console.print(f"interrupted: finished chunks are kept in {cfg.out / 'chunks'}; "
                          "rerun with --resume to continue from the last one")
            raise
    write = reporting.write_layerwise if isinstance(report, LayerwiseReport) else reporting.write_validation
    written = write(cfg.out, report, reporting.run_metadata(args.argv))
    rows = [(c.name, f"{c.measured:.6g}", f"{c.limit:.6g}", "pass" if c.passed else "FAIL") for c in report.checks]
    verdict = "PASS" if report.passed else "FAIL"
    out_console.print(_table(f"{verdict}: {args.target} running {cfg.model} vs golden references, "
                             f"{report.samples} samples of {report.data}", rows,
                             ("check", "measured", "limit", "result")))
    out_console.print(f"{verdict}: {reporting.first_divergence_sentence(report.first_divergence)}")
    out_console.print(f"report: {cfg.out} ({', '.join(written['files'])})")
    return 0 if report.passed else 1


def cmd_pipeline(args) -> int:
    from spikefold.pipeline import PipelineConfig, run_pipeline

    files.check_output_folder(args.out, "--out", args.force, PIPELINE_RESULTS)
    cfg = PipelineConfig(out=Path(args.out), dataset=args.dataset, data_root=args.data_root,
                         model=_model_config(args), train=_train_config(args), hw_config=args.hw_config,
                         target=args.target, lava_samples=args.samples, chunk=args.chunk, argv=args.argv)
    with _progress() as progress:
        summary = run_pipeline(cfg, progress)
    out_console.print(_table("spikefold pipeline", reporting.pipeline_rows(summary)))
    out_console.print(f"run folder: {cfg.out} (model.pt, model.nir, report.json, report.md, "
                      f"{', '.join(reporting.PIPELINE_PNGS)})")
    return 0 if summary.agreement.exact else 1


def cmd_convert(args) -> int:
    from spikefold.core import files
    from spikefold.export import netx_io, nir_io

    files.check_output_file(args.out, "OUT", args.force)
    suffixes = {".nir": "nir", ".onnx": "onnx", ".h5": "netx", ".hdf5": "netx", ".net": "netx"}
    to = args.to or suffixes.get(Path(args.out).suffix.lower())
    if to is None:
        raise SpikefoldError(f"cannot tell the format of {args.out} from its suffix; pass --to nir, netx or onnx")
    if args.nir_reader != "euler" and to != "nir":
        raise ConfigError(f"--nir-reader {args.nir_reader} shapes a NIR file; OUT {args.out} is {to}")
    if args.source_format == "netx":
        net = netx_io.read(args.model, args.timesteps, args.input_bits)
    else:
        net = nir_io.read(args.model)
    if to == "onnx":
        from spikefold.export import onnx_io

        path = onnx_io.write(net, args.out)
    else:
        path = netx_io.write(net, args.out) if to == "netx" else nir_io.write(net, args.out, reader=args.nir_reader)
    out_console.print(f"wrote {path} ({to}): {len(net.layers)} layers, {net.timesteps} timesteps")
    return 0


SIM_RESULTS = ("energy.json", "energy.md")
PIPELINE_RESULTS = ("model.pt", "last.pt", "model.nir", "report.json")


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="loihi2-sim", help="loihi2-sim (Lava CPU, bit-accurate) or loihi2")
    p.add_argument("--chunk", type=int, default=100, help="samples per Lava run (default 100)")


def _data_args(p: argparse.ArgumentParser, samples_default: int | None) -> None:
    p.add_argument("--data", default=None,
                   help="data set NAME[:test|train|all] or a .npz file with x (samples, features) in [0, 1], "
                        "or (samples, T, features) for a model whose input changes every timestep, and "
                        "optional labels y (default: the test split of the model's own data set)")
    p.add_argument("--samples", type=int, default=samples_default,
                   help=f"first N samples (default {samples_default or 'all'})")
    _data_root_arg(p)


def _data_root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help="local folder holding a data set that is not embedded (cifar10, cifar100, cifar10_dvs); "
                        "nothing is downloaded")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikefold", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"spikefold {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a spiking network (an MLP from flags, or any model from a recipe)")
    _model_args(p)
    p.add_argument("--recipe", default=None, help="a YAML recipe (recipes/*.yaml): data set, model and training")
    p.add_argument("--dataset", default="digits", help="digits (embedded), cifar10, cifar100, cifar10_dvs")
    _data_root_arg(p)
    p.add_argument("--out", default="runs/train", help="folder for last.pt, model.pt and probes/")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/last.pt (refused when the model or training options differ)")
    _force_arg(p)
    _threads_arg(p)
    p.add_argument("--no-probes", dest="probes", action="store_false",
                   help="skip firing-rate, gradient-window, potential and gradient probes")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="fold and quantise a checkpoint into a NIR file of Loihi 2 integers")
    p.add_argument("checkpoint", help="a checkpoint written by spikefold train (model.pt)")
    p.add_argument("--out", default="model.nir", help="the NIR file to write (default model.nir)")
    _force_arg(p)
    p.add_argument("--hw-config", default="loihi2", help="shipped name or path of a YAML file")
    p.add_argument("--dataset", default="digits", help="calibration data (its training split)")
    _data_root_arg(p)
    p.add_argument("--calibration-samples", type=int, default=None,
                   help="first N training samples used to calibrate and range-check (default all)")
    p.add_argument("--input-scale", type=_positive_scale, default=None,
                   help="x_int = round(x * scale), a finite number > 0; default 2**bits - 1")
    p.add_argument("--weight-bits", type=int, default=None,
                   help="Lava's num_weight_bits, 1..8 (default: the hw_config's, 8)")
    p.add_argument("--qat-epochs", type=int, default=0,
                   help="fine-tune the integers through the integer forward for this many epochs (default 0: off)")
    p.add_argument("--qat-lr", type=float, default=0.2, help="QAT learning rate, in integer weight units (0.2)")
    _threads_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("convert", help="convert an integer network between NIR, lava-dl netx (HDF5) and ONNX")
    p.add_argument("model", help="a NIR file written by spikefold export, or a netx file with --from netx")
    p.add_argument("out", help="the file to write; its suffix picks the format unless --to is given")
    p.add_argument("--from", dest="source_format", choices=("nir", "netx"), default="nir",
                   help="what MODEL is: nir (a spikefold export) or netx (a lava-dl netx HDF5 file)")
    p.add_argument("--to", choices=("nir", "netx", "onnx"), default=None,
                   help="nir, netx (lava-dl hdf5.Network) or onnx (default: from OUT's suffix)")
    p.add_argument("--timesteps", "-T", type=int, default=None,
                   help="timesteps per sample of a netx file (netx files do not record them)")
    p.add_argument("--input-bits", type=int, default=None,
                   help="bits of a netx network's input (hdf5.Network's input_message_bits; default 1: binary spikes)")
    p.add_argument("--nir-reader", choices=("euler", "rockpool", "snntorch"), default="euler",
                   help="which reading a NIR OUT is written for: euler (default; snnTorch, SpikingJelly, Norse, "
                        "Sinabs), rockpool (each firing layer as the CubaLIF Rockpool 3.1 reads; for Rockpool only) "
                        "or snntorch (euler, with recurrent connections as snnTorch 1.0's importer reads them; Norse "
                        "misreads that form)")
    _force_arg(p)
    p.set_defaults(func=cmd_convert)

    _add_import_command(sub)

    p = sub.add_parser("deploy", help="run a NIR file in Lava and report accuracy and spikes")
    p.add_argument("model", help="a NIR file written by spikefold export")
    _target_args(p)
    _data_args(p, samples_default=200)
    p.add_argument("--report", default=None, help="also write the results as JSON here")
    _force_arg(p)
    _threads_arg(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("validate", help="hardware-in-the-loop run: a target against the integer sim and the "
                                        "float model; exit 1 when a check fails")
    p.add_argument("model", help="the NIR file the target runs")
    p.add_argument("--reference", default=None,
                   help="golden NIR file for the integer sim (default: MODEL itself); e.g. the export a changed "
                        "model came from")
    p.add_argument("--float-model", default=None, help="checkpoint (model.pt) of the float model, a second reference")
    _target_args(p)
    _data_args(p, samples_default=None)
    p.add_argument("--out", default="runs/validate", help="report folder (default runs/validate)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished chunk")
    _force_arg(p)
    _threads_arg(p)
    p.add_argument("--states", action="store_true", help="compare every u and v integer too")
    p.add_argument("--layers", default=None,
                   help="NAME[,NAME...] or 'each': run these layers on the target one at a time, each driven by "
                        "the spikes the integer sim recorded for its sources; 'whole': the network in one run "
                        "(default: whole up to 20,000 neurons, each layer in turn above)")
    p.add_argument("--hw-config", default=None, help="for energy and latency (default: the model's)")
    p.add_argument("--spike-tolerance", type=float, default=0.0,
                   help="share of a layer's spike slots that may differ from the integer sim (default 0)")
    p.add_argument("--logit-tolerance", type=int, default=0,
                   help="largest |readout voltage difference| from the integer sim (default 0)")
    p.add_argument("--min-agreement", type=float, default=1.0,
                   help="share of samples predicted as the integer sim predicts them (default 1)")
    p.add_argument("--min-float-agreement", type=float, default=0.95,
                   help="share of samples predicted as the float model predicts them (default 0.95)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.02,
                   help="how far accuracy may fall below the float model's (default 0.02)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("sim", help="run a NIR file in the bit-exact simulator and estimate energy and latency")
    p.add_argument("model", help="a NIR file written by spikefold export")
    _data_args(p, samples_default=None)
    p.add_argument("--hw-config", default=None, help="loihi2, loihi1 or a .yaml path (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per pass (default: as many as a bounded state memory holds: sized by the widest "
                        "layer on CPU, at most 1024; by all layers on GPU)")
    _threads_arg(p)
    p.add_argument("--out", default=None, help="also write energy.json, energy.md and plots here")
    p.add_argument("--energy-engine", choices=("spikefold", "sanafe"), default="spikefold",
                   help="sanafe: also run SANA-FE (optional extra), mapped onto its own Loihi architecture "
                        "(hw_config loihi1_sanafe), and report its energy and latency beside spikefold's")
    _force_arg(p)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("pipeline", help="train, export, sim, deploy and report on the default data set")
    _model_args(p)
    p.add_argument("--dataset", default="digits", help="digits (embedded, default), cifar10 or cifar100 (MLP on "
                                                       "flattened images)")
    _data_root_arg(p)
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    _force_arg(p)
    p.add_argument("--hw-config", default="loihi2", help="loihi2 (default), loihi1 or a .yaml path")
    _target_args(p)
    p.add_argument("--samples", type=int, default=200, help="test samples run in Lava (default 200)")
    _threads_arg(p)
    p.set_defaults(func=cmd_pipeline)
    return parser


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C does, so Lava runtimes are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.epochs_given = any(a == "--epochs" or a.startswith("--epochs=") for a in argv)
    args.argv = ["spikefold", *argv]
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
    try:
        _use_threads(args)
        return args.func(args)
    except SpikefoldError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; Lava runtimes were stopped")
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
