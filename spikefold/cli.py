"""The ``spikefold`` command: one subcommand per stage, and ``pipeline`` for the whole chain.

Errors a user can act on print one line (no traceback) and exit with status 2; a failed check exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from spikefold.errors import SpikefoldError

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
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")


def _option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option takes key=value (e.g. reset=soft), got '{text}'")
    key, value = text.split("=", 1)
    import yaml

    return key.strip(), yaml.safe_load(value)


def _model_config(args, features: int = 64, classes: int = 10):
    from spikefold.train.models import ModelConfig
    from spikefold.train.neurons import NeuronConfig

    if args.timesteps < 1:
        raise SpikefoldError(f"--timesteps must be >= 1, got {args.timesteps}")
    if not 0 <= args.beta < 1:
        raise SpikefoldError(f"--beta must be in [0, 1), got {args.beta}")
    kind = getattr(args, "neuron", "lif")
    options = dict(getattr(args, "option", None) or [])
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


def _recipe(path: str) -> dict:
    import yaml

    from spikefold.errors import ConfigError

    try:
        recipe = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist; shipped recipes are in recipes/") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {exc}") from None
    unknown = set(recipe or {}) - {"dataset", "model", "train", "description"}
    if not isinstance(recipe, dict) or unknown or "model" not in recipe:
        raise ConfigError(f"recipe {path} needs 'dataset', 'model' and 'train' sections"
                          + (f" (unknown: {sorted(unknown)})" if unknown else ""))
    return recipe


def cmd_train(args) -> int:
    from spikefold.pipeline import load_dataset
    from spikefold.train import probes
    from spikefold.train.loop import TrainConfig, train
    from spikefold.train.models import ModelConfig

    if args.recipe:
        recipe = _recipe(args.recipe)
        split = load_dataset(recipe.get("dataset", "digits"), args.data_root)
        model_cfg = ModelConfig.from_dict(recipe["model"])
        overrides = {"device": args.device} | ({"epochs": args.epochs} if args.epochs_given else {})
        train_cfg = TrainConfig.from_dict({**recipe.get("train", {}), **overrides})
    else:
        split = load_dataset(args.dataset, args.data_root)
        model_cfg = _model_config(args, split.features, split.classes)
        train_cfg = _train_config(args)
    gradients = probes.GradientProbe() if args.probes else None
    with _progress() as progress:
        task = progress.add_task("train", total=train_cfg.epochs)
        result = train(model_cfg, train_cfg, split, out=args.out, resume=args.resume,
                       on_epoch=lambda r: progress.update(task, completed=r["epoch"],
                                                          description=f"train  acc {r['test_accuracy']:.3f}"),
                       after_backward=gradients)
    out_console.print(f"test accuracy {result.test_accuracy * 100:.2f} %; checkpoint {Path(args.out) / 'model.pt'}")
    if args.probes:
        written = probes.write(Path(args.out) / "probes", probes.observe(result.model, split.x_test),
                               gradients.summary())
        out_console.print(f"probes: {', '.join(str(p) for p in written)}")
    return 0


def cmd_export(args) -> int:
    from spikefold.pipeline import export_checkpoint

    nir_path = Path(args.out)
    net, report, float_acc = export_checkpoint(Path(args.checkpoint), nir_path, args.hw_config, args.dataset,
                                               args.calibration_samples, args.input_scale)
    rows = [(q.name, q.weight_exp, q.max_abs_weight, f"{q.weight_rel_error:.4f}", q.vth,
             f"{q.headroom_bits:.2f}") for q in report.layers]
    out_console.print(_table(f"exported {nir_path} (float test accuracy {float_acc * 100:.2f} %)", rows,
                             ("layer", "weight_exp", "max |w|", "weight rel. error", "vth", "headroom bits")))
    return 0


def _load_net(path: str):
    from spikefold.export import nir_io

    return nir_io.read(path)


def cmd_deploy(args) -> int:
    from spikefold.deploy import lava_runner
    from spikefold.deploy.validation import compare
    from spikefold.pipeline import layer_spike_table, test_inputs
    from spikefold.sim.simulator import simulate

    lava_runner.check_target(args.target)
    net = _load_net(args.model)
    x, y = test_inputs(net, args.samples)
    with _progress() as progress:
        task = progress.add_task(f"deploy {args.target}", total=len(x))
        result = lava_runner.run_in_chunks(net, x, args.target, args.chunk,
                                           on_chunk=lambda done: progress.update(task, completed=done))
    agreement = compare(net, simulate(net, x), result)
    accuracy = float((result.predictions == y).mean())
    rows = [(r["layer"], r["neurons"], f"{r['spikes_per_sample']:.1f}",
             " ".join(f"{v:.1f}" for v in r["per_timestep"])) for r in layer_spike_table(net, result)]
    out_console.print(_table(f"{args.target}: accuracy {accuracy * 100:.2f} % on {len(x)} test samples", rows,
                             ("layer", "neurons", "spikes / sample", "per timestep")))
    out_console.print(f"spike agreement with spikefold sim: {agreement.spikes_compared - agreement.spikes_differing:,}"
                      f" / {agreement.spikes_compared:,} equal; readout equal: {agreement.readout_equal}")
    if args.report:
        from spikefold.pipeline import atomic_write_text

        atomic_write_text(Path(args.report), json.dumps({
            "target": args.target, "samples": len(x), "accuracy": accuracy,
            "spikes": layer_spike_table(net, result), "agreement_exact": agreement.exact}, indent=2))
    return 0


def cmd_sim(args) -> int:
    from spikefold.export import hw_config
    from spikefold.pipeline import test_inputs
    from spikefold.sim import energy
    from spikefold.sim.simulator import simulate

    net = _load_net(args.model)
    x, y = test_inputs(net, args.samples)
    result = simulate(net, x)
    report = energy.estimate(net, x, result, hw_config.load(args.hw_config), hw_config.load("ann_45nm"))
    rows = [(r.name, r.neurons, f"{r.spikes:.1f}", f"{r.firing_rate:.3f}", f"{r.synaptic_ops:.0f}",
             f"{r.energy_j * 1e9:.2f}") for r in report.layers]
    out_console.print(_table(
        f"integer sim: accuracy {(result.predictions == y).mean() * 100:.2f} % on {len(x)} samples; "
        f"{report.total_j * 1e6:.2f} uJ and {report.latency_s * 1e3:.3f} ms per inference on {args.hw_config}",
        rows, ("layer", "neurons", "spikes", "rate", "synaptic ops", "dynamic nJ")))
    return 0


def cmd_validate(args) -> int:
    from spikefold.deploy import lava_runner
    from spikefold.deploy.validation import compare
    from spikefold.pipeline import test_inputs
    from spikefold.sim.simulator import simulate

    lava_runner.check_target(args.target)
    net = _load_net(args.model)
    x, _ = test_inputs(net, args.samples)
    with _progress() as progress:
        task = progress.add_task(f"validate {args.target}", total=len(x))
        target = lava_runner.run_in_chunks(net, x, args.target, args.chunk, record_state=args.states,
                                           on_chunk=lambda done: progress.update(task, completed=done))
    agreement = compare(net, simulate(net, x, record_state=args.states), target)
    if agreement.exact:
        out_console.print(f"PASS: {args.target} and the integer sim agree on all {agreement.spikes_compared:,} "
                          f"spike slots of {len(x)} samples and on every readout voltage")
        return 0
    f = agreement.first
    out_console.print(f"FAIL: {agreement.spikes_differing:,} spikes differ; first divergence in layer "
                      f"'{f.layer}' ({f.what}) at timestep {f.timestep}, sample {f.sample}, neuron {f.neuron}: "
                      f"sim {f.reference} vs target {f.target}")
    return 1


def cmd_pipeline(args) -> int:
    from spikefold.pipeline import PipelineConfig, run_pipeline, summary_rows

    cfg = PipelineConfig(out=Path(args.out), model=_model_config(args), train=_train_config(args),
                         hw_config=args.hw_config, target=args.target, lava_samples=args.samples,
                         chunk=args.chunk)
    with _progress() as progress:
        summary = run_pipeline(cfg, progress)
    out_console.print(_table("spikefold pipeline", summary_rows(summary)))
    out_console.print(f"run folder: {cfg.out} (model.pt, model.nir, report.json, report.md, firing.png, energy.png)")
    return 0 if summary["agreement"]["exact"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikefold", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a spiking network (an MLP from flags, or any model from a recipe)")
    _model_args(p)
    p.add_argument("--neuron", default="lif", help="lif, atgo, agl, mpinit_trsg or psg_pda (default lif)")
    p.add_argument("--option", type=_option, action="append", metavar="KEY=VALUE",
                   help="a neuron option, e.g. --option reset=soft --option surrogate=arctan (repeatable)")
    p.add_argument("--recipe", default=None, help="a YAML recipe (recipes/*.yaml): data set, model and training")
    p.add_argument("--dataset", default="digits", help="digits (embedded), cifar10, cifar100, cifar10_dvs")
    p.add_argument("--data-root", default=None, help="local folder holding a non-embedded data set")
    p.add_argument("--out", default="runs/train", help="folder for last.pt, model.pt and probes/")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-probes", dest="probes", action="store_false",
                   help="skip firing-rate, gradient-window, potential and gradient probes")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="fold and quantise a checkpoint into a NIR file of Loihi 2 integers")
    p.add_argument("checkpoint")
    p.add_argument("--out", default="model.nir")
    p.add_argument("--hw-config", default="loihi2", help="shipped name or path of a YAML file")
    p.add_argument("--dataset", default="digits", help="calibration data (its training split)")
    p.add_argument("--calibration-samples", type=int, default=None)
    p.add_argument("--input-scale", type=float, default=None, help="x_int = round(x * scale); default 2**bits - 1")
    p.set_defaults(func=cmd_export)

    for name, func, text in (("deploy", cmd_deploy, "run a NIR file in Lava and report accuracy and spikes"),
                             ("validate", cmd_validate, "compare a target against the integer sim, exactly")):
        p = sub.add_parser(name, help=text)
        p.add_argument("model", help="a NIR file written by spikefold export")
        p.add_argument("--target", default="loihi2-sim", help="loihi2-sim (Lava CPU, bit-accurate) or loihi2")
        p.add_argument("--samples", type=int, default=200, help="test samples to run (default 200)")
        p.add_argument("--chunk", type=int, default=100, help="samples per Lava run (default 100)")
        p.set_defaults(func=func)
        if name == "deploy":
            p.add_argument("--report", default=None, help="also write the results as JSON here")
        else:
            p.add_argument("--states", action="store_true", help="compare every u and v integer too")

    p = sub.add_parser("sim", help="run a NIR file in the bit-exact simulator and estimate energy")
    p.add_argument("model")
    p.add_argument("--samples", type=int, default=None, help="test samples (default: all)")
    p.add_argument("--hw-config", default="loihi2")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("pipeline", help="train, export, sim, deploy and report on the default data set")
    _model_args(p)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--hw-config", default="loihi2")
    p.add_argument("--target", default="loihi2-sim")
    p.add_argument("--samples", type=int, default=200, help="test samples run in Lava (default 200)")
    p.add_argument("--chunk", type=int, default=100)
    p.set_defaults(func=cmd_pipeline)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.epochs_given = any(a == "--epochs" or a.startswith("--epochs=") for a in argv)
    try:
        return args.func(args)
    except SpikefoldError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; Lava runtimes were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
