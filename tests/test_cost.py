"""The differentiable hardware cost (`cosyn.perfmodel.cost`): equal to the estimate of
every hardened model, smooth in the gates' logits in between, pulling toward the
cheaper choice; the table built once per model and rebuilt on request."""

from __future__ import annotations

import copy
import itertools

import cosyn.perfmodel.loss as loss
import pytest
import torch
from cosyn.models import gates
from cosyn.models.gate import CHOICES
from cosyn.models.train import BudgetPenalty
from cosyn.models.zoo import mlp
from cosyn.perfmodel.loss import cost, cost_table

import cosyn
from cosyn.errors import CosynError


@pytest.fixture(scope="module")
def gated() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = mlp(hidden=(16, 8), act="gate").eval()
    x = torch.rand(32, 64)
    model(x)
    return model, x


def _hardened(model: torch.nn.Module, combo: tuple[int, ...]) -> torch.nn.Module:
    hard = copy.deepcopy(model)
    for g, i in zip(gates(hard).values(), combo, strict=True):
        g.harden(CHOICES[i])
    return hard


def test_equal_to_the_estimate_of_every_hardened_model(gated) -> None:
    model, x = gated
    model = copy.deepcopy(model)
    assert cosyn.perfmodel.cost is cost
    mix = {"latency": 10.0, "lut": 1.0}
    for combo in itertools.product(range(2), repeat=2):
        hard = _hardened(model, combo)
        e = cosyn.perfmodel.estimate(cosyn.lower(hard, x), "ecp5-85f")
        assert cost(hard, x, metric=mix).item() == 10.0 * e.latency + e.lut  # one estimate
        for g, i in zip(gates(model).values(), combo, strict=True):  # the table, at a corner
            g.logits.data = torch.tensor([40.0, -40.0]) * (1 - 2 * i)
        assert cost(model, x, metric=mix).item() == pytest.approx(10.0 * e.latency + e.lut)


def test_smooth_between_and_pulled_toward_the_cheaper_choice(gated) -> None:
    model, x = gated
    model = copy.deepcopy(model)
    table = cost_table(model, x)
    relu, poly = table.values[(0, 0)]["lut"], table.values[(1, 1)]["lut"]
    assert poly > relu  # the polynomial's multiplies and tables take more than a threshold bank
    for g in gates(model).values():
        g.logits.data = torch.tensor([0.3, -0.2])
    c = cost(model, x, metric="lut")
    assert relu < c.item() < poly
    c.backward()
    for g in gates(model).values():  # more weight on poly costs more LUTs
        assert g.logits.grad[1] > 0 > g.logits.grad[0]
    p = [g.probs()[1].item() for g in gates(model).values()]  # the expectation, by hand
    by_hand = sum(
        (p[0] if a else 1 - p[0]) * (p[1] if b else 1 - p[1]) * v["lut"]
        for (a, b), v in table.values.items()
    )
    assert c.item() == pytest.approx(by_hand, rel=1e-6)


def test_beyond_the_full_table_each_gate_alone(gated, monkeypatch) -> None:
    model, x = gated
    model = copy.deepcopy(model)
    monkeypatch.setattr(loss, "MAX_COMBINATIONS", 2)
    table = cost_table(model, x)
    assert not table.full and set(table.values) == {(0, 0), (1, 0), (0, 1)}
    lut = {c: v["lut"] for c, v in table.values.items()}
    lut[1, 1] = lut[1, 0] + lut[0, 1] - lut[0, 0]  # each gate's difference added
    for combo, want in lut.items():
        for g, i in zip(gates(model).values(), combo, strict=True):
            g.logits.data = torch.tensor([40.0, -40.0]) * (1 - 2 * i)
        assert cost(model, x, metric="lut").item() == pytest.approx(want)


