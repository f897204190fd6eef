"""The golden model equals the Brevitas model bit for bit (np.array_equal on float32)."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from brevitas.quant.fixed_point import (
    Int8ActPerTensorFixedPoint,
    Int8WeightPerChannelFixedPoint,
    Uint8ActPerTensorFixedPoint,
)
from cosyn.models import data, fit, zoo
from cosyn.models.train import predict
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from strategies import cnns, inputs, mlps
from torch import nn

import cosyn
from cosyn.ir import nodes as N

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


FLOAT32_EXACT = 2**24  # integers a float32 holds exactly


def assert_exact(model: nn.Module, x: torch.Tensor, drawn: bool = False) -> cosyn.ir.Graph:
    """The golden model's float output equals the model's. A `drawn` (generated) model
    must also keep its last accumulator within float32's exact integers: beyond them
    the model's own float sum rounds (its Int32 bias is added in float32) and is not the
    integer result the golden model computes, so such a draw is discarded."""
    g = cosyn.lower(model, x[:2])
    if drawn:
        assume(np.abs(g.run_int(g.quantize(x.numpy()))).max() < FLOAT32_EXACT)
    want = predict(model, x).numpy()
    got = g.run(x.numpy())
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    return g


@pytest.mark.parametrize(("factory", "image"), [(zoo.mlp, False), (zoo.cnn, True)])
def test_zoo_trained_on_digits_is_exact_on_the_test_set(factory, image):
    d = data.digits(image=image)
    model = factory()
    assert fit(model, d, epochs=3, quiet=True) > 50
    g = assert_exact(model, d.x_test)
    assert {type(n) for n in g} >= {N.Quantize, N.Dense, N.Shift}


@SETTINGS
@given(st.data())
def test_power_of_two_mlps_with_batchnorm_are_exact(data_):
    model = data_.draw(mlps("pow2"))
    assert_exact(model, data_.draw(inputs((model[1].in_features,))), drawn=True)


@SETTINGS
@given(st.data())
def test_non_power_of_two_scales_use_thresholds_and_are_exact(data_):
    model = data_.draw(mlps("short", batchnorm=True))
    g = assert_exact(model, data_.draw(inputs((model[1].in_features,))), drawn=True)
    assert N.Threshold in {type(n) for n in g}


@SETTINGS
@given(st.data())
def test_cnns_are_exact(data_):
    model = data_.draw(cnns())
    assert_exact(model, data_.draw(inputs((model[1].in_channels, 8, 8))), drawn=True)


class UserNet(nn.Module):
    """A model cosyn did not define: per-channel weights, hard tanh, a residual add.

    conv -> batch norm -> hard tanh (a threshold bank), a 1x1 conv branch, a residual add,
    flatten, dense; for `size` x `size` single-channel images."""

    def __init__(self, channels: int = 4, size: int = 8) -> None:
        super().__init__()
        act = dict(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True)
        wq = dict(weight_quant=Int8WeightPerChannelFixedPoint, return_quant_tensor=True)
        self.inp = qnn.QuantIdentity(**act)
        self.conv = qnn.QuantConv2d(1, channels, 3, padding=1, **wq)
        self.bn = nn.BatchNorm2d(channels)
        self.act = qnn.QuantHardTanh(max_val=1.0, min_val=-1.0, **act)
        self.conv2 = qnn.QuantConv2d(channels, channels, 1, bias=False, **wq)
        self.act2 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True)
        self.res = qnn.QuantIdentity(**act)
        self.fc = qnn.QuantLinear(
            channels * size * size, 3, bias=True, weight_quant=Int8WeightPerChannelFixedPoint
        )

    def forward(self, x):
        a = self.act(self.bn(self.conv(self.inp(x))))
        b = self.res(self.act2(self.conv2(a)))
        return self.fc(torch.flatten(self.res(a) + b, 1))


def user_net(channels: int = 4, size: int = 8) -> UserNet:
    """A UserNet with a non-trivial batch norm (negative gammas) and calibrated scales."""
    torch.manual_seed(1)
    model = UserNet(channels, size)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.weight.uniform_(-2, 2)
    model.train()
    for _ in range(3):
        model(torch.randn(16, 1, size, size))
    return model


def test_user_model_with_standard_brevitas_quantizers_is_exact():
    model = user_net()
    x = torch.randn(200, 1, 8, 8)
    g = assert_exact(model, x)
    assert {N.Add, N.Flatten, N.Threshold, N.Conv2d} <= {type(n) for n in g}
