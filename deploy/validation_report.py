"""A validation run's report: report.json (everything), report.md (what a reader needs first) and PNGs:
where target and reference differ per layer and timestep, the target's firing, energy per layer, cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spikefold.core import files
from spikefold.deploy.validation import Agreement, LayerAgreement
from spikefold.export.intnet import IntNetwork
from spikefold.sim import energy
from spikefold.sim.simulator import SimResult

PNGS = ("divergence.png", "firing.png", "energy.png", "cores.png")


def write(out: Path, net: IntNetwork, report: dict[str, Any], target: SimResult, agreement: Agreement,
          estimate: energy.EnergyReport) -> None:
    from spikefold.sim import plots

    out.mkdir(parents=True, exist_ok=True)
    divergence_per_layer_and_timestep(agreement.layers, report, out / "divergence.png")
    plots.firing_per_layer_and_timestep(net, target, out / "firing.png")
    plots.energy_per_layer(estimate, out / "energy.png")
    plots.cores_used(estimate, out / "cores.png")
    files.write_json(out / "report.json", report)
    files.write_text(out / "report.md", markdown(report))


def first_divergence_sentence(report: dict[str, Any]) -> str:
    f = report["first_divergence"]
    if f is None:
        return "target and reference agree everywhere they were compared"
    return (f"first divergence: layer '{f['layer']}', timestep {f['timestep']} ({f['what']}), sample {f['sample']}, "
            f"neuron {f['neuron']}: reference {f['reference']} vs target {f['target']}")


def markdown(report: dict[str, Any]) -> str:
    verdict = "PASS" if report["passed"] else "FAIL"
    acc = report["accuracy"]
    lines = [f"# spikefold validate: {verdict}", "",
             f"Target `{report['target']}` running `{report['model']}` against the integer sim of "
             f"`{report['reference']}`" + (f" and the float model `{report['float_model']}`"
                                           if report["float_model"] else "")
             + f", on {report['samples']} samples of `{report['data']}` (T = {report['timesteps']}), "
             f"in {report['chunks']['count']} chunks of {report['chunks']['size']}"
             + (f" ({report['chunks']['reused_samples']} samples resumed from an earlier run)"
                if report["chunks"]["reused_samples"] else "") + ".", "",
             f"**{first_divergence_sentence(report).capitalize()}.**", "",
             "| check | measured | limit | result | detail |", "| --- | --- | --- | --- | --- |"]
    for c in report["checks"]:
        lines.append(f"| {c['name']} | {c['measured']:.6g} | {c['limit']:.6g} | "
                     f"{'pass' if c['passed'] else '**FAIL**'} | {c['detail']} |")
    lines += ["", "## Accuracy", "", "| run | accuracy |", "| --- | --- |"]
    for name, value in acc.items():
        lines.append(f"| {name} | {'-' if value is None else f'{value * 100:.2f} %'} |")
    lines += ["", "## Spikes per layer and timestep (summed over samples)", "",
              "| layer | timestep | reference spikes | target spikes | slots differing |", "| --- | --- | --- | --- | --- |"]
    for row in report["agreement"]["layers"]:
        for t, (r, g, d) in enumerate(zip(row["reference_spikes"], row["target_spikes"], row["differing"])):
            lines.append(f"| {row['name']} | {t} | {r} | {g} | {d} |")
    e = report["energy"]
    lines += ["", f"## Energy and latency on {e['hw_config']} (from the target's spikes)", "",
              f"{e['total_j'] * 1e6:.3f} uJ per inference (dynamic {e['dynamic_j'] * 1e9:.1f} nJ, static "
              f"{e['static_j'] * 1e9:.1f} nJ); latency {e['latency_s'] * 1e6:.1f} us per inference; "
              f"{len(e['cores'])} cores. The same network as an ANN at 45 nm: {e['ann_45nm_j'] * 1e9:.1f} nJ.", "",
              "| layer | cores | spikes / inference | synaptic ops | energy (nJ) |", "| --- | --- | --- | --- | --- |"]
    for row in e["layers"]:
        lines.append(f"| {row['name']} | {row['cores']} | {row['spikes']:.1f} | {row['synaptic_ops']:.0f} | "
                     f"{row['energy_j'] * 1e9:.2f} |")
    lines += energy.markdown_lines(e)
    lines += [""] + [f"![{name[:-4]}]({name})" for name in PNGS] + [""]
    return "\n".join(lines)


def divergence_per_layer_and_timestep(layers: list[LayerAgreement], report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = np.array([[d / max(row.slots, 1) for d in row.differing] for row in layers])
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(layers)))
    image = ax.imshow(share, aspect="auto", cmap="Reds", vmin=0, vmax=max(float(share.max()), 1e-9))
    ax.set_yticks(range(len(layers)), [row.name for row in layers])
    ax.set_xticks(range(share.shape[1]), [str(t) for t in range(share.shape[1])])
    ax.set_xlabel("timestep")
    for (r, c), value in np.ndenumerate(share):
        ax.text(c, r, f"{layers[r].differing[c]}", ha="center", va="center", fontsize=8)
    first = report["first_divergence"]
    ax.set_title("spike slots differing, target vs reference" if first is None else
                 f"first divergence: {first['layer']}, timestep {first['timestep']} ({first['what']})", fontsize=9)
    fig.colorbar(image, ax=ax, label="share of slots")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
