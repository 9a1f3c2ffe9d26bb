"""The GPU check (issue 16): on a fresh GPU machine (written for the H200 lent here: Python 3.12, torch 2.11,
Triton 3.6, numpy 2, no package index), install spikefold and the carried wheels, then check the kernels'
equality and measure their speed, each step in its own process under its own time box, within --budget seconds:

    install          spikefold itself (no dependencies, no index) and .whl/*.whl into a scratch folder that
                     every later step has on PYTHONPATH; then the versions every step imports
    compile          tests/compile_kernels.py: every kernel variant compiled for sm_90, PTX and cubins checked
                     (on the CPU: it runs beside gpu-tests)
    gpu-tests        pytest -m gpu on the kernel, simulator and QAT tests (the one that runs Lava deselected)
    simulator        gpu_check_sim.py: simulator throughput GPU vs CPU on the digits networks and the full-width
                     CIFAR-10 ResNet-19, every spike compared
    neuron-kernels   neuron_kernels.py at B=16, T=500, N=4096 and T=4, B=128, 128x32x32: fused vs eager, LIF vs
                     SpikingJelly 2.0 and snnTorch, memory bandwidth; and on a tiny layer (T=4, 256 neurons),
                     where a call's time is its fixed cost (host work, launches), every contender alike
    train-step       train_step.py: ResNet-19 at T=2, batch 128, fused vs eager, samples/s and peak memory
    kernel-host      kernel_host.py: the host's work per fused call on this machine's CPU (launches stubbed),
                     to set against the fused calls' times above
    launch-sweep     neuron_kernels.py --launch-sweep: the fused LIF at both shapes under each launch (pipeline
                     stages, neurons per program, warps), against the default; last, in whatever time is left

A step that fails or runs out of time does not stop the others. Into the output folder (the argument, else $OUT,
else benchmarks/results/gpu_check/) it writes, rewritten atomically after every step: gpu_check.json (every
step's status, time, log tail and results), gpu_check.md (the summary table, every figure against the issue's
target), gpu_check.log (every step's output), and the benchmarks' own JSON, which they rewrite after every row.

Exit status: 1 when an equality check failed (named on stderr and in the table), 3 when none failed but a step
did not complete (error, time-out, GPU tests skipped), 0 otherwise. Speed targets missed do not change it.

    benchmarks/gpu_check.sh "$OUT"          # on the GPU machine (the shell script picks its python3)
    .venv/bin/python benchmarks/gpu_check.py --dry-run /tmp/check   # the same on the CPU: tiny shapes, Triton's
                                                                    # interpreter; checks the script, measures nothing

The driver imports nothing but the standard library, so that it reports even when the package does not install
(the checkout alone is no importable package: its folders become spikefold's subpackages only when installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BENCH = ROOT / "benchmarks"
WHEELS = ROOT / ".whl"
STEPS = ("compile", "gpu-tests", "simulator", "neuron-kernels", "train-step", "kernel-host", "launch-sweep")
# Seconds each step may take on the GPU machine. The compile check runs beside the GPU tests; the install and the
# steps after it up to train-step sum to 480 s, the default --budget, so a run where each of them takes its whole
# box ends in train-step; the two tuning aids, the host's work and the launch sweep, get what the others left.
# On the H200 (run 4) every step passed in 349 s: install 4, GPU tests and compile 91 side by side, simulator 58,
# neuron kernels 90, training step 30 (fp32 alone; 36 in run 5 with bf16 and channels_last too), host 18, sweep 53.
# The dry run (a loaded 2-core CPU, Triton's interpreter) gets more.
BOX = {"install": 60, "compile": 130, "gpu-tests": 130, "simulator": 90, "neuron-kernels": 110, "train-step": 90,
       "kernel-host": 40, "launch-sweep": 90}
DRY_BOX = 900
# Its comparison runs Lava, which the GPU machine does not have (and cannot, with numpy 2).
LAVA_TEST = "tests/test_simulator.py::test_gpu_float64_layer_and_lava_agree"
GPU_TEST_FILES = ("tests/test_simulator.py", "tests/test_qat.py", "tests/test_kernels.py")
PROBE = """
import importlib.metadata, json, sys
found = {}
for name in ("numpy", "torch", "triton", "nir", "spikingjelly", "snntorch", "loguru", "pytest", "pytest-timeout",
             "pytest-xdist"):
    try:
        found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        found[name] = None