def test_table_built_once_and_rebuilt_on_request(gated, monkeypatch) -> None:
    model, x = gated
    model = copy.deepcopy(model)
    built = []
    combos = itertools.product((0, 1), repeat=2)
    values = {c: dict.fromkeys(loss.METRICS, float(sum(c))) for c in combos}

    def table(m, *args):  # a table of known values, without lowering
        built.append(args)
        return loss.CostTable(tuple(gates(m)), "ecp5-85f", values, (0, 0), True)

    monkeypatch.setattr(loss, "cost_table", table)
    cost(model, x)
    cost(model, x, metric="lut")
    assert len(built) == 1
    cost(model, x, refresh=True)
    cost(model, x, device="xc7z020")
    first, second = gates(model).values()
    first.harden("poly")  # a new table; the first gate's weight now all on poly
    assert cost(model, x).item() == pytest.approx(1 + second.probs()[1].item())
    assert len(built) == 4


@pytest.mark.parametrize(
    ("make", "metric", "message"),
    [
        (lambda: mlp(hidden=(8,)), "latency", "has no GateAct"),
        (lambda: mlp(hidden=(8,), act="gate"), "joules", "metric 'joules' is not one of"),
        (lambda: mlp(hidden=(8,), act="gate"), {}, "metric none is not one of"),
    ],
)
def test_bad_input_is_refused(make, metric, message: str) -> None:
    with pytest.raises(CosynError, match=message):
        cost(make().eval(), torch.rand(4, 64), metric=metric)


def test_budget_penalty_holds_the_cost_under_its_limit(gated) -> None:
    """The multiplier grows while the expected LUTs are over the limit, and its pull on
    the gates' logits brings the cost under it; over the limit no more, it decays to 0."""
    model, x = gated
    model = copy.deepcopy(model)
    table = cost_table(model, x)
    relu, poly = table.values[(0, 0)]["lut"], table.values[(1, 1)]["lut"]
    for g in gates(model).values():
        g.logits.data = torch.tensor([-1.0, 1.0])  # leaning to the costlier polynomial
    limit = relu + 0.25 * (poly - relu)
    penalty = BudgetPenalty(x, "ecp5-85f", "lut", limit, rate=2.0)
    opt = torch.optim.SGD([g.logits for g in gates(model).values()], lr=50.0)
    for _ in range(60):
        opt.zero_grad()
        penalty(model).backward()
        opt.step()
    costs, lams = zip(*penalty.history, strict=True)
    assert costs[0] > limit and max(lams) > 0  # over at first: the multiplier rose
    assert costs[-1] <= limit  # then the gates moved to ReLU until it was met
    assert all(g.probs()[0] > 0.5 for g in gates(model).values())
    slack = BudgetPenalty(x, "ecp5-85f", "lut", 2 * poly)  # never exceeded
    for _ in range(3):
        assert slack(model).item() == 0.0
    assert slack.lam == 0.0
    with pytest.raises(ValueError, match="limit must be positive"):
        BudgetPenalty(x, "ecp5-85f", "latency", 0)


def test_budget_penalty_hardens_the_gates_within_the_limit(gated) -> None:
    """Both gates lean to the polynomial, the surer one more; the limit allows one
    polynomial, not two: the surer gate keeps it, the other takes ReLU."""
    model, x = gated
    model = copy.deepcopy(model)
    table = cost_table(model, x)
    lat = {combo: v["lut"] for combo, v in table.values.items()}
    first, second = gates(model).values()
    first.logits.data, second.logits.data = torch.tensor([-2.0, 2.0]), torch.tensor([-0.5, 0.5])
    limit = (lat[(1, 0)] + lat[(1, 1)]) / 2
    assert lat[(1, 0)] <= limit < lat[(1, 1)]
    penalty = BudgetPenalty(x, "ecp5-85f", "lut", limit)
    assert list(penalty.harden(model).values()) == ["poly", "relu"]
    assert cost(model, x, metric="lut").item() == lat[(1, 0)] <= limit


def test_gates_found_as_named_modules_finds_them() -> None:
    """The cost term's own walk of the modules: the same gates, names and order."""
    from cosyn.models.gate import GateAct
    from cosyn.models.zoo import cnn

    shared = GateAct(channels=4)
    nested = torch.nn.Sequential(
        mlp(act="gate"), torch.nn.Sequential(shared, shared), cnn(act="gate")
    )
    for net in (mlp(act="gate"), nested):
        want = {n: m for n, m in net.named_modules() if isinstance(m, GateAct)}
        got = gates(net)
        assert list(got) == list(want) and all(got[k] is want[k] for k in want)
