"""The CLI end to end."""

from __future__ import annotations

import json

import pytest

from spikefold.cli import main
from spikefold import reporting
from spikefold.export import nir_io


def test_cli_sim_deploy_validate(exported, tmp_path, capsys):
    _, net, _ = exported
    path = str(nir_io.write(net, tmp_path / "model.nir"))
    assert main(["sim", path, "--samples", "50", "--hw-config", "loihi1", "--out", str(tmp_path / "sim")]) == 0
    assert "integer sim on 50 samples of digits:test: accuracy" in capsys.readouterr().out
    energy = json.loads((tmp_path / "sim" / "energy.json").read_text())
    assert energy["hw_config"] == "loihi1" and energy["samples"] == 50 and energy["cores"]
    for name in ("energy.md", "firing.png", "energy.png", "cores.png"):
        assert (tmp_path / "sim" / name).is_file(), name
    # One unit per quantity in every report's text: energy in uJ (JSON keeps joules, named in the key).
    md = (tmp_path / "sim" / "energy.md").read_text()
    assert "nJ" not in md and f"| energy per inference | {reporting.uJ(energy['total_j'])} uJ" in md
    report = tmp_path / "deploy.json"
    assert main(["deploy", path, "--samples", "30", "--chunk", "15", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["samples"] == 30 and data["agreement_exact"] and data["accuracy"] >= 0.9
    assert main(["validate", path, "--samples", "20", "--states", "--out", str(tmp_path / "validate")]) == 0
    assert "PASS" in capsys.readouterr().out
    md = (tmp_path / "validate" / "report.md").read_text()
    # Timesteps 0 .. T-1, as in the JSON lists and the plots; the run metadata in the report.
    assert "| hidden0 | 0 |" in md and f"| hidden0 | {net.timesteps} |" not in md and "nJ" not in md
    run = json.loads((tmp_path / "validate" / "report.json").read_text())["run"]
    assert "## Run" in md and run["command"].startswith("spikefold validate")


@pytest.mark.slow
def test_pipeline_on_digits(tmp_path, capsys):
    """What `make demo` runs: every spike equal on 200 test samples, accuracy >= 95 %."""
    out = tmp_path / "demo"
    assert main(["pipeline", "--out", str(out), "--samples", "200"]) == 0
    summary = json.loads((out / "report.json").read_text())
    assert summary["agreement"]["exact"] and summary["agreement"]["spikes_differing"] == 0
    assert summary["accuracy"]["lava_samples"] == 200
    assert summary["accuracy"]["float"] >= 0.95 and summary["accuracy"]["lava"] >= 0.95
    for name in ("model.pt", "last.pt", "model.nir", "report.json", "report.md", "firing.png", "energy.png",
                 "cores.png"):
        assert (out / name).is_file(), name
    assert "every spike" in (out / "report.md").read_text()
