"""The fused kernels (spikefold.train.kernels) equal the eager reference, values and gradients, for every neuron
type and option; input layouts and precisions; torch.compile; DDP; and the backend choice fails or falls back
by name, never silently.

Without a GPU the kernels run on Triton's CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1) on small
shapes; on a CUDA machine the kernels are compiled, the interpreter tests skip, and the tests marked gpu repeat
the comparisons on the device at larger shapes.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from spikefold.core.errors import ConfigError
from spikefold.train import kernels, surrogates
from spikefold.train.loop import TrainConfig, join_torchrun, train
from spikefold.train.models import ModelConfig, build_model
from spikefold.train.neurons import NeuronConfig, SpikingNeuron, build
from spikefold.train.neurons.base import RecurrenceForm
from spikefold.train.probes import ActivityProbe
from tests import ddp

HAS_CUDA = torch.cuda.is_available()
INTERPRETER = kernels.triton_installed() and not HAS_CUDA and kernels.interpreting()
interpreter = pytest.mark.skipif(not INTERPRETER, reason="needs Triton's interpreter: Triton installed, no GPU "
                                 "(with a GPU the kernels are compiled and the gpu tests check them)")
needs_gpu = pytest.mark.skipif(not (HAS_CUDA and kernels.triton_installed()), reason="needs a CUDA device and Triton")

# (kind, options, training mode): every reset, surrogate shape, learnable parameter and mode each type has
CASES = [
    *[("lif", {"learn_beta": True, "reset": r, "surrogate": s}, True) for r in ("zero", "subtract")
      for s in surrogates.SHAPES],
    ("lif", {"learn_beta": False, "vth": 0.7, "width": 0.5}, True),
    *[("atgo", {"tgo": v}, True) for v in ("threshold", "std", "off")],
    ("atgo", {"learn_beta": False}, True),
    *[("atgo", {"tgo": v}, False) for v in ("threshold", "off")],
    ("agl", {}, True),
    ("agl", {"learn_beta": False, "vth": 0.8}, False),
    *[("mpinit_trsg", {"relative": rel, "reset": r, "surrogate": s}, True) for rel in (True, False)
      for r in ("subtract", "zero") for s in ("rectangular", "arctan")],
    ("mpinit_trsg", {"surrogate": "triangular", "mp_init": False}, True),
    ("mpinit_trsg", {"surrogate": "sigmoid"}, False),
    *[("psg_pda", {"surrogate": s, "learn_beta": True}, True) for s in ("sigmoid", "arctan")],
    ("psg_pda", {"learn_width": False, "pda_weight": 0.0}, True),
    ("psg_pda", {"surrogate": "arctan"}, False),
]


def _case_id(case) -> str:
    kind, options, training = case
    return "-".join([kind, "train" if training else "eval", *(f"{k}={v}" for k, v in options.items())])


def _pair(kind: str, options: dict, training: bool, steps: int, channels: int, device: str):
    """(eager reference, the same layer on the kernels) with parameters and statistics away from their
    initial values, so that every gradient path carries something."""
    torch.manual_seed(1)
    ref = build(NeuronConfig(kind, options), steps).to(device).train(training)
    if kind == "agl":
        norm = torch.nn.BatchNorm1d(channels).to(device)
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        ref.bind_norm(norm)
    with torch.no_grad():
        if kind == "atgo":
            ref.running_threshold.copy_(torch.linspace(0.6, 1.4, steps))
        if kind == "mpinit_trsg":
            ref.initial_potential.fill_(0.3)
            ref.vthr_raw.add_(0.4)
    fast = copy.deepcopy(ref)  # deep-copies the bound BatchNorm too: same gamma
    return _only(ref, "eager"), _only(fast, "triton")


def _only(module: torch.nn.Module, backend: str) -> torch.nn.Module:
    """Put every neuron layer in ``module`` on ``backend`` ("eager" or "triton") and make it fail if it runs the
    other path, so a comparison cannot pass by silently comparing a path with itself (on a GPU, "auto" would
    put the reference on the kernels too)."""
    other = "forward_fused" if backend == "eager" else "forward_eager"
    for layer in [m for m in module.modules() if isinstance(m, SpikingNeuron)]:
        layer.backend = backend
        setattr(layer, other, lambda currents: pytest.fail(f"this layer must run on the {backend} path"))
    return module


def _drive(neuron, currents, upstream):
    """One forward and backward; (output, gradient of the input, loss)."""
    currents = currents.detach().requires_grad_()
    out = neuron(currents)
    loss = (out.float() * upstream).sum()
    if neuron.auxiliary_loss is not None:
        loss = loss + neuron.auxiliary_loss
    loss.backward()
    return out.detach(), currents.grad, loss.detach()


def compare(kind, options, training, shape, device, dtype=torch.float32, layout=None):
    """Kernel against reference on currents of ``shape`` (T, batch, channels, ...). ``layout``: None
    (contiguous), "channels_last", "static" (one slice repeated over T, as direct input is) or "strided"
    (every other element of a larger tensor). With bf16 input the reference runs on the same values in fp32
    (the kernels' recurrence is fp32)."""
    steps, channels = shape[0], shape[2]
    ref, fast = _pair(kind, options, training, steps, channels, device)
    gen = torch.Generator(device="cpu").manual_seed(2)
    scale = 2.0 if kind == "mpinit_trsg" else 1.5  # MP-Init's 1/tau input gain halves the drive
    currents = (torch.randn(shape, generator=gen) * scale + 0.4).to(device)
    if layout == "static":
        currents = currents[:1].expand(shape)
    elif layout == "channels_last":
        currents = currents.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, shape[:2])
    elif layout == "strided":  # every other element of a larger tensor: no dense view of x[t] exists
        currents = torch.stack([currents, -currents], dim=-1)[..., 0]
    upstream = torch.randn(shape, generator=gen).to(device).to(dtype).float()  # exact in the input's dtype
    fast_in = currents.to(dtype)
    ref_in = fast_in.float()
    ref_out, ref_grad, ref_loss = _drive(ref, ref_in, upstream)
    out, grad, loss = _drive(fast, fast_in, upstream)

    assert out.dtype == dtype and grad.dtype == dtype
    assert 0.0 < float((ref_out != 0).float().mean()) < 1.0, "the case must spike, but not everywhere"
    torch.testing.assert_close(out != 0, ref_out != 0, rtol=0, atol=0)  # every spike
    exact = dtype == torch.float32
    per_element = {"rtol": 1e-4, "atol": 1e-5} if exact else {"rtol": 1e-2, "atol": 1e-2}
    # Sums over every element (loss, parameter gradients) add in another order: their rounding grows with the
    # square root of the count.
    summed = {"rtol": 1e-4, "atol": 1e-5 * max(1.0, (ref_out.numel() / 1000) ** 0.5)} if exact else per_element
    # Values (Vthr S for TrSG): exact in fp32; in bf16 to one rounding, since Triton's interpreter truncates
    # fp32 to bf16 where the GPU, like PyTorch, rounds to nearest.
    torch.testing.assert_close(out.float(), ref_out.to(dtype).float(), **({"rtol": 0, "atol": 0} if exact else
                                                                           per_element))
    torch.testing.assert_close(grad.float(), ref_grad.to(dtype).float(), **per_element)
    assert float(ref_grad.abs().sum()) > 0
    torch.testing.assert_close(loss, ref_loss, **summed)
    learnable = [(name, p) for name, p in ref.named_parameters() if p.requires_grad]
    for (name, p), q in zip(learnable, [q for _, q in fast.named_parameters() if q.requires_grad], strict=True):
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, **summed, msg=lambda m: f"d/d {name}: {m}")
    for (name, b), (_, c) in zip(ref.named_buffers(), fast.named_buffers(), strict=True):
        torch.testing.assert_close(c, b, msg=lambda m: f"{name}: {m}")
    return ref, fast


