"""PolyAct and GateAct: the golden model equals the Brevitas model bit for bit, the Poly
node's widths are exact, and bad configurations raise CosynErrors."""

from __future__ import annotations

import copy

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from cosyn.models import (
    GateAct,
    PolyAct,
    PolyActError,
    anneal,
    data,
    finetune_poly,
    fit,
    gate_cost,
    harden,
    zoo,
)
from cosyn.models.quant import Int4WeightPow2, Int8ActPow2, Int32Bias
from cosyn.models.replace import replace_relu
from cosyn.models.train import accuracy, predict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import inputs
from test_ir_exact import assert_exact
from torch import nn

import cosyn
from cosyn.errors import BitWidthError, CosynError, UnsupportedLayerError
from cosyn.ir import nodes as N

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def random_coeffs(act: PolyAct, rng: np.random.Generator) -> None:
    """Coefficients of every magnitude, with zeros and exact extremes (+-qmax * 2^e) mixed in."""
    shape = tuple(act.coeffs.shape)
    qmax = 2 ** (act.coeff_bits - 1) - 1
    a = rng.choice([-1, 1], shape) * 10 ** rng.uniform(-4, 2, shape)
    kind = rng.random(shape)
    a[kind < 0.15] = 0.0
    extreme = kind > 0.85
    a[extreme] = rng.choice([-qmax, qmax], extreme.sum()) * 2.0 ** rng.integers(
        -9, 3, extreme.sum()
    )
    with torch.no_grad():
        act.coeffs.copy_(torch.from_numpy(a))


@st.composite
def polyacts(draw, channels: int) -> PolyAct:
    """A random PolyAct: degree, widths, span, per-tensor or per-channel coefficients."""
    act = PolyAct(
        channels=draw(st.sampled_from([None, channels])),
        degree=draw(st.sampled_from([2, 3])),
        act_bits=draw(st.integers(2, 8)),
        in_bits=draw(st.integers(2, 8)),
        coeff_bits=draw(st.integers(2, 12)),
        span=draw(st.integers(0, 16)),
    )
    random_coeffs(act, np.random.default_rng(draw(st.integers(0, 2**31 - 1))))
    return act


def calibrate(model: nn.Module, shape: tuple[int, ...], seed: int) -> None:
    """One training-mode pass on inputs of a random magnitude: sets every quantizer's scale."""
    g = torch.Generator().manual_seed(seed)
    magnitude = 10 ** (torch.rand((), generator=g).item() * 4 - 2)
    model.train()
    with torch.no_grad():
        model(torch.randn(64, *shape, generator=g) * magnitude)
    model.eval()


def every_level(act: PolyAct, channels: int) -> torch.Tensor:
    """Inputs that hit every input integer of the PolyAct, both saturated ends, and the
    exact halves between levels (ties of the input quantizer's rounding)."""
    act.eval()
    sx = act.input_quant(torch.zeros(1, channels)).scale.item()
    bits = int(act.input_quant.act_quant.bit_width())
    ends = 2 ** (bits - 1) + 1
    levels = torch.arange(-2 * ends, 2 * ends + 1, dtype=torch.float32) * (sx / 2)
    return levels[:, None].expand(-1, channels).contiguous()


@SETTINGS
@given(st.data())
def test_polyact_alone_is_exact_on_every_input_level(data_):
    c = data_.draw(st.integers(1, 5))
    act = data_.draw(polyacts(c))
    calibrate(act, (c,), data_.draw(st.integers(0, 2**31 - 1)))
    x = torch.cat([every_level(act, c), data_.draw(inputs((c,)))])
    g = assert_exact(nn.Sequential(act), x)
    assert [type(n) for n in g][:2] == [N.Quantize, N.Poly]


@SETTINGS
@given(st.data())
def test_polyact_between_dense_layers_is_exact(data_):
    width, c = data_.draw(st.integers(1, 8)), data_.draw(st.integers(1, 6))
    act = data_.draw(polyacts(c))
    model = nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True),
        qnn.QuantLinear(
            width,
            c,
            bias=True,
            weight_quant=Int4WeightPow2,
            bias_quant=Int32Bias,
            return_quant_tensor=True,
        ),
        act,
        qnn.QuantLinear(c, 3, bias=True, weight_quant=Int4WeightPow2, bias_quant=Int32Bias),
    )
    calibrate(model, (width,), data_.draw(st.integers(0, 2**31 - 1)))
    assert_exact(model, data_.draw(inputs((width,))))


