"""Compile the fused kernels for an H100 (sm_90) with the installed Triton, no GPU needed (Triton ships LLVM,
ptxas and cuobjdump), and check the PTX for what the kernels' equality with the eager path rests on: no fused
multiply-add (two roundings, as two PyTorch ops; the backward rebuilds each spike from H as the forward made it),
IEEE division where a division decides a spike (Triton 3.3 to 3.5 flush its subnormals: see check),
round-to-nearest conversion to bf16; in DS-ATGO's step kernel, IEEE float64 division and square root for the
threshold, as PyTorch computes it. And check the cubins for what their speed rests on: as Triton specialises a
launch whose tensors are 16-byte aligned and whose N and row offsets are multiples of 16 (the usual layer),
a pipelined timestep loop (its loads are asynchronous copies, cp.async, issued ops.PIPELINE_STAGES - 1 timesteps
ahead), 128-bit loads and stores, and registers and shared memory (the pipeline's buffers) that let
ops.PROGRAMS_PER_SM programs of the largest launch (ops.launch_shape) reside on one multiprocessor together.
Register spills are listed, not failed: ptxas decides them, differently from version to version (none with
Triton 3.3 to 3.9 since the loops are pipelined).

Variants: the forward with every combination of its six flags, with fp32 and with bf16 input and output (128);
the backward with every combination of its four dynamics flags for each surrogate, the gradient flags all on or
all off and the I/O dtype alternating (64); DS-ATGO's step kernel in its three modes, its sums reduced in the
kernel or by DDP (6). Each compiled twice: specialised as above, and without specialisation (what runs for
other shapes: scalar accesses, more registers), where only the arithmetic is checked and the fewest resident
programs reported. Prints one JSON object; exits 1 when a check fails.

Run in its own process with TRITON_INTERPRET=0 (tests/test_kernels.py does): the interpreter's kernels cannot
be compiled.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from spikefold.train.kernels import ops, triton_lif  # noqa: E402

H100 = GPUTarget("cuda", 90, 32)
# One sm_90 multiprocessor (CUDA's occupancy figures for compute capability 9.0): registers, allocated per warp
# in units of 256; warps; programs (thread blocks); shared memory in bytes, of which 1 KiB per program is the
# system's.
SM90 = {"registers": 65536, "register_unit": 256, "warps": 64, "programs": 32, "shared": 233472,
        "shared_per_program": 1024}
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
TYPES = {"moments_ptr": "*fp64", "moments_grad_ptr": "*fp64", "sums_ptr": "*fp64", "totals_ptr": "*fp64",
         "constants_ptr": "*fp64", "fired_ptr": "*i8",
         "last_row": "i64", "last_grad_out_row": "i64", "last_x_row": "i64"}
IO = ("x_ptr", "out_ptr", "grad_out_ptr", "grad_x_ptr")  # the input's dtype; state and H are fp32
# the integers Triton marks as multiples of 16 in the usual launch (the schedules' strides are 0 or 1, T any)
MULTIPLES_OF_16 = ("N", "x_row_stride", "grad_out_row_stride", "last_row", "last_grad_out_row", "last_x_row")
_, BLOCK, WARPS = ops.launch_shape(1 << 30, torch.device("cpu"))  # the largest launch: most warps per program
LOOP = {"BLOCK": BLOCK, "STAGES": ops.PIPELINE_STAGES}  # the timestep loops' constants, as ops launches them


def compile_kernel(kernel, constexprs: dict, aligned: bool, io: str = "fp32"):
    types = {**TYPES, **dict.fromkeys(IO, f"*{io}")}
    signature = {name: "constexpr" if name in constexprs else types.get(name, "*fp32" if name.endswith("_ptr")
                                                                        else "i32")
                 for name in kernel.arg_names}
    attrs = {(k,): [["tt.divisibility", 16]] for k, name in enumerate(kernel.arg_names)
             if aligned and name not in constexprs and (name.endswith("_ptr") or name in MULTIPLES_OF_16)}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(source, target=H100, options={"num_warps": WARPS, **triton_lif.LAUNCH})
    assert compiled.asm["cubin"], "no cubin"
    return compiled


def resources(compiled) -> dict[str, int]:
    """Registers per thread, local memory and stack per thread (spills), shared memory per program, and how
    many programs fit on one multiprocessor, from the cubin."""
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(CUOBJDUMP), "-res-usage", str(cubin)], capture_output=True, text=True,
                               check=True).stdout
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    registers, shared = int(fields["REG"]), int(fields["SHARED"]) + compiled.metadata.shared
    per_warp = -(-registers * 32 // SM90["register_unit"]) * SM90["register_unit"]
    fit = min(SM90["registers"] // (per_warp * WARPS), SM90["warps"] // WARPS, SM90["programs"],
              SM90["shared"] // (shared + SM90["shared_per_program"]))
    return {"registers": registers, "spilled": int(fields["LOCAL"]) + int(fields["STACK"]), "shared": shared,
            "programs_per_sm": fit}


def main() -> int:
    compiled, failures, spills, fits = 0, [], [], {True: [], False: []}

    def check(what: str, kernel, constexprs: dict, relative: bool, io: str = "fp32") -> dict[str, str]:
        """Compile one variant aligned and unaligned, check both; their PTX by name."""
        nonlocal compiled
        ptxs = {}
        for aligned in (True, False):
            binary = compile_kernel(kernel, constexprs, aligned, io)
            compiled += 1
            name = f"{what} ({'aligned' if aligned else 'unaligned'})"
            ptx = ptxs[name] = binary.asm["ptx"]
            if re.search(r"\bfma\.rn\.f(32|64)\b", ptx):
                failures.append(f"{name}: fused multiply-add in the PTX")
            # Triton 3.3 to 3.5 emit div.rn.ftz.f32: subnormal operands and quotients become 0. For a threshold
            # of at least 2^-126 (MP-Init's softplus gives less only for a raw value below about -87),
            # H / threshold - 1 is the same float either way: a quotient below 2^-126 minus 1 rounds to -1, as
            # 0 - 1 does.
            if relative and not re.search(r"\bdiv\.rn(\.ftz)?\.f32\b", ptx):
                failures.append(f"{name}: the spike's division is not IEEE-rounded")
            if io == "bf16" and not re.search(r"\bcvt\.rn\.bf16(x2)?\.f32\b", ptx):  # x2: two at once, aligned
                failures.append(f"{name}: bf16 output not rounded to nearest")
            used = resources(binary)
            fits[aligned].append(used["programs_per_sm"])
            if not aligned:
                continue
            vector = r"\b{}\.global(\.\w+)*\.v[24]\."
            # the timestep loops load through cp.async: 16 bytes a copy (8 for four bf16 values)
            vector_load = re.search(vector.format("ld"), ptx) or re.search(r"\bcp\.async\.\S+ [^;]*, 0x(8|10)\b", ptx)
            if not (vector_load and re.search(vector.format("st"), ptx)):
                failures.append(f"{name}: no vector loads and stores")
            if "STAGES" in constexprs and "cp.async.commit_group" not in ptx:
                failures.append(f"{name}: the timestep loop is not pipelined (no cp.async), so every timestep "
                                f"waits out a memory latency")
            if used["spilled"]:  # reported, not failed: ptxas's choice, and it varies with its version
                spills.append(f"{name}: {used['spilled']} bytes per thread of local memory")
            if used["programs_per_sm"] < ops.PROGRAMS_PER_SM:
                failures.append(f"{name}: {used['registers']} registers per thread and {used['shared']} bytes of "
                                f"shared memory let {used['programs_per_sm']} programs of {WARPS} warps reside on "
                                f"a multiprocessor; launch_shape plans for {ops.PROGRAMS_PER_SM}")
        return ptxs

    forward_flags = ("ZERO_RESET", "RELATIVE", "SCALE_OUTPUT", "SAVE_H", "FINAL", "MOMENTS")
    for values in itertools.product((False, True), repeat=len(forward_flags)):
        flags = dict(zip(forward_flags, values))
        for io in ("fp32", "bf16"):
            check(f"forward {io} {flags}", triton_lif.lif_forward_kernel, {**flags, **LOOP}, flags["RELATIVE"], io)
    dynamics = ("ZERO_RESET", "RELATIVE", "SCALE_OUTPUT", "MOMENTS")
    grads = ("DECAY_GRAD", "GAIN_GRAD", "THR_GRAD", "WIDTH_GRAD", "SCALE_GRAD")
    for k, (values, shape) in enumerate(itertools.product(itertools.product((False, True), repeat=len(dynamics)),
                                                          range(len(triton_lif.SURROGATES)))):
        flags = {**dict(zip(dynamics, values)), **dict.fromkeys(grads, k % 2 == 0)}
        io = ("fp32", "bf16")[k // 2 % 2]
        check(f"backward {io} {triton_lif.SURROGATES[shape]} {flags}", triton_lif.lif_backward_kernel,
              {**flags, "SHAPE": shape, **LOOP}, flags["RELATIVE"], io)
    rows = triton.next_power_of_2(ops.PROGRAMS_PER_SM * 132)  # H100 SXM: 132 multiprocessors
    for (spike, integrate), reduced in itertools.product(((False, True), (True, True), (True, False)),
                                                         (False, True)):
        modes = {"SPIKE": spike, "INTEGRATE": integrate, "REDUCED": reduced}
        ptxs = check(f"atgo step {modes}", triton_lif.adaptive_step_kernel,
                     {**modes, "BLOCK": BLOCK, "ROWS": rows}, False)
        for name, ptx in ptxs.items():
            if spike and not ("div.rn.f64" in ptx and "sqrt.rn.f64" in ptx):
                failures.append(f"{name}: the threshold's division or square root is not IEEE-rounded")
    print(json.dumps({"triton": triton.__version__, "target": "sm_90", "compiled": compiled,
                      "largest_launch": {"neurons": BLOCK, "warps": WARPS},
                      "fewest_programs_per_sm": {"aligned": min(fits[True]), "unaligned": min(fits[False])},
                      "spills": spills, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
