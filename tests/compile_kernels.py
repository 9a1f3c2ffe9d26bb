"""Compile the fused kernels for an H100 (sm_90) with the installed Triton, no GPU needed (Triton ships LLVM and
ptxas), and check the PTX for what the kernels' equality with the eager path rests on: no fused multiply-add (two
roundings, as two PyTorch ops; the backward rebuilds each spike from H as the forward made it), IEEE division
where a division decides a spike (Triton 3.3 to 3.5 flush its subnormals: see check), round-to-nearest conversion
to bf16; in DS-ATGO's step kernel, IEEE float64 division and square root for the threshold, as PyTorch computes
it.

Variants: the forward with every combination of its six flags, with fp32 and with bf16 input and output (128);
the backward with every combination of its four dynamics flags for each surrogate, the gradient flags all on or
all off and the I/O dtype alternating (64); DS-ATGO's step kernel in its three modes, its sums reduced in the
kernel or by DDP (6). Prints one JSON object; exits 1 when a check fails.

Run in its own process with TRITON_INTERPRET=0 (tests/test_kernels.py does): the interpreter's kernels cannot
be compiled.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys

os.environ["TRITON_INTERPRET"] = "0"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from spikefold.train.kernels import triton_lif  # noqa: E402

H100 = GPUTarget("cuda", 90, 32)
TYPES = {"moments_ptr": "*fp64", "moments_grad_ptr": "*fp64", "sums_ptr": "*fp64", "totals_ptr": "*fp64",
         "constants_ptr": "*fp64", "fired_ptr": "*i8",
         "last_row": "i64", "last_grad_out_row": "i64", "last_x_row": "i64"}
IO = ("x_ptr", "out_ptr", "grad_out_ptr", "grad_x_ptr")  # the input's dtype; state and H are fp32


def compile_ptx(kernel, constexprs: dict, warps: int, io: str = "fp32") -> str:
    types = {**TYPES, **dict.fromkeys(IO, f"*{io}")}
    signature = {name: "constexpr" if name in constexprs else types.get(name, "*fp32" if name.endswith("_ptr")
                                                                        else "i32")
                 for name in kernel.arg_names}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=H100, options={"num_warps": warps, **triton_lif.LAUNCH})
    assert compiled.asm["cubin"], "no cubin"
    return compiled.asm["ptx"]


def main() -> int:
    compiled, failures = 0, []

    def check(what: str, ptx: str, relative: bool, io: str) -> None:
        if re.search(r"\bfma\.rn\.f32\b", ptx):
            failures.append(f"{what}: fused multiply-add in the PTX")
        # Triton 3.3 to 3.5 emit div.rn.ftz.f32: subnormal operands and quotients become 0. For a threshold of
        # at least 2^-126 (MP-Init's softplus gives less only for a raw value below about -87), H / threshold - 1
        # is the same float either way: a quotient below 2^-126 minus 1 rounds to -1, as 0 - 1 does.
        if relative and not re.search(r"\bdiv\.rn(\.ftz)?\.f32\b", ptx):
            failures.append(f"{what}: the spike's division is not IEEE-rounded")
        if io == "bf16" and "cvt.rn.bf16.f32" not in ptx:
            failures.append(f"{what}: bf16 output not rounded to nearest")

    forward_flags = ("HARD_RESET", "RELATIVE", "SCALE_OUTPUT", "SAVE_H", "FINAL", "MOMENTS")
    for values in itertools.product((False, True), repeat=len(forward_flags)):
        flags = dict(zip(forward_flags, values))
        for io in ("fp32", "bf16"):
            ptx = compile_ptx(triton_lif.lif_forward_kernel, {**flags, "BLOCK": 1024}, 8, io)
            compiled += 1
            check(f"forward {io} {flags}", ptx, flags["RELATIVE"], io)
    dynamics = ("HARD_RESET", "RELATIVE", "SCALE_OUTPUT", "MOMENTS")
    grads = ("DECAY_GRAD", "GAIN_GRAD", "THR_GRAD", "WIDTH_GRAD", "SCALE_GRAD")
    for k, (values, shape) in enumerate(itertools.product(itertools.product((False, True), repeat=len(dynamics)),
                                                          range(len(triton_lif.SURROGATES)))):
        flags = {**dict(zip(dynamics, values)), **dict.fromkeys(grads, k % 2 == 0)}
        io = ("fp32", "bf16")[k // 2 % 2]
        ptx = compile_ptx(triton_lif.lif_backward_kernel, {**flags, "SHAPE": shape, "BLOCK": 128}, 1, io)
        compiled += 1
        check(f"backward {io} {triton_lif.SURROGATES[shape]} {flags}", ptx, flags["RELATIVE"], io)
    for (spike, integrate), reduced in itertools.product(((False, True), (True, True), (True, False)),
                                                         (False, True)):
        modes = {"SPIKE": spike, "INTEGRATE": integrate, "REDUCED": reduced}
        ptx = compile_ptx(triton_lif.adaptive_step_kernel, {**modes, "BLOCK": 512, "ROWS": 1024}, 4)
        compiled += 1
        if re.search(r"\bfma\.rn\.f(32|64)\b", ptx):
            failures.append(f"atgo step {modes}: fused multiply-add in the PTX")
        if spike and not ("div.rn.f64" in ptx and "sqrt.rn.f64" in ptx):
            failures.append(f"atgo step {modes}: the threshold's division or square root is not IEEE-rounded")
    print(json.dumps({"triton": triton.__version__, "target": "sm_90", "compiled": compiled, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
