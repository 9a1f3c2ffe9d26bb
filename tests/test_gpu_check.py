"""The GPU check (benchmarks/gpu_check.py) cannot rot between GPU runs: its dry run goes through every step on the
CPU (the install from the package's source and the carried wheels, the sm_90 compile check, pytest -m gpu, the
simulator on both "devices", both benchmarks and the launch sweep on Triton's interpreter, the host-work benchmark)
and writes its JSON and table; its exit status names what failed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
KINDS = ("lif", "atgo", "agl", "mpinit_trsg", "psg_pda")


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = Path(args[0])
    done = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), *args], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=timeout)
    return done, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_driver_reports_with_the_standard_library_alone(tmp_path):
    """On a fresh GPU machine spikefold is not installed until the driver's first step, and the checkout alone
    is no importable package (its folders become spikefold's subpackages when installed): the driver must get
    as far as writing its report with no site-packages at all (-S), atomically, leaving no temporary file."""
    done = subprocess.run([sys.executable, "-I", "-S", str(BENCH / "gpu_check.py"), str(tmp_path), "--dry-run",
                           "--skip-install", "--steps", "kernel-host", "--budget", "1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 3, done.stderr[-3000:]  # a step not run: no time left in a 1-second budget
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["steps"]["kernel-host"] == {"status": "not run", "note": "no time left in --budget"}
    assert "| kernel-host | not run | - | no time left in --budget |" in (tmp_path / "gpu_check.md").read_text()


def test_exit_status_names_what_failed():
    check = _gpu_check()
    passed = {"status": "passed"}
    steps = ("compile", "gpu-tests")
    assert check.exit_status({"install": passed, "compile": passed, "gpu-tests": passed}, steps) == 0
    failed = {"install": passed, "compile": passed,
              "gpu-tests": {"status": "failed", "failures": ["tests/test_kernels.py::test_x"],
                            "result": {"tests": 2, "PASSED": 1, "FAILED": 1}}}
    assert check.exit_status(failed, steps) == 1
    assert "tests/test_kernels.py::test_x" in check.summary(failed, dry_run=False)
    for incomplete in ({"install": passed, "compile": passed, "gpu-tests": {"status": "timeout"}},
                       {"install": passed, "compile": passed},  # a chosen step not run yet
                       {"install": {"status": "error"}, "compile": passed, "gpu-tests": passed}):
        assert check.exit_status(incomplete, steps) == 3


def test_summary_of_a_gpu_run_reads_its_profiles_and_tiny_layer():
    """What only a GPU run writes (kernel times in the profiles, the tiny layer's rows) goes into the table; the
    dry run's CPU profiles have none. The records are those of the H200's first run (its training step) and
    second (the kernels, with SpikingJelly), with the fields that the benchmarks have written since added."""
    check = _gpu_check()
    runs = BENCH / "results" / "gpu_check"
    steps = json.loads((runs / "run1_full_without_wheels.json").read_text())["steps"]
    steps["neuron-kernels"] = json.loads((runs / "run2_kernels_with_contenders.json").read_text())["steps"][
        "neuron-kernels"]
    kernels = steps["neuron-kernels"]["result"]["results"]
    fused = {r["shape"]: r for r in kernels if r["contender"] == "spikefold-triton:lif"}
    launches = {"name": "cuLaunchKernelEx", "count": 2, "seconds": 1e-4}  # what the profiler names a host event
    fused["cifar-T4"]["profile"] = {"kernels": 9, "kernel_seconds": 0.25 * fused["cifar-T4"]["seconds"],
                                    "host_longest": [launches, {"name": "aten::empty", "count": 7, "seconds": 5e-5}]}
    kernels += [{**r, "shape": "tiny-T4", "dims": [4, 2, 8, 4, 4], "seconds": 0.5 * fused["cifar-T4"]["seconds"]}
                for r in kernels if r["shape"] == "cifar-T4" and "seconds" in r]
    step = next(r for r in steps["train-step"]["result"]["results"] if (r["kind"], r["backend"]) == ("lif", "triton"))
    step["profile"] = {"kernels": 800, "kernel_seconds": 0.5 * step["seconds"], "ours_seconds": 0.25 * step["seconds"]}
    table = check.summary(steps, dry_run=False)
    ms = fused["cifar-T4"]["seconds"] * 1e3
    assert (f"| cifar-T4 | lif | 25 % (9 kernels, {ms / 4:.3f} of {ms:.3f} ms; host: cuLaunchKernelEx x2 0.100 ms; "
            "aten::empty x7 0.050 ms) |") in table
    assert "## Fixed cost per call (tiny-T4: T = 4, 256 neurons," in table
    assert f"| spikefold-triton:lif | {ms / 2:.3f} | {ms:.3f} | 50 % |" in table
    assert sum(line.startswith("| spikingjelly-") for line in table.split("## Fixed cost")[1].splitlines()) == 2
    assert (f"| T=2, batch 128 | lif, fused | 50 % (800 kernels, {step['seconds'] * 500:.3f} of "
            f"{step['seconds'] * 1e3:.3f} ms, spikefold's neuron kernels {step['seconds'] * 250:.3f} ms) |") in table
    # the first run's LIF step: 41.04 ms fused, 44.76 ms eager; were a quarter of the fused step neuron kernels,
    # then free, the step would take 30.78 ms: 44.76 / 30.78 = 1.45x at most
    assert "| T=2, batch 128 | lif, fused | 10.26 of 41.04 ms; at most 1.45x |" in table


def test_bandwidth_target_reads_the_kernels_own_time_where_profiled(monkeypatch):
    """On the H200 (run 5) the fused LIF call on the CIFAR shape took 0.886 ms, more than half of it the host's
    work; its two kernels took 0.389 ms of it (the profile's ``ours_seconds``). The bandwidth verdict is over
    those kernels' time where a profile gives it, the call's otherwise, and says which; the call's figure stays
    beside it."""
    monkeypatch.syspath_prepend(str(BENCH))
    import neuron_kernels

    runs = BENCH / "results" / "gpu_check"
    report = json.loads((runs / "run5_after_fixes.json").read_text())["steps"]["neuron-kernels"]["result"]
    rows = [r for r in report["results"] if r["shape"] == "cifar-T4" and "seconds" in r]
    lif, atgo = (next(r for r in rows if r["contender"] == f"spikefold-triton:{k}") for k in ("lif", "atgo"))
    assert {"lif_forward_kernel", "lif_backward_kernel", "adaptive_step_kernel"} <= set(
        neuron_kernels.gpu_timing.neuron_kernel_names())
    assert [k["name"] for k in lif["profile"]["longest"][:2]] == ["lif_forward_kernel", "lif_backward_kernel"]
    del atgo["profile"]  # as if its profile had failed
    peak = report["machine"]["peak_bandwidth_bytes_per_s"]
    verdicts = neuron_kernels.summarise(rows, peak, element_bytes=4)["fraction_of_peak_bandwidth"]
    # 6 passes over 4 x 128 x 128 x 32 x 32 fp32 values: 1.61 GB; in 0.389 ms 4.14 TB/s, 86 % of 4.8 TB/s
    assert lif["bytes"] == 6 * 4 * 128 * 128 * 32 * 32 * 4
    assert abs(lif["profile"]["ours_seconds"] - 0.389e-3) < 1e-6 and abs(lif["seconds"] - 0.886e-3) < 1e-6
    v = verdicts["cifar-T4/lif"]
    assert v["over"] == "the neuron kernels' GPU time" and v["met"] and 0.86 < v["fraction"] < 0.87
    assert 0.37 < v["call_fraction"] < 0.38 and v["call_fraction"] == lif["fraction_of_peak"]
    v = verdicts["cifar-T4/atgo"]
    assert v["over"] == "the call's time" and v["fraction"] == v["call_fraction"] and not v["met"]
    table = _gpu_check().summary({"neuron-kernels": {"status": "passed", "result": {
        **report, "verdicts": {"fraction_of_peak_bandwidth": verdicts}}}}, dry_run=False)
    assert ("| memory bandwidth, of peak, over the neuron kernels' GPU time | cifar-T4 | lif | 86 % (4.14 TB/s); "
            "over the call's time 38 % | >= 50 % | yes |") in table


def test_wheel_list_matches_the_bench_extra():
    """What the GPU machine gets as wheels is what the Makefile installs here for the dry run."""
    wanted = {line.split("==")[0]: line for line in (BENCH / "gpu_wheels.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["optional-dependencies"]["bench"]) == {wanted[n] for n in wanted if n != "nir"}
    assert wanted["nir"] in project["dependencies"]


def test_gpu_tests_step_runs_every_gpu_test_but_the_lava_one(tmp_path):
    """The pytest step, for real on the CPU (every GPU test skips here): it collects the GPU tests of the three
    files from the copy it makes, reads each one's outcome, and leaves out the one that needs Lava."""
    check = _gpu_check()
    done, report, table = _run(str(tmp_path), "--dry-run", "--skip-install", "--steps", "gpu-tests", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    step = report["steps"]["gpu-tests"]
    assert step["status"] == "passed" and set(step["outcomes"].values()) == {"SKIPPED"}
    assert {test.split("::")[0] for test in step["outcomes"]} == set(check.GPU_TEST_FILES)
    for path in check.GPU_TEST_FILES:  # every test function marked gpu ran (parametrised ones several times)
        source = (ROOT / path).read_text()
        marked = set(re.findall(r"@pytest\.mark\.gpu\n(?:@.*\n|\s+.*\n)*?def (\w+)", source))
        ran = {test.split("::")[1].split("[")[0] for test in step["outcomes"] if test.startswith(path)}
        assert ran == marked - {check.LAVA_TEST.split("::")[1]}, path
    assert check.LAVA_TEST.split("::")[1] in (ROOT / "tests" / "test_simulator.py").read_text()
    assert "| pytest -m gpu (kernels, simulator, QAT) | passed |" in table


def test_a_spikingjelly_worker_out_of_time_leaves_an_error_row_per_shape(monkeypatch):
    """The worker is killed at --worker-timeout; each shape it did not finish gets that reason, none is lost."""
    monkeypatch.syspath_prepend(str(BENCH))
    import neuron_kernels

    args = neuron_kernels.argparse.Namespace(shapes=["seq-4096", "tiny-T4"], warmup=0, repeats=1, dry_run=True,
                                             worker_timeout=0.05)
    shapes = neuron_kernels.chosen_shapes(args)
    assert list(shapes) == ["seq-64", "tiny-T4"]  # a dry run: the dry shape of each family asked for
    rows = neuron_kernels.spikingjelly_rows(shapes, args, neuron_kernels.torch.device("cpu"))
    assert [(r["shape"], r["contender"], r["error"]) for r in rows] == [
        (shape, "spikingjelly-torch", "no result within --worker-timeout 0.05 s") for shape in shapes]


@pytest.mark.slow  # 5 minutes on the 2-core machine under other jobs' load (78 s of CPU time)
def test_dry_run_goes_through_every_step(tmp_path):
    from spikefold.train.kernels import ops

    done, report, table = _run(str(tmp_path), "--dry-run", timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = report["steps"]
    assert {name: r["status"] for name, r in steps.items()} == dict.fromkeys(
        ("install", "compile", "gpu-tests", "simulator", "neuron-kernels", "train-step", "kernel-host",
         "launch-sweep"), "passed")
    environment = steps["install"]["environment"]
    assert environment["spikefold_location"].startswith(tempfile.gettempdir()) and not environment["lava_imported"]
    assert steps["compile"]["result"]["compiled"] > 0 and steps["compile"]["result"]["failures"] == []
    sim = steps["simulator"]["result"]
    assert len(sim["results"]) == 4 and not sim["machine"]["lava_imported"]
    assert all(r["spikes_differing"] == 0 and r["spikes_compared"] > 0 for r in sim["results"])
    kernels = steps["neuron-kernels"]["result"]
    assert all("error" not in r for r in kernels["results"]), [r for r in kernels["results"] if "error" in r]
    assert set(kernels["verdicts"]["fused_over_eager"]) == {f"{s}/{k}" for s in ("seq-64", "cifar-T2") for k in KINDS}
    assert set(kernels["verdicts"]["lif_over_spikingjelly"]) == {"seq-64", "cifar-T2"}
    assert {r["contender"] for r in kernels["results"]} >= {"spikingjelly-torch", "snntorch-leaky"}
    tiny = {r["contender"] for r in kernels["results"] if r["shape"] == "tiny-T4"}  # every contender, no target
    assert tiny == {r["contender"] for r in kernels["results"] if r["shape"] == "cifar-T2"}
    train = steps["train-step"]["result"]
    assert set(train["verdicts"]) == {"lif/fp32", "lif/bf16-cl"} and all("error" not in r for r in train["results"])
    sweep = steps["launch-sweep"]["result"]  # the default and each of the dry grid's launches, per shape
    assert all("error" not in r for r in sweep["results"]) and len(sweep["results"]) == 2 * 4
    stages = ops.PIPELINE_STAGES  # the rows without a depth of their own run at the kernels' default
    assert ({(r["stages"], r["block"], r["warps"]) for r in sweep["results"] if not r["default"]}
            == {(1, 128, 1), (stages, 128, 1), (stages, 256, 2)})
    assert {(r["stages"], r["block"], r["warps"]) for r in sweep["results"] if r["default"]} == {(stages, 128, 1)}
    assert set(sweep["best"]) == {"seq-64", "cifar-T2"} and sweep["complete"]
    host = steps["kernel-host"]["result"]
    assert [r["kind"] for r in host["results"]] == list(KINDS) and host["complete"]
    for row in ("| fused vs eager, fwd+bwd | seq-64 | atgo |", "| LIF vs fastest SpikingJelly 2.0 LIF | cifar-T2 |",
                "| LIF vs snnTorch 1.0 Leaky (no target) |", "| ResNet-19 training step, fused vs eager |",
                "| lif, bf16-cl | ",
                "| digits CNN (2 conv + 2 pool) |", f"| seq-64 | {stages} / 128 / 1 |", "## Host work per fused call",
                "## Fixed cost per call", "| spikingjelly-torch |"):
        assert row in table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md",
                                                          "kernel_host.json", "launch_sweep.json",
                                                          "neuron_kernels.json",
                                                          "simulator_gpu.json",
                                                          "train_step.json"]
