"""Every report spikefold writes, in one place: the stages return typed reports (export's ``QuantReport``,
sim's ``SimReport`` and ``EnergyReport``, deploy's ``DeployReport``, validate's ``ValidationReport`` and
``LayerwiseReport``, the pipeline's ``PipelineReport``) and this module, in the roof, turns them into JSON,
Markdown and plots, adding the run's metadata (command line, seed, versions, machine).

One convention for every report:

- units: JSON keeps SI units named in the key (``_j`` joules, ``_s`` seconds); Markdown, terminal tables and
  plots show every energy in uJ and every time in us, the unit in each column header and axis label;
- timesteps are numbered 0 .. T-1 (as the arrays, Lava's schedule and the first divergence number them), in
  JSON, Markdown and plot axes alike; epochs are numbered from 1;
- layers carry export's names (``hidden0``, ``conv3``, ``block2_conv1``, ``readout``), the training probes
  included (``SpikingModel.layer_of``).

Plots are built by functions that return the matplotlib Figure (so tests can read its labels and bars) and are
written with constrained layout, so titles, labels and colour bars never overlap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from spikefold.core import files

PNG_DPI = 120


# ---------------------------------------------------------------------------------------------- run metadata


def run_metadata(command: list[str] | None = None, seed: int | None = None) -> dict[str, Any]:
    """What a reader of a report needs to rerun it: the command line, the seed, the versions and the machine."""
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {
        "command": " ".join(command if command is not None else ["spikefold", *sys.argv[1:]]),
        "seed": seed,
        "versions": {"python": platform.python_version()}
        | {name: version(name) for name in ("spikefold", "torch", "numpy", "nir", "lava-nc")},
        "machine": {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
    }


def _run_lines(run: dict[str, Any]) -> list[str]:
    return ["", "## Run", "", f"- command: `{run['command']}`", f"- seed: {run['seed']}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()),
            "- machine: " + ", ".join(f"{k} {v}" for k, v in run["machine"].items()), ""]


# ---------------------------------------------------------------------------------------------- units


def _significant(value: float, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits in fixed notation (thousands separated, no exponent)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def uJ(joules: float) -> str:
    """An energy in joules, shown in microjoules (the unit of every energy a report shows)."""
    return _significant(joules * 1e6)


def us(seconds: float) -> str:
    """A time in seconds, shown in microseconds (the unit of every time a report shows)."""
    return _significant(seconds * 1e6)


# ---------------------------------------------------------------------------------------------- JSON forms


def _plain(report) -> dict[str, Any]:
    """A report dataclass as JSON; a part with its own ``to_dict`` (the energy report, an agreement) gives its
    derived totals too."""
    out = {}
    for field in dataclasses.fields(report):
        value = getattr(report, field.name)
        if hasattr(value, "to_dict"):
            out[field.name] = value.to_dict()
        elif dataclasses.is_dataclass(value):
            out[field.name] = dataclasses.asdict(value)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            out[field.name] = [dataclasses.asdict(v) for v in value]
        else:
            out[field.name] = value
    return out


# ---------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(**kwargs):
    """A figure with constrained layout: titles, labels and colour bars are placed so none overlaps another."""
    return _pyplot().figure(layout="constrained", **kwargs)


def save_figure(fig, path: Path, dpi: int = PNG_DPI) -> Path:
    """Write ``fig`` as a PNG atomically, and free it."""
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    _pyplot().close(fig)
    return Path(path)


def _timestep_axis(ax, steps: int, label: str = "timestep (0 .. T-1)") -> None:
    ax.set_xticks(range(steps), [str(t) for t in range(steps)])
    ax.set_xlabel(label)


def _layer_labels(ax, names: list[str]) -> None:
    """Layer names under bars: turned upright when there are too many to sit side by side."""
    if len(names) > 5:
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)


def _heatmap(ax, fig, grid: np.ndarray, rows: list[str], colour_label: str, cmap: str = "viridis",
             annotate: np.ndarray | None = None, vmax: float | None = None) -> None:
    """Layers (rows) by timesteps (columns), each cell annotated with its value."""
    image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, vmax=vmax)
    ax.set_yticks(range(len(rows)), rows, fontsize=7 if len(rows) > 8 else None)
    ax.set_ylabel("layer (export name)")
    _timestep_axis(ax, grid.shape[1])
    texts = grid if annotate is None else annotate
    if grid.size <= 400:
        top = float(grid.max()) if grid.size else 0.0
        for (r, c), value in np.ndenumerate(texts):
            ax.text(c, r, f"{value:.3f}" if annotate is None else f"{value}", ha="center", va="center", fontsize=7,
                    color="w" if cmap == "viridis" and grid[r, c] < top / 2 else "k")
    fig.colorbar(image, ax=ax, label=colour_label)


def firing_figure(energy):
    """Firing rate of each spiking layer at each timestep, from an ``EnergyReport`` (means over samples)."""
    hidden = [row for row in energy.layers if not row.readout]
    rates = np.array([[s / row.neurons for s in row.spikes_per_timestep] for row in hidden])
    fig = _figure(figsize=(6.4, max(3.0, 1.6 + 0.3 * len(hidden))))
    ax = fig.add_subplot()
    _heatmap(ax, fig, rates, [row.name for row in hidden], "firing rate (spikes / neuron / timestep)")
    ax.set_title("firing rate per layer and timestep")
    return fig


def energy_figure(energy):
    """Dynamic energy per layer, in uJ per inference."""
    names = [row.name for row in energy.layers]
    fig = _figure(figsize=(max(6.0, 0.35 * len(names)), 3.8))
    ax = fig.add_subplot()
    ax.bar(names, [row.energy_j * 1e6 for row in energy.layers], color="tab:blue")
    _layer_labels(ax, names)
    ax.set_xlabel("layer (export name)")
    ax.set_ylabel("dynamic energy (uJ per inference)")
    ax.set_title(f"dynamic energy per layer on {energy.hw_config} (static {uJ(energy.static_j)} uJ not shown)",
                 fontsize=9)
    return fig


def cores_figure(energy):
    """Cores per layer (left), and each core's work at each step of Lava's schedule against the barrier that
    ends the step (right: cores in rows, grouped and labelled by layer; colour: work as a multiple of the
    barrier time), with the step times below it."""
    names = [row.name for row in energy.layers]
    barrier_s = energy.figures["timing.barrier_sync"].value
    busy = np.array([core.busy_s for core in energy.cores])  # (cores, T + D steps), seconds
    fig = _figure(figsize=(max(10.0, 0.5 * len(names)), 3.2 + 0.12 * min(len(energy.cores), 40)))
    grid = fig.add_gridspec(2, 2, width_ratios=[1, 2.4], height_ratios=[3, 1])
    left = fig.add_subplot(grid[:, 0])
    left.bar(names, [row.cores for row in energy.layers], color=[f"C{i % 10}" for i in range(len(names))])
    _layer_labels(left, names)
    left.set_xlabel("layer (export name)")
    left.set_ylabel("cores (count)")
    left.yaxis.get_major_locator().set_params(integer=True)
    left.set_title(f"{len(energy.cores)} cores on {energy.hw_config}", fontsize=9)

    work = fig.add_subplot(grid[0, 1])
    image = work.imshow(busy / barrier_s, aspect="auto", cmap="magma", vmin=0, interpolation="nearest")
    # One tick per layer, at the middle of its block of cores: the rows carry layer names, not core numbers.
    starts = {}
    for k, core in enumerate(energy.cores):
        starts.setdefault(core.layer, []).append(k)
    work.set_yticks([(rows[0] + rows[-1]) / 2 for rows in starts.values()],
                    [f"{name} ({len(rows)} core{'s' if len(rows) > 1 else ''})" for name, rows in starts.items()],
                    fontsize=7 if len(starts) > 8 else None)
    for rows in list(starts.values())[1:]:
        work.axhline(rows[0] - 0.5, color="w", lw=0.6)
    work.set_ylabel("core (by layer)")
    work.tick_params(labelbottom=False)  # the steps share the panel below's axis and numbers
    work.set_title(f"each core's work per step vs the barrier ({barrier_s * 1e6:g} us)", fontsize=9)
    fig.colorbar(image, ax=work, label="work / barrier time (ratio)")

    steps = fig.add_subplot(grid[1, 1], sharex=work)
    k = np.arange(busy.shape[1])
    steps.bar(k, busy.max(axis=0) * 1e6, color="tab:orange", label="busiest core")
    steps.bar(k, barrier_s * 1e6, bottom=busy.max(axis=0) * 1e6, color="0.6", label="barrier")
    steps.set_xticks(k, [str(s) for s in k])
    steps.set_xlabel(f"step of Lava's schedule (0 .. T+D-1; latency {us(energy.latency_s)} us)")
    steps.set_ylabel("step time (us)")
    steps.legend(loc="upper right", fontsize=7)
    return fig


def cores_per_layer_figure(summary: dict):
    """A core mapping's cores per layer (``CoreMap.summary``), with the chips and boards it needs in the title."""
    names = [row["layer"] for row in summary["layers"]]
    fig = _figure(figsize=(max(6.0, 0.35 * len(names)), 3.8))
    ax = fig.add_subplot()
    ax.bar(names, [row["cores"] for row in summary["layers"]],
           color=["tab:orange" if row["input_groups"] > 1 else "tab:blue" for row in summary["layers"]])
    _layer_labels(ax, names)
    ax.set_yscale("log")
    ax.set_xlabel("layer (export name)")
    ax.set_ylabel("cores (count; orange: fan-in split)")
    boards = ", ".join(f"{n} {name}" for name, n in summary["boards"].items())
    ax.set_title(f"{summary['cores']:,} cores, {summary['chips']:,} chips on {summary['hw_config']} ({boards})",
                 fontsize=9)
    return fig


