"""Compile every fused kernel for an H100 (sm_90) with the installed Triton, no GPU needed (Triton ships LLVM
and ptxas), and check the PTX for what the kernels' equality with the eager path rests on: no fused
multiply-add in the forward (two roundings, as two PyTorch ops), IEEE division where a division decides a
spike, round-to-nearest conversion to bf16. Prints one JSON object; exits 1 when a check fails.

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
TYPES = {"moments_ptr": "*fp64", "moments_grad_ptr": "*fp64", "sums_ptr": "*fp64", "fired_ptr": "*i8",
         "x_ptr": "*bf16", "out_ptr": "*bf16", "grad_out_ptr": "*bf16", "grad_x_ptr": "*bf16",
         "last_row": "i64", "last_grad_out_row": "i64", "last_x_row": "i64"}


def compile_ptx(kernel, constexprs: dict, warps: int) -> str:
    signature = {name: "constexpr" if name in constexprs else TYPES.get(name, "*fp32" if name.endswith("_ptr")
                                                                        else "i32")
                 for name in kernel.arg_names}
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=H100, options={"num_warps": warps, **triton_lif.LAUNCH})
    assert compiled.asm["cubin"], "no cubin"
    return compiled.asm["ptx"]


def main() -> int:
    compiled, failures = 0, []
    forward_flags = ("HARD_RESET", "RELATIVE", "SCALE_OUTPUT", "SAVE_H", "FINAL", "MOMENTS")
    for values in itertools.product((False, True), repeat=2):  # each flag off and on, in two groups
        flags = {name: values[i % 2] for i, name in enumerate(forward_flags)}
        ptx = compile_ptx(triton_lif.lif_forward_kernel, {**flags, "BLOCK": 1024}, 8)
        compiled += 1
        if re.search(r"\bfma\.rn\.f32\b", ptx):
            failures.append(f"forward {flags}: fused multiply-add in the PTX")
        if flags["RELATIVE"] and "div.rn.f32" not in ptx:
            failures.append(f"forward {flags}: the spike's division is not IEEE-rounded")
        if "cvt.rn.bf16.f32" not in ptx:
            failures.append(f"forward {flags}: bf16 output not rounded to nearest")
    backward_flags = ("HARD_RESET", "RELATIVE", "SCALE_OUTPUT", "MOMENTS", "DECAY_GRAD", "GAIN_GRAD", "THR_GRAD",
                      "WIDTH_GRAD", "SCALE_GRAD")
    for shape, on in itertools.product(range(len(triton_lif.SURROGATES)), (False, True)):
        compile_ptx(triton_lif.lif_backward_kernel, {**dict.fromkeys(backward_flags, on), "SHAPE": shape,
                                                     "BLOCK": 128}, 1)
        compiled += 1
    for spike, integrate in ((False, True), (True, True), (True, False)):
        compile_ptx(triton_lif.adaptive_step_kernel, {"SPIKE": spike, "INTEGRATE": integrate, "BLOCK": 512}, 4)
        compiled += 1
    print(json.dumps({"triton": triton.__version__, "target": "sm_90", "compiled": compiled, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