@interpreter
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_kernel_equals_eager_on_interpreter(case):
    compare(*case, shape=(4, 2, 3, 50), device="cpu")  # 300 neurons: three programs, the last one partial


SHORT_SEQUENCE_KINDS = [("lif", {"learn_beta": True, "reset": "subtract"}), ("atgo", {}),
                        ("mpinit_trsg", {"reset": "zero"})]


@interpreter
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("kind,options", SHORT_SEQUENCE_KINDS)
def test_kernels_run_sequences_shorter_than_their_pipeline(kind, options, steps):
    """The backward reads H(t - 1), which does not exist at t = 0, and at T = 1 its first row is its last."""
    compare(kind, options, True, shape=(steps, 2, 3, 50), device="cpu")


@interpreter
def test_constants_first_made_for_inference_serve_training():
    """The kernels' constant inputs (a threshold, a width given as a number) are kept, one tensor per value and
    device: the first made while evaluating under inference_mode must still serve a training step after it,
    which saves them for its backward, and the values and gradients stay the eager path's."""
    kernels._kept_constant.cache_clear()
    options = {"learn_beta": True, "vth": 0.61, "width": 0.83}  # values no other test keeps
    ref, fast = _pair("lif", options, True, 4, 3, "cpu")
    currents = torch.randn(4, 2, 3, 5, generator=torch.Generator().manual_seed(3)) + 0.5
    with torch.inference_mode():
        evaluated = fast(currents)
    assert kernels._kept_constant.cache_info().currsize > 0
    upstream = torch.randn(currents.shape, generator=torch.Generator().manual_seed(4))
    ref_out, ref_grad, _ = _drive(ref, currents, upstream)
    out, grad, _ = _drive(fast, currents, upstream)
    assert torch.equal(evaluated, out) and torch.equal(out, ref_out)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.beta_logit.grad, ref.beta_logit.grad, rtol=1e-4, atol=1e-5)


