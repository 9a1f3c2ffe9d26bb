"""The reports' plots, read back from the matplotlib Figures that spikefold.reporting builds from real runs: every
axis that shows numbers is labelled with its unit, no text overlaps another or leaves the figure, gradient norms'
bars never reach below zero, timesteps are numbered 0 .. T-1 and the core plot names layers."""

from __future__ import annotations

import copy
import itertools
import re

import numpy as np
import pytest
import torch
from matplotlib.colorbar import Colorbar
from matplotlib.layout_engine import ConstrainedLayoutEngine

from spikefold import reporting
from spikefold.deploy.validation import compare
from spikefold.export import hw_config
from spikefold.sim import energy
from spikefold.sim.simulator import simulate
from spikefold.train import probes

UNIT = re.compile(r"\S.*\(.+\)")  # "quantity (unit)"


@pytest.fixture(scope="module")
def run(exported, split, loihi2):
    """The trained digits MLP's integer network on 40 test samples, and the energy report from its spikes."""
    net = exported[1]
    x = net.input.encode(split.x_test[:40])
    result = simulate(net, x)
    return net, x, result, energy.estimate(net, x, result, loihi2, hw_config.load("ann_45nm"))


@pytest.fixture(scope="module")
def probed(trained, split):
    """Probes of the trained model: activity on test samples, gradient norms over five real training steps."""
    model = copy.deepcopy(trained[0].model)  # training steps move BatchNorm's statistics: not the shared model's
    activity = probes.observe(model, split.x_test[:64])
    gradients = probes.GradientProbe()
    model.train()
    for k in range(5):
        model.zero_grad()
        x = torch.as_tensor(split.x_train[32 * k: 32 * (k + 1)])
        torch.nn.functional.cross_entropy(model(x), torch.as_tensor(split.y_train[32 * k: 32 * (k + 1)])).backward()
        gradients(model)
    model.zero_grad()
    model.eval()
    return activity, gradients


def _labelled_axes_problems(fig) -> list[str]:
    """Axes showing tick labels without a 'quantity (unit)' label on that axis; colour bars without one."""
    problems = []
    colorbar_axes = {id(a) for a in fig.axes if isinstance(getattr(a, "_colorbar", None), Colorbar)}
    for ax in fig.axes:
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            shown = [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            if id(ax) in colorbar_axes and axis is ax.xaxis:
                continue
            if shown and not UNIT.fullmatch(label.replace("\n", " ")):
                problems.append(f"{ax.get_title() or 'axes'}: {axis.axis_name} label {label!r} for ticks {shown[:3]}")
    return problems


def _text_problems(fig) -> list[str]:
    """Axes whose drawn parts (tick labels, labels, title) leave the figure, and titles or axis labels that
    overlap one another."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    problems = []
    for ax in fig.axes:
        e = ax.get_tightbbox(renderer)
        if e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1:
            problems.append(f"axes {ax.get_title() or ax.get_ylabel()!r} leaves the figure")
    headings = [ax.title for ax in fig.axes] + [ax.xaxis.label for ax in fig.axes] + [ax.yaxis.label for ax in fig.axes]
    if fig._suptitle is not None:
        headings.append(fig._suptitle)
    headings = [t for t in headings if t.get_visible() and t.get_text()]
    for a, b in itertools.combinations(headings, 2):
        if a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer)):
            problems.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    return problems


def _figures(run, probed, trained):
    net, _, result, report = run
    activity, gradients = probed
    flipped = copy.deepcopy(result)
    flipped.spikes[1][0, 2, 0] ^= True  # one spike of the second layer, sample 0, timestep 2
    agreement = compare(net, result, flipped)
    return {
        "firing": reporting.firing_figure(report),
        "energy": reporting.energy_figure(report),
        "cores": reporting.cores_figure(report),
        "divergence": reporting.divergence_figure(agreement.layers, agreement.first),
        "training": reporting.training_figure(trained[0].history),
        "probe firing_rate": reporting.probe_grid_figure(activity, "firing_rate", "firing rate",
                                                         "firing rate (spikes / neuron / timestep)"),
        "potentials": reporting.potentials_figure(activity),
        "gradients": reporting.gradients_figure(gradients.summary()),
    }


def test_every_plot_has_units_constrained_layout_and_no_overlaps(run, probed, trained):
    figures = _figures(run, probed, trained)
    try:
        for name, fig in figures.items():
            assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine), name
            assert not _labelled_axes_problems(fig), (name, _labelled_axes_problems(fig))
            assert not _text_problems(fig), (name, _text_problems(fig))
        # One timestep numbering: 0 .. T-1 on every per-timestep axis.
        steps = [str(t) for t in range(run[0].timesteps)]
        for name in ("firing", "divergence", "probe firing_rate"):
            assert [t.get_text() for t in figures[name].axes[0].get_xticklabels()] == steps, name
        titles = [ax.get_title() for ax in figures["potentials"].axes[:run[0].timesteps]]
        assert titles == [f"timestep {t}" for t in steps]
        assert "timestep 2" in figures["divergence"].axes[0].get_title()
    finally:
        for fig in figures.values():
            reporting._pyplot().close(fig)


def test_core_plot_names_layers_and_shows_work_per_step_against_the_barrier(run):
    net, _, _, report = run
    fig = reporting.cores_figure(report)
    try:
        work = next(ax for ax in fig.axes if ax.get_ylabel() == "core (by layer)")
        labels = [t.get_text() for t in work.get_yticklabels()]
        assert [label.split(" ")[0] for label in labels] == [layer.name for layer in net.layers]
        image = work.get_images()[0].get_array()
        barrier = report.figures["timing.barrier_sync"].value
        assert image.shape == (len(report.cores), net.timesteps + max(net.depths()))
        np.testing.assert_allclose(image, np.array([c.busy_s for c in report.cores]) / barrier)
    finally:
        reporting._pyplot().close(fig)


def test_gradient_norm_bars_stay_at_or_above_zero(probed):
    # Steps whose norms vary so much that mean - std is negative: a mean +- std bar would cross zero.
    wide = probes.GradientProbe()
    wide.norms = {**probed[1].norms, "wide": [0.01, 0.01, 0.02, 5.0]}
    summary = wide.summary()
    assert summary["wide"]["mean"] * (1 - summary["wide"]["cv"]) < 0
    fig = reporting.gradients_figure(summary)
    try:
        ax = fig.axes[0]
        (bars,) = [c for c in ax.containers if c.has_xerr]
        segments = np.concatenate(bars.lines[2][0].get_segments())
        assert segments[:, 0].min() >= 0
        assert segments[:, 0].min() == pytest.approx(min(g["p10"] for g in summary.values()))
        assert ax.get_xlim()[0] == 0
        assert [t.get_text() for t in ax.get_yticklabels()] == list(summary)
    finally:
        reporting._pyplot().close(fig)


def test_probes_and_export_name_layers_alike(trained, probed, exported):
    activity, gradients = probed
    names = [layer.name for layer in exported[1].layers]
    assert list(activity) == [n for n in names if n != "readout"]
    assert list(gradients.summary()) == names


def test_report_text_shows_energy_in_uJ_and_time_in_us():
    assert reporting.uJ(18.89e-6) == "18.89" and reporting.uJ(841.3e-9) == "0.8413"
    assert reporting.uJ(1.5e-3) == "1,500" and reporting.us(102.1e-6) == "102.1"
