"""Two-party secure inference's cost (`cosyn.perfmodel.secure`): the figures per bit width,
which graph nodes are priced, and the same metrics in the differentiable cost."""

from __future__ import annotations

import copy

import pytest
import torch
from cosyn.models import gates
from cosyn.models.gate import CHOICES
from cosyn.models.zoo import mlp
from cosyn.perfmodel import secure
from cosyn.perfmodel.loss import cost

import cosyn
from cosyn.errors import CosynError


@pytest.fixture(scope="module")
def gated() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = mlp(hidden=(16, 8), act="gate")
    x = torch.rand(32, 64)
    with torch.no_grad():
        model.train()(x)
    return model.eval(), x[:1]


def _hardened(model: torch.nn.Module, combo: tuple[int, ...]) -> torch.nn.Module:
    hard = copy.deepcopy(model)
    for g, i in zip(gates(hard).values(), combo, strict=True):
        g.harden(CHOICES[i])
    return hard


@pytest.mark.parametrize(
    ("bits", "ands", "relu_on", "relu_off", "poly2_on", "poly3_on", "poly2_off"),
    [
        # ands 3(l-1); online l kappa; offline 2 kappa ands + l kappa + l + 3 kappa l;
        # poly online 4 l d; offline d 2 l (kappa + l)
        (8, 21, 1024, 5376 + 1024 + 8 + 3072, 64, 96, 2 * 2 * 8 * 136),
        (16, 45, 2048, 11520 + 2048 + 16 + 6144, 128, 192, 2 * 2 * 16 * 144),
    ],
)
def test_figures_by_hand(bits, ands, relu_on, relu_off, poly2_on, poly3_on, poly2_off) -> None:
    assert secure.KAPPA == 128
    assert secure.relu_ands(bits) == ands
    assert secure.relu_online_bits(bits) == relu_on
    assert secure.relu_offline_bits(bits) == relu_off
    assert secure.poly_online_bits(bits, 2) == poly2_on
    assert secure.poly_online_bits(bits, 3) == poly3_on
    assert secure.poly_offline_bits(bits, 2) == poly2_off
    assert (secure.relu_rounds(), secure.poly_rounds(2), secure.poly_rounds(3)) == (1, 2, 3)


def test_monotone_in_bits_and_degree() -> None:
    for bits in range(2, 63):
        assert secure.relu_online_bits(bits + 1) > secure.relu_online_bits(bits)
        assert secure.relu_offline_bits(bits + 1) > secure.relu_offline_bits(bits)
        for d in (2, 3):
            assert secure.poly_online_bits(bits + 1, d) > secure.poly_online_bits(bits, d)
            assert secure.poly_offline_bits(bits + 1, d) > secure.poly_offline_bits(bits, d)
            assert secure.poly_online_bits(bits, d + 1) > secure.poly_online_bits(bits, d)
            assert secure.poly_offline_bits(bits, d + 1) > secure.poly_offline_bits(bits, d)
            assert secure.poly_rounds(d + 1) > secure.poly_rounds(d)


def test_layers_of_a_graph(gated) -> None:
    model, x = gated
    g = cosyn.lower(_hardened(model, (0, 1)), x)
    relu, poly = secure.secure_layers(g)
    dense = next(n for n in g if type(n).__name__ == "Dense")
    assert (relu.kind, relu.elements, relu.bits) == ("relu", 16, dense.dtype.bits)
    assert relu.online_bits == 16 * secure.relu_online_bits(relu.bits)
    p = next(n for n in g if type(n).__name__ == "Poly")
    assert (poly.kind, poly.node, poly.elements, poly.bits, poly.degree) == (
        "poly", p.name, 8, p.dtype.bits, 2)  # fmt: skip
    assert poly.online_bits == 8 * secure.poly_online_bits(p.dtype.bits, 2)
    m = secure.secure_metrics(g)
    assert m["secure_bytes"] == (relu.online_bits + poly.online_bits) / 8
    assert m["secure_rounds"] == 1 + 2
    # a plain ReLU MLP: its ReLUs are folded into shifts; the output layer has none
    plain = mlp(hidden=(16, 8)).eval()
    layers = secure.secure_layers(cosyn.lower(plain, x))
    assert [(x.kind, x.elements) for x in layers] == [("relu", 16), ("relu", 8)]


def test_cost_of_a_hardened_model_is_the_table(gated) -> None:
    model, x = gated
    for combo in ((0, 1), (1, 0)):
        hard = _hardened(model, combo)
        m = secure.secure_metrics(cosyn.lower(hard, x))
        for name in secure.METRICS:
            assert cost(hard, x, metric=name).item() == m[name]
        latency = cost(hard, x, metric="latency").item()  # the same table mixes them
        mix = {"secure_bytes": 1.0, "secure_rounds": 1000.0, "latency": 2.0}
        want = m["secure_bytes"] + 1000 * m["secure_rounds"] + 2 * latency
        assert cost(hard, x, metric=mix).item() == want


def test_gradient_reaches_the_gate_logits(gated) -> None:
    model, x = gated
    model = copy.deepcopy(model)
    for metric, sign in (("secure_bytes", -1), ("secure_rounds", 1)):
        for g in gates(model).values():
            g.logits.grad = None
        cost(model, x, metric=metric).backward()
        for g in gates(model).values():  # bytes pull toward poly, rounds toward ReLU
            assert sign * g.logits.grad[1] > 0 > sign * g.logits.grad[0]


def test_bad_metric_refused(gated) -> None:
    model, x = gated
    with pytest.raises(CosynError, match=r"metric 'secure_joules' is not one of .*secure_bytes"):
        cost(model, x, metric="secure_joules")