@interpreter
def test_atgo_programs_walk_several_blocks(monkeypatch):
    """DS-ATGO's step kernel is given at most as many programs as the GPU holds at once; on a layer larger
    than that each program walks several blocks (here one program, three blocks, the last one partial) and
    its sums still make every timestep's threshold."""
    from spikefold.train.kernels import ops

    monkeypatch.setattr(ops, "resident_programs", lambda device: 1)
    compare("atgo", {}, True, shape=(4, 2, 5, 250), device="cpu")


@interpreter
@pytest.mark.parametrize("kind,options", [("lif", {"learn_beta": True, "reset": "subtract"}),
                                          ("mpinit_trsg", {}), ("psg_pda", {"learn_beta": True})])
@pytest.mark.parametrize("layout", ["channels_last", "static", "strided"])
def test_kernel_takes_conv_layouts_and_direct_input(kind, options, layout):
    compare(kind, options, True, shape=(3, 2, 5, 4, 6), device="cpu", layout=layout)


@interpreter
@pytest.mark.parametrize("kind,options", [("lif", {"learn_beta": True}), ("atgo", {}), ("mpinit_trsg", {}),
                                          ("psg_pda", {"learn_beta": True})])
def test_kernel_takes_bf16_and_keeps_its_state_in_fp32(kind, options):
    compare(kind, options, True, shape=(4, 2, 3, 50), device="cpu", dtype=torch.bfloat16)