def divergence_figure(layers, first) -> Any:
    """Spike slots differing per layer and timestep (``LayerAgreement`` rows), the first divergence named."""
    share = np.array([[d / max(row.slots, 1) for d in row.differing] for row in layers])
    fig = _figure(figsize=(6.4, max(3.0, 1.2 + 0.5 * len(layers))))
    ax = fig.add_subplot()
    _heatmap(ax, fig, share, [row.name for row in layers], "share of spike slots differing (ratio)", cmap="Reds",
             annotate=np.array([row.differing for row in layers]), vmax=max(float(share.max(initial=0)), 1e-9))
    ax.set_title("spike slots differing, target vs reference" if first is None else
                 f"first divergence: {first.layer}, timestep {first.timestep} ({first.what})", fontsize=9)
    return fig


def training_figure(history: list[dict]):
    """Loss and test accuracy per epoch, one panel each."""
    epochs = [r["epoch"] for r in history]
    fig = _figure(figsize=(9, 3.4))
    loss, acc = fig.subplots(1, 2)
    loss.plot(epochs, [r["loss"] for r in history], marker=".")
    loss.set(xlabel="epoch (1 .. E)", ylabel="training loss (cross-entropy, nats)", title="loss")
    acc.plot(epochs, [100 * r["test_accuracy"] for r in history], marker=".", color="tab:green")
    acc.set(xlabel="epoch (1 .. E)", ylabel="test accuracy (%)", title="accuracy")
    for ax in (loss, acc):
        ax.xaxis.get_major_locator().set_params(integer=True)  # no epoch 1.5
    return fig


