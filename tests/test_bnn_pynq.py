"""FINN's example networks (brevitas_examples.bnn_pynq): the fully-connected TFC, SFC and LFC
in every configuration of its cfg/ folder lower through cosyn.lower and through from_qonnx
of their export_qonnx files to the same graph. Every quantized activation's integers, the
last layer's accumulators and the float output (after TensorNorm) equal the Brevitas
model's, on scikit-learn's digits resized to 28x28 (cosyn.models.data.digits). CNV in its
three configurations (w1a1 and w1a2: 1-bit weights, BipolarQuant in the QONNX file; w2a2),
with its two max poolings, lowers through both frontends to one graph equal to the model
on random images. TFC-w2a2 and TFC-w1a1 run bit-exact through the generated RTL and in
hls4ml's C simulation (benchmarks/zoo.py simulates them in Verilator)."""

from __future__ import annotations

from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import onnx
import pytest
import torch
from brevitas_examples.bnn_pynq.models import model_with_cfg
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from cosyn.models.data import Dataset, digits
from cosyn.models.train import fit, predict
from test_qonnx import assert_same_graph, export
from torch import nn

import cosyn
from cosyn.ir import nodes as N
from cosyn.ir.intervals import IntType

TFC = ["tfc_1w1a", "tfc_1w2a", "tfc_2w2a"]
LARGER = ["sfc_1w1a", "sfc_1w2a", "sfc_2w2a", "lfc_1w1a", "lfc_1w2a"]
CONFIGS = [*TFC, *(pytest.param(n, marks=pytest.mark.slow) for n in LARGER)]


@pytest.fixture(scope="module")
def data() -> Dataset:
    return digits(image=True, size=28)


def finn_fc(name: str, data: Dataset, seed: int = 0) -> nn.Module:
    """The untrained network with its normalisations calibrated on the digits, then every
    gamma and TensorNorm's weight drawn at random (some negative: decreasing thresholds)."""
    torch.manual_seed(seed)
    model, _ = model_with_cfg(name, pretrained=False)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | TensorNorm)]
    for m in norms:
        m.momentum = None if isinstance(m, nn.BatchNorm1d) else 1.0  # take one batch's stats
    model.train()
    with torch.no_grad():
        model(data.x_train[:512])
        g = torch.Generator().manual_seed(seed)
        for m in norms:
            m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


def golden_values(g: cosyn.ir.Graph, xi: np.ndarray) -> dict[str, np.ndarray]:
    """Every node's integers for the input integers `xi`."""
    values: dict[str, np.ndarray] = {}
    for n in g:
        values[n.name] = n.eval(*([values[i] for i in n.inputs] or [xi]))
    return values