import spikefold, spikefold.train.kernels, spikefold.sim.simulator, torch
found["spikefold_location"] = spikefold.__file__
found["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
found["lava_imported"] = "lava" in sys.modules
print(json.dumps(found))
"""


class Check:
    """One run of the GPU check: its steps' records, the output folder, the log, the environment of the steps."""

    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="gpu_check."))
        self.log = open(self.out / "gpu_check.log", "w", buffering=1)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.records: dict[str, dict] = {}
        self.deadline = time.monotonic() + args.budget
        self.python = sys.executable
        self.running: set[subprocess.Popen] = set()

    def stop_all(self, signum, frame) -> None:
        """SIGTERM or SIGINT to the driver (a device call at its limit): end the running steps' process groups,
        keep what was measured, leave."""
        for process in list(self.running):
            stop(process)
        self.save(complete=False)
        sys.exit(128 + signum)

    # --- running steps -----------------------------------------------------------------------------------------

    def box(self, step: str) -> float:
        return min(DRY_BOX if self.args.dry_run else BOX[step], self.deadline - time.monotonic())

    def start(self, step: str, command: list[str], own_log: bool = False, cwd: Path = ROOT):
        """Start a step in its own process group (so that a time-out ends its children too); None when no time
        is left. Output goes to the shared log, or to a file of its own for a step running beside another."""
        if self.box(step) < 5:
            self.records[step] = {"status": "not run", "note": "no time left in --budget"}
            return None
        sink = open(self.scratch / f"{step}.log", "w+") if own_log else self.log
        sink.write(f"\n===== {step}: {' '.join(command)}\n")
        sink.flush()
        process = subprocess.Popen(command, cwd=cwd, env=self.env, stdout=sink, stderr=subprocess.STDOUT,
                                   process_group=0)
        self.running.add(process)
        return {"step": step, "command": command, "process": process, "sink": sink, "from": sink.tell(),
                "started": time.monotonic(), "timeout": self.box(step)}

    def finish(self, job) -> tuple[dict, str]:
        """Wait for a started step (within its box), kill its process group if it overruns; its record and
        output."""
        process = job["process"]
        remaining = job["timeout"] - (time.monotonic() - job["started"])
        try:
            rc = process.wait(timeout=max(remaining, 0))
            timed_out = False
        except subprocess.TimeoutExpired:
            stop(process)
            rc, timed_out = process.returncode, True
        self.running.discard(process)
        with open(job["sink"].name, errors="replace") as f:  # the step's own output
            f.seek(job["from"])
            text = f.read()
        if job["sink"] is not self.log:  # a step that ran beside another: its output joins the log now
            self.log.write(text)
            job["sink"].close()
        record = {"command": " ".join(job["command"]), "rc": rc,
                  "seconds": round(time.monotonic() - job["started"], 1), "log_tail": text[-3000:],
                  "status": "timeout" if timed_out else ("passed" if rc == 0 else "error")}
        if timed_out:
            record["note"] = f"stopped after its {job['timeout']:.0f} s box"
        self.records[job["step"]] = record
        return record, text

    def run(self, step: str, command: list[str], cwd: Path = ROOT) -> tuple[dict | None, str]:
        job = self.start(step, command, cwd=cwd)
        return (None, "") if job is None else self.finish(job)

    # --- the steps ---------------------------------------------------------------------------------------------

    def install(self) -> None:
        wheels = sorted(WHEELS.glob("*.whl"))
        if self.args.skip_install:
            note = "skipped (--skip-install): the environment's own spikefold and packages"
        else:
            site = self.scratch / "site"
            record, _ = self.run("install", [self.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                          "--no-build-isolation", "--no-compile", "--no-cache-dir", "--target",
                                          str(site), str(ROOT), *map(str, wheels)])
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
            if record is None or record["status"] != "passed":
                return
            note = f"spikefold and {len(wheels)} carried wheels into {site}"
        record = self.records.setdefault("install", {"status": "passed", "seconds": 0.0})
        record.update(note=note, wheels=[w.name for w in wheels])
        try:
            probe = subprocess.run([self.python, "-P", "-c", PROBE], cwd=ROOT, env=self.env, capture_output=True,
                                   text=True, timeout=120)
        except subprocess.TimeoutExpired:
            record.update(status="error", note=f"{note}; importing spikefold took over 120 s")
            return
        if probe.returncode == 0:
            record["environment"] = json.loads(probe.stdout.strip().splitlines()[-1])
        else:
            record.update(status="error", note=f"{note}; importing spikefold failed", log_tail=probe.stderr[-3000:])

    def compile_and_gpu_tests(self) -> None:
        """The compile check (CPU only) beside the GPU tests; the benchmarks wait for both."""
        steps = self.args.steps
        compile_job = (self.start("compile", [self.python, str(ROOT / "tests" / "compile_kernels.py")], own_log=True)
                       if "compile" in steps else None)
        if "gpu-tests" in steps:
            self.gpu_tests()
        if compile_job is not None:
            record, output = self.finish(compile_job)
            lines = [line for line in output.splitlines() if line.startswith("{")]
            if lines:
                result = record["result"] = json.loads(lines[-1])
                if result["failures"]:
                    record["status"] = "failed"
                    record["failures"] = result["failures"]

    def gpu_tests(self) -> None:
        """pytest -v, its outcomes read from the lines it prints per test as it goes: a run stopped at its box
        still says which tests passed. Four workers where pytest-xdist is installed (Triton compiles each kernel
        variant at first use), and a per-test limit where pytest-timeout is. The tests run from a copy outside the
        checkout: pytest puts the tests' root on sys.path (its processes' children inherit it), and the
        checkout's spikefold/ folder, the package's top level alone, would shadow the installed package."""
        environment = self.records.get("install", {}).get("environment", {})
        copy = self.scratch / "checkout"
        shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", copy)  # pytest's settings and markers
        command = [self.python, "-m", "pytest", "-v", "-m", "gpu", "-p", "no:cacheprovider", "--deselect",
                   LAVA_TEST, *(["-n", "4"] if environment.get("pytest-xdist") else []),
                   *(["--timeout", "120"] if environment.get("pytest-timeout") else []), *GPU_TEST_FILES]
        record, output = self.run("gpu-tests", command, cwd=copy)
        if record is None:
            return
        outcomes = outcomes_of_tests(output)
        counts = {outcome: list(outcomes.values()).count(outcome) for outcome in sorted(set(outcomes.values()))}
        failed = [test for test, outcome in outcomes.items() if outcome in ("FAILED", "ERROR")]
        record.update(result={"tests": len(outcomes), **counts}, failures=failed, outcomes=outcomes)
        if failed:
            record["status"] = "failed"
        elif record["status"] == "passed" and (counts.get("SKIPPED") or not outcomes) and not self.args.dry_run:
            record["status"] = "incomplete"
            record["note"] = f"{counts.get('SKIPPED', 0)} of {len(outcomes)} GPU tests skipped"

    def benchmark(self, step: str, script: str, options: list[str], json_name: str) -> None:
        path = self.out / json_name
        dry = ["--dry-run"] if self.args.dry_run else []
        record, _ = self.run(step, [self.python, str(BENCH / script), *options, *dry, "--out", str(path)])
        if record is not None and path.exists():
            record["result_file"] = json_name
            record["result"] = json.loads(path.read_text())
            if not record["result"].get("complete"):
                record["status"] = "incomplete" if record["status"] == "passed" else record["status"]

    def simulator(self) -> None:
        options = (["--epochs", "1", "--samples", "64", "--repeats", "1", "--resnet19-width", "0.0625",
                    "--resnet19-samples", "8"]
                   if self.args.dry_run else ["--epochs", "10", "--resnet19-width", str(self.args.resnet19_width)])
        self.benchmark("simulator", "gpu_check_sim.py", options, "simulator_gpu.json")
        record = self.records.get("simulator", {})
        rows = record.get("result", {}).get("results", [])
        differing = [r["network"] for r in rows if "error" not in r and not (
            r["spikes_differing"] == 0 and r["readout_equal"] and r["stats_equal"])]
        convolutions = [r["network"] for r in rows
                        if not all(side["equal"] for side in r.get("convolutions", {}).values())]
        if differing or convolutions or record.get("result", {}).get("machine", {}).get("lava_imported"):
            record["status"] = "failed"
            record["failures"] = [f"{name}: GPU and CPU spikes differ" for name in differing] + [
                f"{name}: a convolution's sums differ from torch's conv2d" for name in convolutions] + (
                ["Lava was imported"] if record["result"]["machine"]["lava_imported"] else [])

    def neuron_kernels(self) -> None:
        options = (["--warmup", "0", "--repeats", "1", "--worker-timeout", "300"] if self.args.dry_run
                   else ["--warmup", "2", "--repeats", "5", "--worker-timeout", "30"])
        self.benchmark("neuron-kernels", "neuron_kernels.py",
                       ["--shapes", "seq-4096", "cifar-T4", "tiny-T4", *options], "neuron_kernels.json")

    def train_step(self) -> None:
        options = (["--kinds", "lif", "--warmup", "0", "--repeats", "1"] if self.args.dry_run
                   else ["--warmup", "2", "--repeats", "5"])
        self.benchmark("train-step", "train_step.py", ["--networks", "resnet19-T2", "--variants", "fp32", "bf16-cl",
                                                       *options], "train_step.json")

    def kernel_host(self) -> None:
        self.benchmark("kernel-host", "kernel_host.py", [] if self.args.dry_run else ["--calls", "50"],
                       "kernel_host.json")

    def launch_sweep(self) -> None:
        options = ["--warmup", "0", "--repeats", "1"] if self.args.dry_run else ["--warmup", "1", "--repeats", "5"]
        self.benchmark("launch-sweep", "neuron_kernels.py", ["--launch-sweep", "--shapes", "seq-4096", "cifar-T4",
                                                             *options], "launch_sweep.json")

    # --- reporting ---------------------------------------------------------------------------------------------

    def save(self, complete: bool) -> int:
        status = exit_status(self.records, self.args.steps)
        payload = {"complete": complete, "dry_run": self.args.dry_run, "exit_status": status,
                   "budget_s": self.args.budget, "steps": self.records}
        write_atomically(self.out / "gpu_check.json", json.dumps(payload, indent=1) + "\n")
        write_atomically(self.out / "gpu_check.md", summary(self.records, self.args.dry_run))
        return status


