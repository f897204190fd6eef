"""HLS C simulation of lowered Brevitas models: equal to the model, on every vector."""

from __future__ import annotations

from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerTensorFloat, Uint8ActPerTensorFloat
from cosyn.hw.hls import generate
from cosyn.models.data import digits
from cosyn.models.quant import Int8ActPow2, Int8WeightPow2, Int32Bias, Uint8ActPow2
from cosyn.models.zoo import cnn, mlp
from torch import nn

import cosyn
from cosyn.ir import nodes as N

pytestmark = pytest.mark.slow


def _calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def small_mlp() -> nn.Module:
    """QuantIdentity -> QuantLinear -> QuantReLU -> QuantLinear, power-of-two quantizers."""
    torch.manual_seed(1)
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True),
        qnn.QuantLinear(
            12,
            16,
            bias=True,
            weight_quant=Int8WeightPow2,
            bias_quant=Int32Bias,
            return_quant_tensor=True,
        ),
        qnn.QuantReLU(act_quant=Uint8ActPow2, return_quant_tensor=True),
        qnn.QuantLinear(16, 5, bias=True, weight_quant=Int8WeightPow2, bias_quant=Int32Bias),
    )


def batchnorm_mlp() -> nn.Module:
    """Float scales and a batch norm: requantized by threshold banks."""
    torch.manual_seed(2)
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=True),
        qnn.QuantLinear(
            12, 10, bias=True, weight_quant=Int8WeightPerTensorFloat, return_quant_tensor=True
        ),
        nn.BatchNorm1d(10),
        qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, bit_width=4, return_quant_tensor=True),
        qnn.QuantLinear(
            10, 4, bias=False, weight_quant=Int8WeightPerTensorFloat, return_quant_tensor=True
        ),
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=False),
    )


def inputs(n: int, features: int) -> torch.Tensor:
    """Normal inputs with exact ties of common power-of-two scales mixed in."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1.5, (n, features)).astype(np.float32)
    ties = rng.random(x.shape) < 0.3
    x[ties] = (rng.integers(-300, 300, ties.sum()) + 0.5).astype(np.float32) / 128
    return torch.from_numpy(x)


@pytest.mark.parametrize("factory", [small_mlp, batchnorm_mlp])
def test_lowered_mlp_csim_equals_model(tmp_path: Path, factory) -> None:
    x = inputs(400, 12)
    model = _calibrate(factory(), x)
    h = generate(model, tmp_path / "p", example_input=x[:8])
    g = h.graph
    if factory is batchnorm_mlp:
        assert N.Threshold in {type(n) for n in g}
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.array_equal(g.run(x.numpy()), expected)
    assert np.array_equal(h.predict(x.numpy()), expected)


@pytest.mark.parametrize(("factory", "io_type"), [(mlp, "io_parallel"), (cnn, "io_stream")])
def test_zoo_csim_is_exact_on_digits(tmp_path: Path, factory, io_type: str) -> None:
    data = digits(image=factory is cnn)
    model = _calibrate(factory(), data.x_train[:256])
    g = cosyn.lower(model, data.x_test[:8])
    h = generate(g, tmp_path / "p", io_type=io_type, board="pynq-z2")
    xi = g.quantize(data.x_test.numpy())
    assert xi.shape[0] == 360
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))