def _run_seeing(model: nn.Module, x: torch.Tensor, layers: list) -> tuple[np.ndarray, list]:
    """The model's output on x, and the output of each of `layers` in call order."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in layers]
    try:
        return predict(model, x).numpy(), seen
    finally:
        for h in hooks:
            h.remove()


def assert_exact(model: nn.Module, g: cosyn.ir.Graph, x: torch.Tensor) -> None:
    """The input quantizer's and every activation's integers (times its scale), the last
    layer's accumulators and the float output equal the model's, element for element."""
    layers = [m for m in model.features if isinstance(m, qnn.QuantIdentity | qnn.QuantLinear)]
    y, seen = _run_seeing(model, x, layers)
    outs = [o for o, m in zip(seen, layers, strict=True) if isinstance(m, qnn.QuantIdentity)]
    values = golden_values(g, g.quantize(x.numpy()))
    requants = [n for n in g if isinstance(n, N.Quantize | N.Threshold | N.Shift)]
    assert len(requants) == len(outs)
    for node, out in [*zip(requants, outs, strict=True), (g.output, seen[-1])]:
        ints = values[node.name].reshape(out.shape)
        expect = ints.astype(np.float32) * np.float32(node.scale)
        assert np.array_equal(out.numpy(), expect), node.name
    assert np.array_equal(g.run_int(g.quantize(x.numpy())), values[g.output.name])
    assert np.array_equal(g.run(x.numpy()), y)


def assert_finn_structure(g: cosyn.ir.Graph, name: str) -> None:
    """Input quantizer, flatten, then (dense, threshold) per hidden layer and a last dense;
    1-bit activations are bipolar (-1/+1 in two bits: both thresholds of a bank at one
    place), 2-bit ones -1/0/+1."""
    w_bits, a_bits = int(name[4]), int(name[6])
    hidden = {"tfc": 3, "sfc": 3, "lfc": 3}[name[:3]]
    assert [n.kind for n in g] == ["quantize", "flatten", *["dense", "threshold"] * hidden, "dense"]
    assert g.input.shape == (1, 28, 28) and g.output.shape == (10,)
    assert g.input.dtype == IntType(2, True)
    if name.endswith("1a"):  # 1-bit input: sign(2x - 1), +1 from x = 0.5 on
        assert np.array_equal(g.input.thresholds, np.float32([0.5, 0.5]))
    for n in g:
        if isinstance(n, N.Threshold):
            lo, hi = g.range(n.name)
            assert n.dtype == IntType(2, True) and lo.min() >= -1 and hi.max() <= 1
            t, top = n.thresholds, g.range(n.inputs[0])[1]
            jumps = t[:, 0] == t[:, 1]  # -1 to +1 at one accumulator value
            assert np.all(jumps) if a_bits == 1 else not np.all(jumps[t[:, 1] <= top])
        if isinstance(n, N.Dense):
            assert set(np.unique(n.weight)) <= ({-1, 1} if w_bits == 1 else {-1, 0, 1})
    assert len(g.output_ops) == 4  # TensorNorm: - mean, / std, * weight, + bias


@pytest.mark.parametrize("name", CONFIGS)
def test_fc_lowers_exactly_and_reads_back_from_qonnx(name: str, data: Dataset, tmp_path) -> None:
    model = finn_fc(name, data)
    x = data.x_test[:120]
    g = cosyn.lower(model, x[:2])
    assert_finn_structure(g, name)
    assert_exact(model, g, x)
    h = cosyn.ir.from_qonnx(export(model, (1, 28, 28), tmp_path / "m.onnx"))
    assert_same_graph(g, h)
    assert_exact(model, h, x)


@pytest.fixture(scope="module")
def trained(data: Dataset) -> dict[str, nn.Module]:
    """TFC-w2a2 and TFC-w1a1, one epoch on the digits (seconds on two cores)."""
    models = {}
    for name in ("tfc_2w2a", "tfc_1w1a"):
        torch.manual_seed(0)
        model, _ = model_with_cfg(name, pretrained=False)
        assert fit(model, data, epochs=1, quiet=True) > 40.0
        models[name] = model.eval()
    return models


@pytest.mark.parametrize("name", ["tfc_2w2a", "tfc_1w1a"])
def test_trained_tfc_is_exact_on_the_whole_test_set(name: str, trained, data: Dataset) -> None:
    model = trained[name]
    g = cosyn.lower(model, data.x_train[:2])
    assert_exact(model, g, data.x_test)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tfc_2w2a", "tfc_1w1a"])
def test_trained_tfc_runs_bit_exact_in_rtl(name: str, trained, data: Dataset, tmp_path) -> None:
    from cosyn.sim import simulate

    g = cosyn.lower(trained[name], data.x_train[:2])
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    x = data.x_test[:2].numpy()  # Icarus takes minutes over TFC; two give one interval
    r = simulate(d, x, simulator="icarus", backpressure=True)
    assert (r.mismatches, r.lost, r.duplicated, r.protocol_errors) == (0, 0, 0, 0), r
    assert np.array_equal(r.outputs, g.run_int(g.quantize(x)))
    assert (r.latency, r.interval) == (d.manifest["latency"], d.manifest["interval"])


@pytest.mark.slow  # an hls4ml compile: about 25 s each
@pytest.mark.parametrize("name", ["tfc_2w2a", "tfc_1w1a"])
def test_trained_tfc_is_exact_in_hls_c_simulation(name: str, trained, data: Dataset, tmp_path):
    """The hls4ml project's C simulation (io_parallel) gives the golden model's integers on
    16 test images, and its float output is the model's."""
    g = cosyn.lower(trained[name], data.x_train[:2])
    h = cosyn.hls.generate(g, tmp_path / "hls").compile()
    x = data.x_test[:16]
    xi = g.quantize(x.numpy())
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))
    assert np.array_equal(h.predict(x.numpy()), predict(trained[name], x).numpy())