@SETTINGS
@given(st.data())
def test_per_channel_polyact_after_conv_is_exact(data_):
    c = data_.draw(st.integers(1, 4))
    act = data_.draw(polyacts(c))
    conv = qnn.QuantConv2d(
        1, c, 3, padding=1, weight_quant=Int4WeightPow2, bias_quant=Int32Bias,
        return_quant_tensor=True,
    )  # fmt: skip
    model = nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True), conv, act
    )
    calibrate(model, (1, 6, 6), data_.draw(st.integers(0, 2**31 - 1)))
    assert_exact(model, data_.draw(inputs((1, 6, 6))))


def python_horner(coeffs: list[int], x: int) -> list[int]:
    """Every Horner stage in Python integers (unbounded): the reference for the widths."""
    h, out = coeffs[0], []
    for c in coeffs[1:]:
        h = h * x + c
        out.append(h)
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_poly_node_stages_are_the_tightest_types(data_):
    c = data_.draw(st.integers(1, 3))
    act = data_.draw(polyacts(c))
    calibrate(act, (c,), data_.draw(st.integers(0, 2**31 - 1)))
    g = cosyn.lower(nn.Sequential(act), torch.zeros(2, c))
    poly = next(n for n in g if isinstance(n, N.Poly))
    lo, hi = g.input.dtype.lo, g.input.dtype.hi
    stages = np.array(
        [python_horner([int(v) for v in row], x) for row in poly.coeffs for x in range(lo, hi + 1)]
    )
    want = tuple(N.int_type_for_range(s.min(), s.max()) for s in stages.T)
    assert poly.stages == want
    assert poly.dtype == want[-1]
    assert poly.degree == act.degree


def test_hardened_gates_lower_as_their_choice_and_are_exact():
    torch.manual_seed(0)
    model = zoo.mlp(hidden=(16, 8), act="gate")
    calibrate(model, (64,), 0)
    x = torch.rand(200, 64)
    with pytest.raises(UnsupportedLayerError, match=r"^2 \(GateAct\).*harden"):
        cosyn.lower(model, x[:2])
    model[2].harden("poly")
    model[4].harden("relu")
    g = assert_exact(model, x)
    assert sum(isinstance(n, N.Poly) for n in g) == 1
    assert harden(model) == {"2": "poly", "4": "relu"}


def test_gate_cost_pushes_the_choice_toward_the_cheaper_activation():
    gate = GateAct(channels=4, costs={"relu": 1.0, "poly": 0.2})
    model = nn.Sequential(gate)
    loss = gate_cost(model, weight=3.0)
    assert loss.item() == pytest.approx(3.0 * 0.6)
    loss.backward()
    assert gate.logits.grad[0] > 0 > gate.logits.grad[1]
    per_layer = GateAct(channels=2, costs=lambda g: {"relu": g.poly.degree, "poly": 1.0})
    assert per_layer.cost_table() == {"relu": 2, "poly": 1.0}


def test_fit_relu_matches_the_least_squares_fit_over_a_gaussian():
    x = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0))
    act = PolyAct(channels=3, degree=2).fit_relu(x)
    # Known projection of ReLU onto {1, x, x^2} under N(0, 1): (1/sqrt(2 pi)) (x^2 + 1) / 2 + x / 2
    want = torch.tensor([0.1995, 0.5, 0.1995]).expand(3, -1)
    torch.testing.assert_close(act.coeffs.detach(), want, atol=0.02, rtol=0)
    act.eval()
    err = (predict(act, x) - torch.relu(x)).abs().mean()
    assert err < 0.15  # the fitted, quantized polynomial tracks ReLU over its inputs


def test_polyact_trains_its_coefficients():
    act = PolyAct(channels=2, degree=3)
    act.train()
    out = act(torch.randn(32, 2))
    out.value.sum().backward()
    assert act.coeffs.grad is not None and torch.all(act.coeffs.grad[:, -1] != 0)


