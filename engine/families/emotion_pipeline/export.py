"""ONNX export of the five networks, checked with onnxruntime as the C++ host will load them.

Each network becomes ``<OUTDIR>/<Title>.onnx`` (opset 17, batch axis dynamic, one input and one
output named as ``model.SPECS`` says), then is checked:

- ``names``: the session's input and output names are the spec's;
- ``shapes``: their shapes are ``[batch, width]`` with the spec's widths;
- ``max_diff``: on random inputs (batch 16), onnxruntime's outputs equal torch's within 1e-4;
- ``latency``: the median of 200 batch-1 CPU runs (one thread) is under 10 ms;
- ``size``: the file is under 5 MB.

The legacy TorchScript exporter is used (``dynamo=False``): the torch.export one needs
onnxscript, which the ``onnx`` extra does not carry, and these MLPs need nothing newer.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from podium.engine.errors import PodiumError
from podium.engine.families.emotion_pipeline.model import EmotionPipeline, Network
from podium.engine.families.registry import DataInfo, ExportedFile, ExportReport, Profile

MAX_DIFF = 1e-4
MAX_MS = 10.0
MAX_BYTES = 5 * 1024 * 1024
CHECKS = ("names", "shapes", "max_diff", "latency", "size")
OPSET = 17


def _runtime() -> Any:
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
        import onnxruntime
    except ImportError:
        raise PodiumError(
            "ONNX export needs onnx and onnxruntime: pip install 'podium[onnx]'"
        ) from None
    return onnxruntime


def export_network(net: Network, path: Path) -> None:
    spec = net.spec
    dummy = torch.zeros(2, spec.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            net,
            (dummy,),
            str(path),
            dynamo=False,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes={spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}},
            opset_version=OPSET,
        )


def check_network(net: Network, path: Path, ort: Any, seed: int) -> ExportedFile:
    """Runs every check on one exported network; the failures say what was found."""
    spec = net.spec
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the host runs each network on its own audio-side thread
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    failed: dict[str, str] = {}
    names = ([i.name for i in inputs], [o.name for o in outputs])
    if names != ([spec.input_name], [spec.output_name]):
        failed["names"] = (
            f"inputs {names[0]}, outputs {names[1]}; expected {spec.input_name} -> {spec.output_name}"
        )
    shapes = ([list(i.shape) for i in inputs], [list(o.shape) for o in outputs])
    want = ([["batch", spec.inputs]], [["batch", spec.outputs]])
    if shapes != want:
        failed["shapes"] = f"{shapes[0]} -> {shapes[1]}; expected {want[0]} -> {want[1]}"
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, spec.inputs, generator=gen)
    with torch.no_grad():
        expected = net(x).numpy()
    got = session.run(None, {inputs[0].name: x.numpy()})[0]
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if not diff <= MAX_DIFF:
        failed["max_diff"] = f"{diff:.2e} > {MAX_DIFF:g}"
    one = x[:1].numpy()
    for _ in range(20):  # warm-up
        session.run(None, {inputs[0].name: one})
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        session.run(None, {inputs[0].name: one})
        times.append(time.perf_counter() - t0)
    median_ms = float(np.median(times) * 1000)
    if not median_ms < MAX_MS:
        failed["latency"] = f"median {median_ms:.2f} ms >= {MAX_MS:g} ms"
    size = path.stat().st_size
    if not size < MAX_BYTES:
        failed["size"] = f"{size / 1e6:.2f} MB >= {MAX_BYTES / 1e6:.2f} MB"
    params = sum(p.numel() for p in net.parameters())
    facts = {
        "input": f"{spec.input_name}[batch,{spec.inputs}]",
        "output": f"{spec.output_name}[batch,{spec.outputs}]",
        "params": params,
        "size_mb": round(size / 1e6, 3),
        "median_ms": round(median_ms, 4),
        "max_abs_diff": float(f"{diff:.3g}"),
    }
    return ExportedFile(name=spec.title, path=str(path), facts=facts, failed=failed)


def export_onnx(
    model: torch.nn.Module, profile: Profile, info: DataInfo, outdir: Path
) -> ExportReport:
    """The family's exporter: one ONNX file per network under ``outdir``, each checked."""
    ort = _runtime()
    if not isinstance(model, EmotionPipeline):
        raise TypeError(f"expected an EmotionPipeline, got {type(model).__name__}")
    outdir.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    files = []
    for k, net in enumerate(model.nets.values()):
        assert isinstance(net, Network)
        path = outdir / f"{net.spec.title}.onnx"
        export_network(net, path)
        files.append(check_network(net, path, ort, seed=k))
    return ExportReport(files=tuple(files), checks=CHECKS)