def _assert_same_gradients(ref: torch.nn.Module, fast: torch.nn.Module, rtol: float, atol: float) -> None:
    """Both models gave a gradient to the same parameters, at least one, and the gradients agree."""
    compared = 0
    for (name, p), (_, q) in zip(ref.named_parameters(), fast.named_parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
            compared += 1
    assert compared > 0


def _tiny_vgg(kind: str, steps: int = 3) -> ModelConfig:
    return ModelConfig(arch="vgg", input_shape=(2, 8, 8), classes=5, timesteps=steps, neuron=NeuronConfig(kind),
                       norm="tdbn" if kind == "agl" else "bn", plan=(8, "A", 8, "A"))


@interpreter
@pytest.mark.parametrize("kind", ["lif", "atgo", "agl", "mpinit_trsg", "psg_pda"])
def test_model_on_kernels_equals_eager_in_channels_last(kind):
    """A whole conv net, NHWC, training mode: same logits, every parameter gradient, every running statistic."""
    torch.manual_seed(0)
    ref = build_model(_tiny_vgg(kind)).train().to(memory_format=torch.channels_last)
    fast = _only(copy.deepcopy(ref), "triton")
    _only(ref, "eager")
    x = torch.rand(3, 2, 8, 8).contiguous(memory_format=torch.channels_last)
    for model in (ref, fast):
        logits = model(x)
        (logits.logsumexp(1).mean() + (model.auxiliary_loss() or 0)).backward()
    torch.testing.assert_close(fast(x), ref(x))
    _assert_same_gradients(ref, fast, rtol=1e-4, atol=1e-6)
    for (name, b), (_, c) in zip(ref.named_buffers(), fast.named_buffers(), strict=True):
        torch.testing.assert_close(c, b, msg=lambda m: f"{name}: {m}")


def _custom_ops_ran(run) -> set[str]:
    """The spikefold custom ops ``run()`` went through, by the profiler's record of the operators it ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return {e.name for e in prof.events() if e.name.startswith("spikefold::")}


@interpreter
@pytest.mark.parametrize("kind", ["lif", "atgo", "agl", "mpinit_trsg", "psg_pda"])
def test_direct_calls_equal_the_custom_ops_to_the_bit(kind, monkeypatch):
    """Outside torch.compile a layer calls the kernels' functions through a plain autograd.Function, with less
    host work than the custom ops' dispatch; through the custom ops (as torch.compile runs them) every output,
    gradient and statistic is the same, to the bit."""
    from spikefold.train.kernels import ops

    _, direct = _pair(kind, {"learn_beta": True} if kind in ("lif", "psg_pda") else {}, True, 3, 40, "cpu")
    through_ops = copy.deepcopy(direct)
    x = torch.randn(3, 2, 40) * 1.5 + 0.4
    upstream = torch.randn(3, 2, 40)
    got = {}
    assert _custom_ops_ran(lambda: got.update(direct=_drive(direct, x, upstream))) == set()
    monkeypatch.setattr(ops, "lif", ops.lif_forward)
    monkeypatch.setattr(ops, "atgo", ops.atgo_adaptive_forward)
    assert _custom_ops_ran(lambda: got.update(ops=_drive(through_ops, x, upstream)))
    for a, b in zip(got["direct"], got["ops"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    learnable = [(name, p, q) for (name, p), (_, q) in zip(direct.named_parameters(), through_ops.named_parameters())
                 if p.requires_grad]
    assert learnable
    for name, p, q in learnable:
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=lambda m: f"d/d {name}: {m}")
    for (name, b), (_, c) in zip(direct.named_buffers(), through_ops.named_buffers()):
        torch.testing.assert_close(b, c, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")


@interpreter
def test_kernel_host_benchmark_runs(tmp_path):
    """benchmarks/kernel_host.py (host work per fused call, launches stubbed) runs and records every path."""
    out = tmp_path / "host.json"
    done = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "benchmarks" / "kernel_host.py"),
                           "--dry-run", "--kinds", "lif", "atgo", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["kind"] for r in rows] == ["lif", "atgo"]
    assert all(r[path] > 0 for r in rows for path in ("direct", "custom-op", "eager"))
    assert "direct / custom-op" in done.stdout


@interpreter
@pytest.mark.parametrize("kind", ["lif", "atgo"])
def test_torch_compile_keeps_the_kernels_whole(kind):
    """The kernels are custom ops: Dynamo and AOTAutograd trace the layer around them in one graph."""
    torch._dynamo.reset()
    ref, fast = _pair(kind, {"learn_beta": True} if kind == "lif" else {}, True, 3, 40, "cpu")
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 2, 40) * 1.5 + 0.4
    upstream = torch.randn(3, 2, 40)
    expected = _drive(ref, x, upstream)
    got = _drive(compiled, x, upstream)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.beta_logit.grad, ref.beta_logit.grad, rtol=1e-4, atol=1e-5)


def _ddp_work(rank: int, world: int, folder: str, device: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(rank)
    stats = {}
    for kind in ("atgo", "mpinit_trsg"):
        x = (torch.randn(3, 4, 40) * (rank + 1) + 0.5 * rank).to(device)  # each rank its own data
        layers = {}
        for backend in ("eager", "triton"):
            torch.manual_seed(0)
            neuron = _only(build(NeuronConfig(kind), 3).to(device).train(), backend)
            neuron(x)
            layers[backend] = [b.tolist() for b in neuron.buffers()]
        torch.testing.assert_close(layers["triton"], layers["eager"])
        stats[kind] = layers["triton"]
    with open(f"{folder}/rank{rank}.json", "w") as f:
        json.dump(stats, f)


def ddp_statistics_agree(folder, device: str) -> None:
    """Two processes, each its own data: the running statistics on the kernels equal the eager path's in each
    process and agree across them (the kernels' path all-reduces them as the eager one does)."""
    ddp.spawn(_ddp_work, 2, str(folder), device)
    a = json.loads((folder / "rank0.json").read_text())
    b = json.loads((folder / "rank1.json").read_text())
    assert a == b and a["atgo"][0] != [1.0, 1.0, 1.0]


@interpreter
def test_ddp_statistics_on_kernels_match_eager_and_agree_across_processes(tmp_path):
    ddp_statistics_agree(tmp_path, "cpu")


@pytest.mark.skipif(not kernels.triton_installed(), reason="needs Triton")
def test_kernels_compile_for_h100_without_a_gpu():
    """The kernel variants through Triton's compiler to sm_90 cubins, and the PTX keeps the arithmetic the equality
    with the eager path rests on (tests/compile_kernels.py): every forward flag combination in fp32 and bf16, every
    backward dynamics combination per surrogate, the three ATGO step modes with and without DDP, each as Triton
    specialises aligned tensors and without. The aligned cubins use 128-bit accesses and fit the planned programs
    per multiprocessor. Not a run: GPU results are the gpu tests'."""
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "compile_kernels.py")], capture_output=True,
                          text=True, env={**os.environ, "TRITON_INTERPRET": "0"})
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    from spikefold.train.kernels import triton_lif

    variants = 2**6 * 2 + 2**4 * len(triton_lif.SURROGATES) + 3 * 2
    assert report["compiled"] == 2 * variants and not report["failures"]  # aligned and unaligned