CNV_KINDS = [
    "quantize", *["conv2d", "threshold"] * 2, "maxpool2d", *["conv2d", "threshold"] * 2,
    "maxpool2d", *["conv2d", "threshold"] * 2, "flatten", *["dense", "threshold"] * 2, "dense",
]  # fmt: skip


@pytest.fixture(
    scope="module",
    params=["cnv_1w1a", pytest.param("cnv_1w2a", marks=pytest.mark.slow), "cnv_2w2a"],
)
def cnv(request) -> tuple[nn.Module, torch.Tensor]:
    """CNV, its normalisations calibrated on random images, then every gamma and
    TensorNorm's weight drawn at random (some negative), as `finn_fc`; and 16 images."""
    torch.manual_seed(0)
    model, _ = model_with_cfg(request.param, pretrained=False)
    model.name = request.param
    x = torch.rand(64, 3, 32, 32)
    norms = [
        m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | TensorNorm)
    ]
    for m in norms:
        m.momentum = 1.0 if isinstance(m, TensorNorm) else None
    model.train()
    with torch.no_grad():
        model(x)
        g = torch.Generator().manual_seed(0)
        for m in norms:
            m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval(), x[:16]


def test_cnv_lowers_exactly_with_its_max_pooling(cnv) -> None:
    """Both MaxPool2d(2) become maxpool2d nodes at their input's type and scale; the
    graph's output equals the model's (and so does every pooled activation's)."""
    model, x = cnv
    g = cosyn.lower(model, x[:2])
    assert [n.kind for n in g] == CNV_KINDS
    pools = [n for n in g if isinstance(n, N.MaxPool2d)]
    assert [p.shape for p in pools] == [(64, 14, 14), (128, 5, 5)]
    assert all(p.kernel == p.stride == (2, 2) and p.padding == (0, 0) for p in pools)
    pooling = [m for m in model.conv_features if isinstance(m, nn.MaxPool2d)]
    y, seen = _run_seeing(model, x, pooling)
    values = golden_values(g, g.quantize(x.numpy()))
    for node, out in zip(pools, seen, strict=True):
        expect = values[node.name].astype(np.float32) * np.float32(node.scale)
        assert np.array_equal(getattr(out, "value", out).numpy(), expect), node.name
    assert np.array_equal(g.run(x.numpy()), y)
    w_bits, a_bits = int(model.name[4]), int(model.name[6])
    for n in g:
        if isinstance(n, N.Conv2d | N.Dense):  # 1-bit weights are -1/+1
            assert set(np.unique(n.weight)) <= ({-1, 1} if w_bits == 1 else {-1, 0, 1})
        if isinstance(n, N.Threshold):  # 1-bit activations jump from -1 to +1 at once
            assert np.all(n.thresholds[:, 0] == n.thresholds[:, 1]) == (a_bits == 1)


@pytest.mark.slow  # the export takes seconds
def test_cnv_qonnx_file_reads_back_the_same_graph(cnv, tmp_path: Path) -> None:
    model, x = cnv
    path = export(model, (3, 32, 32), tmp_path / "cnv.onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ("BipolarQuant" in ops) == model.name.startswith("cnv_1w")
    h = cosyn.ir.from_qonnx(path)
    assert_same_graph(cosyn.lower(model, x[:2]), h)
    assert np.array_equal(h.run(x.numpy()), predict(model, x).numpy())