def write_atomically(path: Path, text: str) -> None:
    """The file whole or not at all, as spikefold.core.files writes (which the driver cannot import): a reader
    never sees half a summary, even when the device call ends the driver mid-write."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def stop(process: subprocess.Popen) -> None:
    """End a step's whole process group: SIGTERM, then SIGKILL if it is still there after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def outcomes_of_tests(output: str) -> dict[str, str]:
    """Test id -> PASSED, FAILED, ERROR, SKIPPED... from pytest -v's lines, plain ("tests/x.py::t PASSED [ 1%]")
    or from xdist workers ("[gw0] [  1%] PASSED tests/x.py::t"); the last word on a test wins (an error in
    teardown follows its pass)."""
    outcomes = {}
    words = "PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS"
    for line in output.splitlines():
        match = (re.match(rf"(tests/\S+::\S+) ({words})\b", line)
                 or re.match(rf"\[gw\d+\] \[\s*\d+%\] ({words}) (tests/\S+::\S+)", line))
        if match:
            test, outcome = match.groups() if match.group(1).startswith("tests/") else match.groups()[::-1]
            outcomes[test] = outcome
    return outcomes


def exit_status(records: dict, steps) -> int:
    """1: an equality check failed; 3: none failed but a step (the install, or a chosen one) did not pass or has
    not run yet; 0: all passed."""
    statuses = [r["status"] for r in records.values()]
    if "failed" in statuses:
        return 1
    return 0 if all(step in records for step in steps) and set(statuses) <= {"passed"} else 3