def test_replace_relu_converts_a_trained_mlp_that_stays_accurate_and_exact():
    d = data.digits()
    model = zoo.mlp()
    base = fit(model, d, epochs=3, quiet=True)
    poly = replace_relu(copy.deepcopy(model), calib_data=d.x_train)
    assert not any(isinstance(m, qnn.QuantReLU) for m in poly.modules())
    assert sum(isinstance(m, PolyAct) for m in poly.modules()) == 2
    assert accuracy(poly, d.x_test, d.y_test) > base - 10
    assert_exact(poly, d.x_test)
    gated = replace_relu(
        copy.deepcopy(model), ["4"], d.x_train[:100], to="gate", costs={"relu": 1, "poly": 0}
    )
    assert isinstance(gated[4], GateAct) and isinstance(gated[2], qnn.QuantReLU)


def test_annealing_moves_from_relu_to_the_polynomial_and_lowers_only_at_the_end():
    d = data.digits()
    model = zoo.mlp()
    fit(model, d, epochs=2, quiet=True)
    poly = replace_relu(copy.deepcopy(model), calib_data=d.x_train)
    act, x = poly[2], poly[:2](d.x_test[:64])
    assert anneal(poly, 0, 4) == 1.0 and act.relu_mix == 1.0
    relu = qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True)
    relu.load_state_dict(act.output_quant.state_dict())
    want = relu.eval()(torch.relu(x.value)).value
    assert torch.equal(act.eval()(x).value, want)  # all ReLU at the start
    assert anneal(poly, 2, 4) == 0.5
    with pytest.raises(UnsupportedLayerError, match=r"2 \(PolyAct\): still annealing \(0.5"):
        cosyn.lower(poly, d.x_test[:2])
    assert anneal(poly, 4, 4) == 0.0 and act.relu_mix == 0.0
    assert_exact(poly, d.x_test)
    tuned, acc = finetune_poly(model, d, epochs=3, anneal_epochs=2)
    assert all(m.relu_mix == 0.0 for m in tuned.modules() if isinstance(m, PolyAct))
    assert acc > 50
    assert_exact(tuned, d.x_test)


def test_zoo_cnn_with_polyact_trains_and_is_exact():
    d = data.digits(image=True)
    model = zoo.cnn(act="poly")
    assert fit(model, d, epochs=1, quiet=True) > 30
    g = assert_exact(model, d.x_test)
    assert sum(isinstance(n, N.Poly) for n in g) == 2


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: PolyAct(degree=4), PolyActError, "degree must be 2 or 3, not 4"),
        (lambda: PolyAct(degree=1), PolyActError, "degree must be 2 or 3, not 1"),
        (lambda: PolyAct(coeff_bits=1), BitWidthError, "coeff_bits must be between 2 and 24"),
        (lambda: PolyAct(act_bits=1), BitWidthError, "act_bits must be between 2 and 16"),
        (lambda: PolyAct(degree=3, in_bits=12), BitWidthError, "needs up to 61 bits"),
        (lambda: PolyAct(channels=0), PolyActError, "channels must be a positive int"),
        (lambda: PolyAct(3).fit_relu(torch.zeros(10, 4)), PolyActError, "channels=3"),
        (lambda: PolyAct(3).fit_relu(torch.zeros(10)), PolyActError, "fit_relu: samples"),
        (lambda: zoo.mlp(act="tanh"), PolyActError, "act must be one of relu, poly, gate"),
        (lambda: replace_relu(zoo.mlp(), calib_data=torch.zeros(5, 7)), PolyActError, "(5, 7)"),
        (lambda: replace_relu(zoo.mlp(), ["9"], torch.zeros(5, 64)), PolyActError, "'9'"),
        (lambda: GateAct().harden("tanh"), PolyActError, "choice must be one of"),
        (lambda: GateAct().expected_cost(), PolyActError, "no costs"),
        (lambda: GateAct(costs={"relu": 1}).expected_cost(), PolyActError, "exactly"),
    ],
)
def test_bad_input_raises_a_clear_cosyn_error(make, error, message):
    with pytest.raises(error, match=message) as info:
        make()
    assert isinstance(info.value, CosynError)
    assert "\n" not in str(info.value)