TORCHRUN_SCRIPT = """
import dataclasses, json, sys
import torch.distributed as dist
from spikefold.train.data import digits
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig
from spikefold.train.neurons import NeuronConfig

# 257 samples in batches of 128: the last holds one sample, too few for two ranks; both must drop it alike
data = digits()
data = dataclasses.replace(data, x_train=data.x_train[:257], y_train=data.y_train[:257])
result = train(ModelConfig(hidden=(24,), timesteps=2, neuron=NeuronConfig(sys.argv[2])),
               TrainConfig(epochs=1, batch_size=128, backend="triton"), data)
stats = {k: v.tolist() for k, v in result.model.named_buffers() if "threshold" in k or "initial_potential" in k}
with open(f"{sys.argv[1]}/rank{dist.get_rank()}.json", "w") as f:
    json.dump({"world": dist.get_world_size(), "stats": stats}, f)
"""


@interpreter
def test_torchrun_trains_on_the_kernels_with_synchronised_statistics(tmp_path, kind="atgo"):
    """train() joins torchrun's process group by itself; the two processes end with the same statistics (DS-ATGO:
    an all-reduce inside the kernels' op at every timestep) and do not hang on a batch one rank has no share of."""
    script = tmp_path / "job.py"
    script.write_text(TORCHRUN_SCRIPT)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={ddp.free_port()}", str(script), str(tmp_path), kind], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["world"] == b["world"] == 2
    assert a["stats"] and a["stats"] == b["stats"]


# --- choosing the path -----------------------------------------------------------------------------------------

def test_backend_names_are_checked():
    neuron = build(NeuronConfig("lif"), 2)
    with pytest.raises(ConfigError, match="unknown neuron backend 'cuda'; valid: auto, eager, triton"):
        neuron.backend = "cuda"
    with pytest.raises(ConfigError, match="unknown neuron backend 'fast'"):
        TrainConfig.from_dict({"backend": "fast"})
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; valid: fp32, bf16"):
        TrainConfig.from_dict({"precision": "fp16"})


def test_torchrun_with_another_process_s_gpu_is_a_named_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=r"LOCAL_RANK 1, on cuda:1\), but the device is 'cuda:0'; use --device cuda"):
        join_torchrun(torch.device("cuda", 0))


def test_auto_runs_eagerly_on_cpu():
    assert not kernels.fused("auto", torch.randn(2, 3))
    assert not kernels.fused("eager", torch.randn(2, 3))