def probe_grid_figure(activity: dict, key: str, title: str, colour_label: str):
    """A probe's per-layer, per-timestep value (``firing_rate`` or ``window_share``) as a heatmap."""
    names = list(activity)
    grid = np.array([activity[n][key] for n in names])
    fig = _figure(figsize=(max(5.0, 1.8 + 0.9 * grid.shape[1]), max(3.0, 1.4 + 0.35 * len(names))))
    ax = fig.add_subplot()
    _heatmap(ax, fig, grid, names, colour_label)
    ax.set_title(f"{title} per layer and timestep", fontsize=9)
    return fig


def potentials_figure(activity: dict):
    """Membrane potential / threshold histograms, one row per layer and one column per timestep."""
    names = list(activity)
    steps = len(activity[names[0]]["histogram"]["counts"])
    fig = _figure(figsize=(2.0 * steps + 0.8, 1.1 * len(names) + 1.0))
    axes = fig.subplots(len(names), steps, squeeze=False, sharex=True)
    for r, name in enumerate(names):
        hist = activity[name]["histogram"]
        edges = np.asarray(hist["edges"])
        for c, counts in enumerate(hist["counts"]):
            ax = axes[r][c]
            total = max(float(np.sum(counts)), 1.0)
            ax.stairs(np.asarray(counts) / total, edges, fill=True, color="tab:blue")
            ax.axvline(1.0, color="tab:red", lw=0.8)
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=6, rotation=0, ha="right")
            if r == 0:
                ax.set_title(f"timestep {c}", fontsize=8)
            if r == len(names) - 1:
                ax.set_xlabel("v / threshold (ratio)", fontsize=7)
    fig.suptitle("membrane potential / threshold, share of neurons per bin (red: threshold); rows: layers",
                 fontsize=9)
    return fig