def _pct(x) -> str:
    return f"{100 * x:.0f} %"


def _profiled(profile: dict, seconds: float) -> str:
    """A profiled call or step: its kernels' share of its time, and the host events that took longest."""
    host = "; ".join(f"{_cell(h['name'][:40])} x{h['count']} {h['seconds'] * 1e3:.3f} ms"
                     for h in profile.get("host_longest", [])[:3])
    ours = profile.get("ours_seconds")
    return (f"{_pct(profile['kernel_seconds'] / seconds)} ({profile['kernels']} kernels, "
            f"{profile['kernel_seconds'] * 1e3:.3f} of {seconds * 1e3:.3f} ms"
            + (f", spikefold's neuron kernels {ours * 1e3:.3f} ms" if ours else "")
            + (f"; host: {host}" if host else "") + ")")


def _cell(text: str) -> str:
    """Free text (a note, an error) as one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "/")[:200]


def summary(records: dict, dry_run: bool) -> str:
    """The markdown table: equality checks, every figure against its target, the simulator, the steps."""
    lines = ["# GPU check", ""]
    env = records.get("install", {}).get("environment", {})
    lines.append(f"Device: {env.get('cuda_device') or 'none (CPU)'}; torch {env.get('torch')}, triton "
                 f"{env.get('triton')}, numpy {env.get('numpy')}, SpikingJelly {env.get('spikingjelly')}, "
                 f"snnTorch {env.get('snntorch')}.")
    if dry_run:
        lines.append("\n**Dry run** (CPU, Triton's interpreter, tiny shapes): it checks the script; no figure "
                     "below means anything.")
    lines += ["", "## Equality checks", "", "| check | status | detail |", "| --- | --- | --- |"]
    compile_ = records.get("compile", {})
    if compile_:
        result = compile_.get("result", {})
        detail = (f"{result.get('compiled')} variants for {result.get('target')}, Triton {result.get('triton')}; "
                  f"failures: {'; '.join(result['failures']) or 'none'}" if result else compile_.get("note", ""))
        lines.append(f"| PTX and cubins for sm_90 (tests/compile_kernels.py) | {compile_['status']} | {detail} |")
    tests = records.get("gpu-tests", {})
    if tests:
        c = tests.get("result", {})
        detail = (f"{c['tests']} tests: " + ", ".join(f"{n} {o.lower()}" for o, n in c.items() if o != "tests")
                  + (f"; failed: {', '.join(tests['failures'])}" if tests.get("failures") else "")
                  if c else tests.get("note", ""))
        lines.append(f"| pytest -m gpu (kernels, simulator, QAT) | {tests['status']} | {detail} |")
    sim = records.get("simulator", {})
    sim_rows = sim.get("result", {}).get("results", [])
    if sim:
        compared = sum(r.get("spikes_compared", 0) for r in sim_rows)
        differing = sum(r.get("spikes_differing", 0) for r in sim_rows)
        lines.append(f"| simulator GPU = CPU (every spike, readout voltage, count; convolutions = torch's) | "
                     f"{sim['status']} | {len(sim_rows)} networks, {compared:,} spikes compared, {differing:,} differ"
                     + (f"; {'; '.join(sim['failures'])}" if sim.get("failures") else "") + " |")
    lines += ["", "## Targets", "", "| target | shape | neuron | measured | target | met |",
              "| --- | --- | --- | --- | --- | --- |"]
    kernels = records.get("neuron-kernels", {}).get("result", {})
    verdicts = kernels.get("verdicts", {})
    peak = kernels.get("machine", {}).get("peak_bandwidth_bytes_per_s")
    if kernels:
        lines[-2:-2] = [f"Peak memory bandwidth: {kernels['machine']['peak_bandwidth_source']}.", ""]
    for key, v in verdicts.get("fused_over_eager", {}).items():
        shape, kind = key.split("/")
        lines.append(f"| fused vs eager, fwd+bwd | {shape} | {kind} | {v['speedup']:.1f}x | >= {v['target']:g}x "
                     f"| {'yes' if v['met'] else 'NO'} |")
    for shape, v in verdicts.get("lif_over_spikingjelly", {}).items():
        lines.append(f"| LIF vs fastest SpikingJelly 2.0 LIF | {shape} | lif | {v['speedup_over_fastest']:.2f}x | "
                     f">= {v['target']:g}x | {'yes' if v['met'] else 'NO'} |")
    seconds = {(r["shape"], r["contender"]): r["seconds"] for r in kernels.get("results", []) if "seconds" in r}
    for (shape, contender), s in seconds.items():
        fused = seconds.get((shape, "spikefold-triton:lif"))
        if contender == "snntorch-leaky" and fused:
            lines.append(f"| LIF vs snnTorch 1.0 Leaky (no target) | {shape} | lif | {s / fused:.1f}x | - | - |")
    profiled = [r for r in kernels.get("results", []) if (r.get("profile") or {}).get("kernel_seconds")]
    for r in profiled:
        lines.append(f"| fused call: GPU kernel time of the call's time (no target) | {r['shape']} | "
                     f"{r['kind']} | {_profiled(r['profile'], r['seconds'])} | - | - |")
    for key, v in verdicts.get("fraction_of_peak_bandwidth", {}).items():
        shape, kind = key.split("/")
        call = v.get("call_fraction", v["fraction"])
        lines.append(f"| memory bandwidth, of peak, over {v.get('over', 'the call')} | {shape} | {kind} | "
                     f"{_pct(v['fraction'])} ({v['fraction'] * peak / 1e12:.2f} TB/s)"
                     + (f"; over the call's time {_pct(call)}" if call != v["fraction"] else "")
                     + f" | >= {_pct(v['target'])} | {'yes' if v['met'] else 'NO'} |")
    train = records.get("train-step", {}).get("result", {})
    rows = {(r["kind"], r.get("variant", "fp32"), r["backend"]): r for r in train.get("results", [])}

    def label(kind: str, variant: str) -> str:  # fp32 is the default: unnamed
        return kind if variant == "fp32" else f"{kind}, {variant}"

    for key, v in train.get("verdicts", {}).items():
        kind, variant = key.split("/")
        fused, eager = rows.get((kind, variant, "triton"), {}), rows.get((kind, variant, "eager"), {})
        memory = (f"; peak {fused['peak_memory_bytes'] / 2**30:.2f} vs {eager['peak_memory_bytes'] / 2**30:.2f} GiB"
                  if "peak_memory_bytes" in fused and "peak_memory_bytes" in eager else "")
        rates = f"{fused.get('samples_per_s', 0):,.0f} vs {eager.get('samples_per_s', 0):,.0f} samples/s"
        lines.append(f"| ResNet-19 training step, fused vs eager | T=2, batch {fused.get('batch')} | "
                     f"{label(kind, variant)} | {v['speedup']:.2f}x ({rates}{memory}) | "
                     f">= {train['target_resnet19_t2_speedup']:g}x | {'yes' if v['met'] else 'NO'} |")
    for (kind, variant, backend), r in rows.items():
        p = r.get("profile") or {}
        if p.get("kernel_seconds"):
            lines.append(f"| ResNet-19 step: GPU kernel time of the step's time (no target) | T=2, batch {r['batch']} "
                         f"| {label(kind, variant)}, {'fused' if backend == 'triton' else 'eager'} | "
                         f"{_profiled(p, r['seconds'])} | - | - |")
        eager = rows.get((kind, variant, "eager"), {})
        if backend != "triton" or not p.get("ours_seconds") or "seconds" not in eager:
            continue
        rest = r["seconds"] - p["ours_seconds"]  # the step were its neuron kernels free
        if rest > 0:
            lines.append(f"| ResNet-19 step: neuron kernels' time, and the speed-up over eager were they free "
                         f"(no target) | T=2, batch {r['batch']} | {label(kind, variant)}, fused | "
                         f"{p['ours_seconds'] * 1e3:.2f} of {r['seconds'] * 1e3:.2f} ms; at most "
                         f"{eager['seconds'] / rest:.2f}x | - | - |")
    if sim_rows:
        lines += ["", "## Simulator throughput (sample-timesteps/s)", "",
                  "| network | CPU | GPU | GPU / CPU | spikes differing | spikes fired (layers silent) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in sim_rows:
            fired = (f"{r['spikes_fired']:,} ({', '.join(r['silent_layers']) or 'none'})" if "spikes_fired" in r
                     else "-")
            lines.append(f"| {r['network']} | " + (
                f"{r['cpu_rate']:,.0f} ({r['cpu_threads']} threads) | {r['gpu_rate']:,.0f} | "
                f"{r['gpu_over_cpu']:.1f}x | {r['spikes_differing']:,} of {r['spikes_compared']:,} | {fired} |"
                if "error" not in r else f"{_cell(r['error'])} | - | - | - | - |"))
        convolving = [r for r in sim_rows if r.get("convolutions")]
        if convolving:
            lines += ["", "Every convolution of a network once, on each device at the batch its simulator runs: as one "
                      "matrix product (the simulator's way on a GPU) and by torch's conv2d without cuDNN (its way on "
                      "the CPU; on a GPU, an im2col and a matrix product per sample).", "",
                      "| network | device | convolutions x samples | one product (ms) | conv2d (ms) | conv2d / product "
                      "| sums equal |", "| --- | --- | --- | --- | --- | --- | --- |"]
            for r in convolving:
                for side, c in r["convolutions"].items():
                    lines.append(f"| {r['network']} | {side.upper()} | {c['convolutions']} x {c['samples']:,} | "
                                 f"{c['product_seconds'] * 1e3:.2f} | {c['conv2d_seconds'] * 1e3:.2f} | "
                                 f"{c['conv2d_seconds'] / c['product_seconds']:.2f}x | "
                                 f"{'yes' if c['equal'] else 'NO'} |")
    by_family = {family: next((shape for shape, _ in seconds if shape.startswith(family + "-")), None)
                 for family in ("tiny", "seq", "cifar")}
    tiny, cifar = by_family["tiny"], by_family["cifar"]
    if tiny:
        dims = next(r["dims"] for r in kernels["results"] if r["shape"] == tiny)
        lines += ["", f"## Fixed cost per call ({tiny}: T = {dims[0]}, {math.prod(dims[1:])} neurons, so little "
                  "work for the GPU that a call's time is its host work and launches; forward + backward)", "",
                  f"| contender | {tiny} call (ms) | {cifar or 'CIFAR'} call (ms) | tiny / CIFAR |",
                  "| --- | --- | --- | --- |"]
        for (shape, contender), s in seconds.items():
            if shape == tiny:
                big = seconds.get((cifar, contender))
                lines.append(f"| {contender} | {s * 1e3:.3f} | " + (f"{big * 1e3:.3f} | {_pct(s / big)} |" if big
                                                                  else "- | - |"))
    host = records.get("kernel-host", {}).get("result", {})
    if host.get("results"):
        lines += ["", f"## Host work per fused call ({host['machine']['host']}; launches stubbed, microseconds per "
                  "forward + backward)", "", "| neuron | direct | custom op | eager | fused call on the GPU, "
                  "tiny / seq / CIFAR (ms) | direct host work, of the tiny call |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in host["results"]:
            calls = [seconds.get((by_family[f], f"spikefold-triton:{r['kind']}")) for f in ("tiny", "seq", "cifar")]
            times = " / ".join("-" if c is None else f"{c * 1e3:.3f}" for c in calls)
            share = _pct(r["direct"] / 1e6 / calls[0]) if calls[0] else "-"
            lines.append(f"| {r['kind']} | {r['direct']:.0f} | {r['custom-op']:.0f} | {r['eager']:.0f} | {times} | "
                         f"{share} |")
    sweep = records.get("launch-sweep", {}).get("result", {}).get("best", {})
    if sweep:
        lines += ["", "## Launches, fused LIF forward + backward (pipeline stages / neurons per program / warps; "
                  + ("the wall clock's median, dry run)" if dry_run else "the kernels' own GPU time per call)"), "",
                  "| shape | default | ms | fastest | ms | default / fastest |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for shape, v in sweep.items():
            d, b = v["default"], v["best"]
            lines.append(f"| {shape} | {d['stages']} / {d['block']} / {d['warps']} | {d['seconds'] * 1e3:.3f} | "
                         f"{b['stages']} / {b['block']} / {b['warps']} | {b['seconds'] * 1e3:.3f} | "
                         f"{v['default_over_best']:.2f}x |")
    lines += ["", "## Steps", "", "| step | status | seconds | note |", "| --- | --- | --- | --- |"]
    for step, r in records.items():
        lines.append(f"| {step} | {r['status']} | {r.get('seconds', '-')} | {_cell(r.get('note', ''))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else BENCH / "results" / "gpu_check"
    parser.add_argument("out", type=Path, nargs="?", default=default_out,
                        help="output folder (default: $OUT when set, else benchmarks/results/gpu_check)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="run only these (e.g. to rerun what a cut-off run missed)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole check (default 480 on a GPU, 3600 for a dry run)")
    parser.add_argument("--skip-install", action="store_true",
                        help="use the environment's spikefold and packages instead of installing them")
    parser.add_argument("--resnet19-width", type=float, default=1.0,
                        help="the simulator step's CIFAR-10 ResNet-19 is of this width (default 1, full width; 0: "
                             "none; see gpu_check_sim.resnet19_network)")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU: tiny shapes, Triton's interpreter, "
                        "both sides of the simulator comparison on the CPU; checks the script, measures nothing")
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 3600.0 if args.dry_run else 480.0
    check = Check(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, check.stop_all)
    print(f"GPU check{' (dry run)' if args.dry_run else ''}: steps {', '.join(args.steps)}; output in {args.out}; "
          f"budget {args.budget:.0f} s", flush=True)
    phases = [(("install",), check.install), (("compile", "gpu-tests"), check.compile_and_gpu_tests),
              (("simulator",), check.simulator), (("neuron-kernels",), check.neuron_kernels),
              (("train-step",), check.train_step), (("kernel-host",), check.kernel_host),
              (("launch-sweep",), check.launch_sweep)]
    reported: set[str] = set()
    for steps, phase in phases:
        if steps == ("install",) or set(steps) & set(args.steps):
            try:
                phase()
            except Exception as exc:  # a fault in the driver's own reading of a step stops that step alone
                check.records.setdefault(steps[-1], {}).update(
                    status="error", note=f"gpu_check.py: {type(exc).__name__}: {exc}",
                    log_tail=traceback.format_exc()[-3000:])
            for name in [n for n in check.records if n not in reported]:
                record = check.records[name]
                reported.add(name)
                print(f"  {name:15s} {record['status']:10s} {record.get('seconds', 0):6.1f} s  "
                      f"{record.get('note', '')}", flush=True)
                if record["status"] not in ("passed", "not run"):
                    print("    " + "\n    ".join(record.get("log_tail", "").splitlines()[-12:]), flush=True)
            check.save(complete=False)
    status = check.save(complete=True)
    check.log.close()
    shutil.rmtree(check.scratch, ignore_errors=True)
    print()
    print((args.out / "gpu_check.md").read_text())
    failed = [f"{step}: {failure}" for step, r in check.records.items() if r["status"] == "failed"
              for failure in r.get("failures", ["failed"])]
    if failed:
        print("equality checks failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    elif status:
        print("no equality check failed, but not every step completed (see the table)", file=sys.stderr)
    print(f"results: {args.out}; exit status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