def test_triton_without_a_gpu_is_a_named_error(monkeypatch, split):
    monkeypatch.setattr(kernels, "interpreting", lambda: False)
    monkeypatch.setattr(kernels, "triton_installed", lambda: True)
    neuron = build(NeuronConfig("lif"), 2)
    neuron.backend = "triton"
    with pytest.raises(ConfigError, match="neuron backend 'triton' needs a CUDA device; this run is on 'cpu'"):
        neuron(torch.randn(2, 3, 4))
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        train(ModelConfig(hidden=(8,)), TrainConfig(epochs=1, backend="triton", device="cpu"), split)
    monkeypatch.setattr(kernels, "triton_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"needs the Triton package: pip install 'spikefold\[gpu\]'"):
        neuron(torch.randn(2, 3, 4))


@interpreter
def test_unsupported_dtype_and_configuration_are_named_or_fall_back(monkeypatch):
    neuron = build(NeuronConfig("lif"), 2)
    neuron.backend = "triton"
    with pytest.raises(ConfigError, match="'triton' cannot run this layer's input: the kernels take torch.float32, "
                       "torch.bfloat16, torch.float16, not torch.float64; use backend 'eager'"):
        neuron(torch.randn(2, 3, 4, dtype=torch.float64))
    huge = torch.zeros(1, dtype=torch.bfloat16).as_strided((2, 2**31), (0, 0))  # one element seen 2^32 times
    with pytest.raises(ConfigError, match="2147483648 neurons per timestep overflow the kernels' 32-bit"):
        neuron(huge)
    # The last program's indices run a block past N: N within a block of 2^31 is refused too.
    with pytest.raises(ConfigError, match=f"{kernels.MAX_NEURONS + 1} neurons per timestep overflow"):
        neuron(huge[:, : kernels.MAX_NEURONS + 1])
    with pytest.raises(ValueError, match="reset is one of zero, subtract, got 'hard'"):
        RecurrenceForm(decay=0.5, threshold=1.0, width=1.0, reset="hard", surrogate="rectangular")
    learnt = torch.tensor(0.3, requires_grad=True)
    with pytest.raises(ValueError, match="no gradient to the initial potential"):
        kernels.lif_sequence(torch.randn(2, 3, 4), RecurrenceForm(decay=0.5, threshold=1.0, width=1.0, reset="zero",
                                                                  surrogate="rectangular", initial=learnt))
    monkeypatch.setattr(kernels, "_warned", set())
    ref = build(NeuronConfig("atgo", {"tgo": "std"}), 2).eval()
    fast = copy.deepcopy(ref)
    fast.backend = "triton"
    x = torch.randn(2, 3, 8, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="eager .* atgo in eval mode with tgo='std' and gradients enabled"):
        out = fast(x)
    torch.testing.assert_close(out, ref(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the fallback warning; not a dependency's deprecations
        with torch.no_grad():  # without gradients the width is unused: the kernel runs, no warning
            assert kernels.fused(fast.backend, x, fast.kernel_unsupported())
            torch.testing.assert_close(fast(x), ref(x))


@interpreter
def test_probes_see_the_eager_path(monkeypatch):
    neuron = build(NeuronConfig("lif"), 2)
    neuron.backend = "triton"
    monkeypatch.setattr(neuron, "forward_fused", lambda currents: pytest.fail("a probed layer must run eagerly"))
    probe = ActivityProbe()
    with probe.attached(neuron):
        neuron(torch.randn(2, 3, 4) + 1)
    assert probe.summary()[""]["firing_rate_mean"] > 0


def test_bf16_autocast_and_channels_last_train_a_conv_net(split):
    """The training loop's precision and layout options (eager path on CPU): loss falls, weights stay fp32."""
    data = type(split)(split.x_train.reshape(-1, 1, 8, 8), split.y_train, split.x_test.reshape(-1, 1, 8, 8),
                       split.y_test)
    cfg = ModelConfig(arch="vgg", input_shape=(1, 8, 8), classes=10, timesteps=2, plan=(16, "A", 32, "A"))
    seen = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            seen.add((output.dtype, output.is_contiguous(memory_format=torch.channels_last)))

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = train(cfg, TrainConfig(epochs=2, batch_size=128, precision="bf16", channels_last=True), data)
    finally:
        hook.remove()
    assert seen == {(torch.bfloat16, True)}, f"training convolutions ran as {seen}"
    assert result.history[1]["loss"] < result.history[0]["loss"]
    assert result.test_accuracy > 0.5
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


@pytest.mark.slow  # Inductor compiles for the CPU with a C++ compiler: about 40 s on 2 cores
def test_compiled_training_loop_trains(split):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    result = train(ModelConfig(hidden=(32,), timesteps=2), TrainConfig(epochs=1, compile=True), split)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert result.test_accuracy > 0.5


# --- the same on a GPU, at larger shapes -------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_kernel_equals_eager_on_gpu(case):
    compare(*case, shape=(8, 15, 63, 35), device="cuda")  # 33 075 neurons: not a multiple of any block size


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("kind", ["lif", "atgo", "mpinit_trsg", "psg_pda"])
@pytest.mark.parametrize("layout,dtype", [("channels_last", torch.float32), ("static", torch.float32),
                                          (None, torch.bfloat16), ("channels_last", torch.bfloat16)])
def test_kernel_layouts_and_bf16_on_gpu(kind, layout, dtype):
    compare(kind, {}, True, shape=(4, 31, 64, 15, 15), device="cuda", dtype=dtype, layout=layout)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kind,options", SHORT_SEQUENCE_KINDS)
def test_kernels_run_sequences_around_their_pipeline_depth_on_gpu(kind, options, steps):
    """Triton's pipeline fetches ops.PIPELINE_STAGES - 1 timesteps ahead: sequences shorter than it,
    as long and longer, on aligned rows (32 768 neurons) that load by 16-byte asynchronous copies."""
    compare(kind, options, True, shape=(steps, 16, 64, 32), device="cuda")


@pytest.mark.gpu
@needs_gpu
def test_atgo_programs_walk_several_blocks_on_gpu():
    compare("atgo", {}, True, shape=(3, 41, 128, 16, 16), device="cuda")  # 1.3 M neurons: 4 to 5 blocks a program


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("kind", ["lif", "atgo", "agl", "mpinit_trsg", "psg_pda"])
def test_compiled_model_on_kernels_equals_eager_on_gpu(kind):
    """Inductor compiles the model around the kernels' custom ops; bf16 autocast and NHWC as in training."""
    torch.manual_seed(0)
    torch._dynamo.reset()  # a fresh cache: past Dynamo's recompile limit it would quietly run eagerly
    ref = build_model(_tiny_vgg(kind, 4)).cuda().train().to(memory_format=torch.channels_last)
    fast = _only(copy.deepcopy(ref), "triton")
    _only(ref, "eager")
    compiled = torch.compile(fast)
    x = torch.rand(8, 2, 8, 8, device="cuda").contiguous(memory_format=torch.channels_last)
    for model in (ref, compiled):
        model(x).logsumexp(1).mean().backward()
    _assert_same_gradients(ref, fast, rtol=1e-3, atol=1e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = compiled(x).logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.gpu
@needs_gpu
def test_ddp_statistics_on_kernels_on_gpu(tmp_path):
    ddp_statistics_agree(tmp_path, "cuda")


@pytest.mark.gpu
@needs_gpu
def test_auto_falls_back_with_one_warning_for_float64_on_gpu(monkeypatch):
    monkeypatch.setattr(kernels, "_warned", set())
    ref = build(NeuronConfig("lif"), 3).cuda().double()
    x = torch.randn(3, 4, 5, device="cuda", dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="not torch.float64"):
        out = ref(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref(x)  # once only
    ref.backend = "eager"
    torch.testing.assert_close(out, ref(x))


def test_kernels_import_without_the_neurons():
    """The neurons use the kernels, never the other way round: the kernels (their custom ops too, where Triton is
    installed) import neither the neuron package nor any neuron type."""
    code = ("import sys, importlib.util\n"
            "import spikefold.train.kernels\n"
            "if importlib.util.find_spec('triton'):\n"
            "    import spikefold.train.kernels.ops\n"
            "print(sorted(m for m in sys.modules if m.startswith('spikefold.train.neurons')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