def gradients_figure(gradients: dict):
    """Each weight layer's gradient norm over the training steps: the median, a bar from the 10th to the 90th
    percentile (never below zero, as a norm is not) and the mean."""
    names = list(gradients)
    median = np.array([gradients[n]["median"] for n in names])
    low = np.array([gradients[n]["p10"] for n in names])
    high = np.array([gradients[n]["p90"] for n in names])
    fig = _figure(figsize=(6.4, max(3.0, 1.4 + 0.3 * len(names))))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.errorbar(median, y, xerr=[median - low, high - median], fmt="o", color="tab:orange", capsize=3,
                label="median, bar: 10th to 90th percentile")
    ax.plot([gradients[n]["mean"] for n in names], y, "k|", markersize=10, label="mean")
    ax.set_yticks(y, names, fontsize=7 if len(names) > 8 else None)
    ax.set_ylabel("layer (export name)")
    ax.set_xlabel("weight-gradient L2 norm per training step (loss / weight unit)")
    ax.set_xlim(left=0)
    ax.invert_yaxis()
    fig.legend(loc="outside upper center", ncols=2, fontsize=7)
    return fig


# ---------------------------------------------------------------------------------------------- Markdown


def energy_lines(e: dict, accuracy: float | None = None) -> list[str]:
    """An energy report (its JSON form) as Markdown: the totals, NeuroBench's metrics, the per-core table, the
    steps, the figures with their sources, and the notes."""
    by_op = e["energy_by_operation_j"]
    nb = e["neurobench"]
    lines = ["", f"## Totals ({e['hw_config']}, per inference, mean of {e['samples']} samples)", "",
             "| quantity | value |", "| --- | --- |",
             f"| energy per inference | {uJ(e['total_j'])} uJ (dynamic {uJ(e['dynamic_j'])} uJ, "
             f"static {uJ(e['static_j'])} uJ) |",
             "| dynamic by operation | " + ", ".join(f"{k} {uJ(v)} uJ" for k, v in by_op.items()) + " |",
             f"| latency (T + D = {len(e['step_s'])} steps) | {us(e['latency_s'])} us |",
             f"| period (samples back to back) | {us(e['period_s'])} us |",
             f"| cores / chips | {len(e['cores'])} / {e['chips']} |"]
    if accuracy is not None:
        lines.append(f"| accuracy | {accuracy * 100:.2f} % |")
    lines += ["", "## NeuroBench metrics (per inference)", "",
              f"ActivationSparsity {nb['ActivationSparsity']:.4f}; Effective_MACs {nb['Effective_MACs']:.1f}; "
              f"Effective_ACs {nb['Effective_ACs']:.1f}.", "",
              "| layer | Effective_MACs | Effective_ACs | synaptic operations |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['layer']} | {r['Effective_MACs']:.1f} | {r['Effective_ACs']:.1f} | {r['synaptic_operations']:.1f} |"
              for r in nb["layers"]]
    lines += ["", f"## Cores ({e['hw_config']}, per inference)", "",
              "| core | layer | neurons | synapses | synaptic ops | spikes | messages out | busiest step (us) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in e["cores"]:
        lines.append(f"| {c['core']} | {c['layer']} | {c['neurons']} | {c['synapses']} | {c['synaptic_ops']:.0f} | "
                     f"{c['spikes']:.1f} | {c['messages_out']:.1f} | {us(max(c['busy_s']))} |")
    lines += ["", "## Steps (Lava's schedule, 0 .. T+D-1: busiest core + barrier, dynamic energy)", "",
              "| step | time (us) | energy (uJ) |", "| --- | --- | --- |"]
    lines += [f"| {k} | {us(s)} | {uJ(j)} |" for k, (s, j) in enumerate(zip(e["step_s"], e["step_energy_j"]))]
    lines += ["", "## Figures used", "", "| figure | value | source | proxy |", "| --- | --- | --- | --- |"]
    for name, f in e["figures"].items():
        lines.append(f"| {name} | {f['value']:g} {f['unit']} | {f['source']} | {'yes' if f['proxy'] else 'no'} |")
    lines += [""] + [f"- {note}" for note in e["notes"]]
    return lines


def sanafe_lines(side: dict) -> list[str]:
    """SANA-FE's run beside spikefold's (``sanafe_engine.compare``) as Markdown."""
    a, b = side["sanafe"], side["spikefold"]
    return ["", f"## SANA-FE ({side['release']}) beside spikefold ({b['hw_config']}), per inference", "",
            f"Spikes equal: {side['spikes_equal']}; readout voltages equal: {side['readout_equal']}.", "",
            "| engine | dynamic energy (uJ) | latency (us) | synaptic ops | messages | breakdown (uJ) |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| SANA-FE | {uJ(a['energy_j'])} | {us(a['latency_s'])} | {a['synaptic_ops']:.1f} | "
            f"{a['messages']:.1f} | " + ", ".join(f"{k} {uJ(v)}" for k, v in a["by_unit_j"].items()) + " |",
            f"| spikefold | {uJ(b['energy_j'])} | {us(b['latency_s'])} | {b['synaptic_ops']:.1f} | "
            f"{b['messages']:.1f} | " + ", ".join(f"{k} {uJ(v)}" for k, v in b["by_operation_j"].items()) + " |",
            "", "Step times (us), SANA-FE: " + ", ".join(us(s) for s in a["step_s"])
            + "; spikefold: " + ", ".join(us(s) for s in b["step_s"]) + "."]


def _layer_energy_rows(e: dict) -> list[str]:
    lines = ["| layer | cores | spikes / inference | synaptic ops | energy (uJ) |", "| --- | --- | --- | --- | --- |"]
    return lines + [f"| {row['name']} | {row['cores']} | {row['spikes']:.1f} | {row['synaptic_ops']:.0f} | "
                    f"{uJ(row['energy_j'])} |" for row in e["layers"]]


def first_divergence_sentence(first) -> str:
    """Where target and reference first part (a ``Divergence``, or its JSON form), in words."""
    if first is None:
        return "target and reference agree everywhere they were compared"
    f = first if isinstance(first, dict) else dataclasses.asdict(first)
    return (f"first divergence: layer '{f['layer']}', timestep {f['timestep']} ({f['what']}), sample {f['sample']}, "
            f"neuron {f['neuron']}: reference {f['reference']} vs target {f['target']}")


def _checks_lines(checks: list[dict]) -> list[str]:
    lines = ["| check | measured | limit | result | detail |", "| --- | --- | --- | --- | --- |"]
    return lines + [f"| {c['name']} | {c['measured']:.6g} | {c['limit']:.6g} | "
                    f"{'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |" for c in checks]


ENERGY_PNGS = ("firing.png", "energy.png", "cores.png")  # what every report with an energy report plots


def write_energy_plots(out: Path, energy) -> None:
    """The :data:`ENERGY_PNGS` of an energy report, in the folder ``out``."""
    for name, figure in zip(ENERGY_PNGS, (firing_figure, energy_figure, cores_figure)):
        save_figure(figure(energy), out / name)


# ---------------------------------------------------------------------------------------------- validate

VALIDATION_PNGS = ("divergence.png", *ENERGY_PNGS)


def _validation_opening(title: str, report: dict[str, Any], what_ran: str, resumed: str) -> list[str]:
    """The heading with the verdict, what ran on which samples in how many chunks, and the first divergence:
    how both validation reports open."""
    chunks = report["chunks"]
    return [f"# {title}: {'PASS' if report['passed'] else 'FAIL'}", "",
            f"{what_ran}, on {report['samples']} samples of `{report['data']}` (T = {report['timesteps']}, timesteps "
            f"0 .. {report['timesteps'] - 1}), in {chunks['count']} chunks of {chunks['size']}"
            + (f" ({chunks['reused_samples']} {resumed} resumed from an earlier run)" if chunks["reused_samples"]
               else "") + ".", "",
            f"**{first_divergence_sentence(report['first_divergence']).capitalize()}.**", ""]


def validation_markdown(report: dict[str, Any]) -> str:
    float_model = f" and the float model `{report['float_model']}`" if report["float_model"] else ""
    lines = _validation_opening("spikefold validate", report, f"Target `{report['target']}` running "
                                f"`{report['model']}` against the integer sim of `{report['reference']}`{float_model}",
                                "samples")
    lines += _checks_lines(report["checks"])
    lines += ["", "## Accuracy", "", "| run | accuracy (%) |", "| --- | --- |"]
    for name, value in report["accuracy"].items():
        lines.append(f"| {name} | {'-' if value is None else f'{value * 100:.2f}'} |")
    lines += ["", "## Spikes per layer and timestep (summed over samples)", "",
              "| layer | timestep | reference spikes | target spikes | slots differing |", "| --- | --- | --- | --- | --- |"]
    for row in report["agreement"]["layers"]:
        for t, (r, g, d) in enumerate(zip(row["reference_spikes"], row["target_spikes"], row["differing"])):
            lines.append(f"| {row['name']} | {t} | {r} | {g} | {d} |")
    e = report["energy"]
    lines += ["", f"## Energy and latency on {e['hw_config']} (from the target's spikes)", "",
              f"{uJ(e['total_j'])} uJ per inference (dynamic {uJ(e['dynamic_j'])} uJ, static {uJ(e['static_j'])} uJ); "
              f"latency {us(e['latency_s'])} us per inference; {len(e['cores'])} cores. The same network as an ANN "
              f"at 45 nm: {uJ(e['ann_45nm_j'])} uJ.", ""]
    lines += _layer_energy_rows(e)
    lines += energy_lines(e)
    lines += [""] + [f"![{name[:-4]}]({name})" for name in VALIDATION_PNGS]
    return "\n".join(lines + _run_lines(report["run"]))


def write_validation(out: Path, report, run: dict[str, Any]) -> dict[str, Any]:
    """A whole-network validation (``ValidationReport``): report.json, report.md and its PNGs in ``out``.
    Returns the JSON form."""
    out.mkdir(parents=True, exist_ok=True)
    data = _plain(report) | {"files": ["report.json", "report.md", *VALIDATION_PNGS], "run": run}
    save_figure(divergence_figure(report.agreement.layers, report.agreement.first), out / "divergence.png")
    write_energy_plots(out, report.energy)
    files.write_json(out / "report.json", data)
    files.write_text(out / "report.md", validation_markdown(data))
    return data


def layerwise_markdown(report: dict[str, Any]) -> str:
    lines = _validation_opening(
        "spikefold validate, layer by layer", report,
        f"Target `{report['target']}` running each of {len(report['layers'])} layers of `{report['model']}` on its "
        f"own, driven by the spikes the integer sim of `{report['reference']}` recorded for its sources",
        "layer-samples")
    lines += ["| layer | sources | neurons | samples | spikes compared | differing | u, v differing | first divergence "
              "| target time (s) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["layers"]:
        f = row["first_divergence"]
        where = "-" if f is None else f"timestep {f['timestep']} ({f['what']}), sample {f['sample']}, neuron {f['neuron']}"
        states = "-" if row["states_differing"] is None else f"{row['states_differing']:,} of {row['states_compared']:,}"
        lines.append(f"| {row['name']} | {', '.join(row['sources'])} | {row['neurons']:,} | {row['samples']} | "
                     f"{row['spikes_compared']:,} | {row['spikes_differing']:,} | {states} | {where} | "
                     f"{row['target_s']:.1f} |")
    lines += [""] + _checks_lines(report["checks"]) + ["", "![divergence](divergence.png)"]
    return "\n".join(lines + _run_lines(report["run"]))


def write_layerwise(out: Path, report, run: dict[str, Any]) -> dict[str, Any]:
    """A layer-wise validation (``LayerwiseReport``): report.json, report.md and divergence.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = _plain(report) | {"files": ["report.json", "report.md", "divergence.png"], "run": run}
    save_figure(divergence_figure([row.spikes for row in report.layers], report.first_divergence), out / "divergence.png")
    files.write_json(out / "report.json", data)
    files.write_text(out / "report.md", layerwise_markdown(data))
    return data


# ---------------------------------------------------------------------------------------------- sim, deploy, export

SIM_FILES = ("energy.json", "energy.md", *ENERGY_PNGS)


def write_sim(out: Path, report, run: dict[str, Any]) -> Path:
    """``spikefold sim --out``'s files from a ``SimReport``: energy.json (the energy report, the accuracy, SANA-FE's
    run beside it, the run metadata), energy.md and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    data = report.energy.to_dict() | {"accuracy": report.accuracy}
    if report.sanafe is not None:
        data["sanafe"] = report.sanafe
    data["run"] = run
    write_energy_plots(out, report.energy)
    files.write_json(out / "energy.json", data)
    lines = [f"# Energy and latency of {report.model} on {report.energy.hw_config}", ""]
    lines += energy_lines(data, report.accuracy)
    if report.sanafe is not None:
        lines += sanafe_lines(report.sanafe)
    lines += [""] + [f"![{name[:-4]}]({name})" for name in ENERGY_PNGS]
    files.write_text(out / "energy.md", "\n".join(lines + _run_lines(run)))
    return out


def write_deploy(path: Path, report, run: dict[str, Any]) -> Path:
    """``spikefold deploy --report``'s JSON from a ``DeployReport``."""
    data = _plain(report)
    data["agreement_exact"] = report.agreement.exact
    del data["agreement"]
    return files.write_json(path, data | {"run": run})


def write_export(path: Path, report, run: dict[str, Any]) -> Path:
    """``spikefold export``'s MODEL.report.json from an ``ExportReport``."""
    return files.write_json(path, _plain(report) | {"run": run})


# ---------------------------------------------------------------------------------------------- train


def write_training_curve(history: list[dict], path: Path) -> Path:
    return save_figure(training_figure(history), path, dpi=110)


def write_probes(out: Path, activity: dict, gradients: dict | None = None) -> list[Path]:
    """probes.json and the plots (firing_rate.png, window_share.png, potentials.png, gradients.png) in ``out``."""
    out = Path(out)
    paths = [files.write_json(out / "probes.json", {"activity": activity, "gradients": gradients or {}})]
    if not activity:
        return paths
    paths.append(save_figure(probe_grid_figure(activity, "firing_rate", "firing rate",
                                         "firing rate (spikes / neuron / timestep)"), out / "firing_rate.png", 110))
    paths.append(save_figure(probe_grid_figure(activity, "window_share", "share inside the gradient window",
                                         "share of neurons in the window (ratio)"), out / "window_share.png", 110))
    paths.append(save_figure(potentials_figure(activity), out / "potentials.png", 100))
    if gradients:
        paths.append(save_figure(gradients_figure(gradients), out / "gradients.png", 110))
    return paths


# ---------------------------------------------------------------------------------------------- pipeline

PIPELINE_PNGS = ("training.png", *ENERGY_PNGS)


def pipeline_rows(report) -> list[tuple[str, str]]:
    """A ``PipelineReport``'s headline figures, as (what, value) rows, for the terminal table and report.md."""
    acc, agree, e = report.accuracy, report.agreement, report.energy
    spikes = f"{agree.spikes_compared - agree.spikes_differing:,} / {agree.spikes_compared:,}"
    per_layer_cores = ", ".join(f"{row.name} {row.cores}" for row in e.layers)
    return [
        ("float model accuracy (test)", f"{acc.float * 100:.2f} % ({acc.test_samples} samples)"),
        ("integer sim accuracy (test)", f"{acc.int_sim * 100:.2f} % ({acc.test_samples} samples)"),
        (f"Lava {report.target} accuracy", f"{acc.lava * 100:.2f} % ({acc.lava_samples} samples)"),
        ("integer sim accuracy, Lava's samples", f"{acc.int_sim_on_lava_samples * 100:.2f} % (the same "
                                                 f"{acc.lava_samples} samples)"),
        ("spikes equal, sim vs Lava", f"{spikes} ({'every spike' if agree.exact else 'MISMATCH'})"),
        ("readout voltages equal", "yes" if agree.readout_equal else "no"),
        (f"{e.hw_config} cores", f"{len(e.cores)} ({per_layer_cores})"),
        (f"{e.hw_config} energy / inference", f"{uJ(e.total_j)} uJ (dynamic {uJ(e.dynamic_j)} uJ, "
                                              f"static {uJ(e.static_j)} uJ)"),
        (f"{e.hw_config} latency / inference", f"{us(e.latency_s)} us ({e.timesteps} steps + "
                                               f"{len(e.step_s) - e.timesteps} of Dense delay, each step its own "
                                               "busiest core + barrier)"),
        ("same net as ANN, 45 nm", f"{uJ(e.ann_45nm_j)} uJ (SNN at 45 nm: {uJ(e.snn_45nm_j)} uJ)"),
    ]


def pipeline_markdown(report, data: dict[str, Any]) -> str:
    model = report.model
    lines = ["# spikefold run", "", f"Data set `{report.dataset}`, {model['arch']} {model['hidden']} with "
             f"'{model['neuron']['kind']}' neurons, T = {model['timesteps']} (timesteps 0 .. {model['timesteps'] - 1}), "
             f"target `{report.target}`, hw_config `{report.hw_config}`.", "", "| what | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in pipeline_rows(report)]
    lines += ["", "## Per layer (Lava run, per inference)", "",
              "| layer | neurons | cores | weight exp | vth | headroom (bits) | spikes | synaptic ops | energy (uJ) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for q, e in zip(report.quantisation.layers, report.energy.layers):
        lines.append(f"| {q.name} | {e.neurons} | {e.cores} | {q.weight_exp} | {q.vth} | {q.headroom_bits:.2f} | "
                     f"{e.spikes:.1f} | {e.synaptic_ops:.0f} | {uJ(e.energy_j)} |")
    lines += energy_lines(data["energy"])
    lines += ["", "![training curve](training.png)", "", "![firing rate per layer and timestep](firing.png)", "",
              "![energy per layer](energy.png)", "", "![cores used](cores.png)"]
    return "\n".join(lines + _run_lines(report.run))


def write_pipeline(out: Path, report) -> dict[str, Any]:
    """A ``PipelineReport``'s report.json, report.md and plots in the run folder ``out``."""
    data = _plain(report)
    write_training_curve(report.history, out / "training.png")
    write_energy_plots(out, report.energy)
    files.write_json(out / "report.json", data)
    files.write_text(out / "report.md", pipeline_markdown(report, data))
    return data
