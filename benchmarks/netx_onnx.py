"""What the digits MLP keeps when exported for lava-dl's netx, and how the ONNX export runs in onnxruntime.

netx applies no weight exponent after a synaptic sum and fixes the bias exponent at 6, so a netx export is
quantised for the ``loihi2_netx`` hw_config: every connection's exponent 0, which (with no exponent to absorb
it) also forces a coarse input scale. This trains the digits MLP (the test suite's recipe: 64-64-48-10, T = 4,
12 epochs), then reports the integer test accuracy (all 360 test samples, integer sim) of the default loihi2
export and of loihi2_netx exports at several input scales, each before and after quantisation-aware
fine-tuning through the integer forward (``--qat-epochs``). Then the loihi2 export as ONNX: onnxruntime (CPU
provider) against the simulator on the test split, spikes and readout compared, wall time of each.

    python benchmarks/netx_onnx.py [--epochs 12] [--qat-epochs 3] [--input-scales 16,8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from spikefold.export import hw_config, netx_io, onnx_io
from spikefold.export.fold import fold
from spikefold.export.quantise import quantise
from spikefold.export.qat import finetune
from spikefold.export.state_range import check_state_range
from spikefold.sim.simulator import simulate
from spikefold.train import data
from spikefold.train.loop import TrainConfig, train
from spikefold.train.models import ModelConfig


def accuracy(net, split) -> float:
    return float((simulate(net, net.input.encode(split.x_test)).predictions == split.y_test).mean())


def export_row(fnet, split, hw_name: str, input_scale, qat_epochs: int) -> dict:
    hw = hw_config.load(hw_name)
    row = {"hw_config": hw_name, "input_scale": input_scale}
    try:
        net, report = quantise(fnet, hw, split.x_train, input_scale=input_scale)
        check_state_range(net, net.input.encode(split.x_train), report)
    except Exception as exc:  # a refusal is a result here: the table says which exports cannot be made
        return row | {"refused": f"{type(exc).__name__}: {exc}"}
    row |= {"weight_exp": [c.synapses.weight_exp for layer in net.layers for c in layer.inputs],
            "integer_accuracy": accuracy(net, split)}
    if qat_epochs:
        tuned = finetune(fnet, net, hw, split.x_train, split.y_train, epochs=qat_epochs).net
        row["integer_accuracy_after_qat"] = accuracy(tuned, split)
        net = tuned
    try:
        netx_io.to_bytes(net)
        row["netx"] = "writes"
    except Exception as exc:
        row["netx"] = f"refused: {exc}"
    return row


def onnx_row(fnet, split) -> dict:
    import onnxruntime

    net, report = quantise(fnet, hw_config.load("loihi2"), split.x_train)
    x = net.input.encode(split.x_test)
    start = time.perf_counter()
    model = onnx_io.to_bytes(net)
    build_s = time.perf_counter() - start
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    session.run(None, {"x": x[:1]})  # first call allocates
    start = time.perf_counter()
    outputs = session.run(None, {"x": x})
    onnx_s = time.perf_counter() - start
    simulate(net, x[:1])
    start = time.perf_counter()
    sim = simulate(net, x)
    sim_s = time.perf_counter() - start
    differing = sum(int((o != s).sum()) for o, s in zip(outputs[:-1], sim.spikes))
    return {"samples": len(x), "model_bytes": len(model), "build_s": build_s, "onnxruntime_s": onnx_s,
            "simulator_s": sim_s, "spike_slots": sum(s.size for s in sim.spikes), "spikes_differing": differing,
            "readout_equal": bool(np.array_equal(outputs[-1], sim.readout_v))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--input-scales", default="16,8", help="input scales tried for loihi2_netx")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    split = data.digits()
    model = train(ModelConfig(hidden=(64, 48), timesteps=4), TrainConfig(epochs=args.epochs), split).model
    fnet = fold(model)
    float_acc = float((fnet.run(split.x_test)[0].argmax(1) == split.y_test).mean())
    rows = [export_row(fnet, split, "loihi2", None, args.qat_epochs)]
    rows += [export_row(fnet, split, "loihi2_netx", float(s), args.qat_epochs) for s in args.input_scales.split(",")]
    print(f"digits MLP 64-64-48-10, T=4: float test accuracy {float_acc * 100:.2f} %")
    print(f"{'hw_config':<13}{'input scale':>12}{'weight_exp':>14}{'int acc':>9}{'after QAT':>11}  netx file")
    for r in rows:
        if "refused" in r:
            print(f"{r['hw_config']:<13}{r['input_scale'] or 255:>12}  refused: {r['refused'][:90]}")
            continue
        after = r.get("integer_accuracy_after_qat")
        print(f"{r['hw_config']:<13}{r['input_scale'] or 255:>12}{str(r['weight_exp']):>14}"
              f"{r['integer_accuracy'] * 100:>8.2f}%{'' if after is None else f'{after * 100:>10.2f}%'}  "
              f"{r['netx'][:60]}")
    onnx = onnx_row(fnet, split)
    print(f"ONNX (loihi2 export, {onnx['samples']} samples, {onnx['model_bytes']} bytes): onnxruntime "
          f"{onnx['onnxruntime_s'] * 1e3:.1f} ms, simulator {onnx['simulator_s'] * 1e3:.1f} ms; "
          f"{onnx['spikes_differing']} of {onnx['spike_slots']} spike slots differ, readout equal: "
          f"{onnx['readout_equal']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "netx_onnx.json").write_text(json.dumps(
        {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
         "epochs": args.epochs, "qat_epochs": args.qat_epochs, "float_accuracy": float_acc, "exports": rows,
         "onnx": onnx}, indent=2))
    print(f"wrote {out / 'netx_onnx.json'}")


if __name__ == "__main__":
    main()
