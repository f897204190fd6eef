"""Parallelism allocation (`cosyn.scheduler.allocate`): the smallest interval under a budget
with each node balanced to it, the fewest resources for a target interval, bad budgets
and targets refused in one line, and an allocated CNN exact in RTL simulation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel.pipeline import (
    default_parallelism,
    folded,
    parallelism_pair,
    plan,
    resolve_parallelism,
)
from cosyn.scheduler import allocate
from cosyn.scheduler.parallelism import _choices, design_parallelism
from test_cli import cli
from test_rtl_models import check

import cosyn
from cosyn.errors import CosynError


@pytest.fixture(scope="module")
def graphs() -> dict[str, cosyn.ir.Graph]:
    torch.manual_seed(0)
    return {
        "mlp": cosyn.lower(mlp(act="poly").eval(), torch.zeros(1, 64)),
        "cnn": cosyn.lower(cnn(act="poly").eval(), torch.zeros(1, 1, 8, 8)),
    }


def _smaller(g: cosyn.ir.Graph, name: str, p) -> list:
    """The parallelisms next below p (P, or (P, S)) that node `name` takes as they are:
    the next P down at the same S, and the next S down at the same P."""
    q, s = parallelism_pair(p)
    out = [(r if s == 1 else (r, s)) for r in reversed(_parallelisms(g[name])) if r < q][:1]
    if s > 1:
        k = max(d for d in range(1, s) if g[name].lane_inputs % d == 0)
        out.append(q if k == 1 else (q, k))
    return out


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fastest_interval_with_every_node_balanced(graphs, name: str) -> None:
    """The MLP's default rule (every output up to 64) is its fastest design, and the
    allocation meets it with fewer multipliers; the CNN's allocation is twice as fast as
    the rule (SIMD: its 16-output conv takes two channels a cycle, (16, 2)). The
    allocation is what the estimate (and `rtl.generate`) takes by default."""
    g = graphs[name]
    a = allocate(g, "ecp5-85f")
    assert cosyn.perfmodel.estimate(g, "ecp5-85f") == a.estimate
    default = cosyn.perfmodel.estimate(g, "ecp5-85f", "rule")
    if name == "mlp":
        assert a.interval == default.interval
        assert a.multipliers < sum(default_parallelism(n) for n in g if folded(n))
        assert a.estimate.lut < default.lut
    else:
        assert 2 * a.interval == default.interval and a.parallelism["conv2d_3"] == (16, 2)
    for node, p in a.parallelism.items():  # one multiplier fewer anywhere is slower
        for q in _smaller(g, node, p):
            slower = cosyn.perfmodel.estimate(g, "ecp5-85f", {**a.parallelism, node: q})
            assert slower.interval > a.interval, (node, p, q)
    assert a.utilization == pytest.approx(
        sum(g[n].macs for n in a.parallelism) / (a.multipliers * a.interval)
    )


def test_generate_allocates_for_its_device_by_default(graphs, tmp_path) -> None:
    """`rtl.generate` builds the allocation for its device, with the estimate's cycles; a
    design that fits the device at no parallelism keeps the default rule, and its
    estimate says what is over."""
    g = graphs["cnn"]
    a = allocate(g, "ecp5-85f")
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    built = {n["name"]: (n["parallelism"], n["simd"]) for n in d.manifest["nodes"]}
    assert all(built[n] == parallelism_pair(p) for n, p in a.parallelism.items())
    assert (d.manifest["latency"], d.manifest["interval"]) == (a.estimate.latency, a.interval)
    rule = cosyn.rtl.generate(g, tmp_path / "rule", "rule")
    assert rule.manifest["interval"] == cosyn.perfmodel.estimate(g, parallelism="rule").interval
    assert rule.manifest["interval"] == 2 * a.interval
    torch.manual_seed(0)
    wide = cosyn.lower(mlp(act="poly", hidden=(256,)).eval(), torch.zeros(1, 64))
    assert design_parallelism(wide, "ice40-up5k") is None
    over = cosyn.perfmodel.estimate(wide, "ice40-up5k")
    assert over == cosyn.perfmodel.estimate(wide, "ice40-up5k", "rule")
    assert over.fit_message().startswith("does not fit ice40-up5k: LUT")


def test_target_interval_takes_the_fewest_multipliers_that_meet_it(graphs) -> None:
    g = graphs["cnn"]
    fastest = allocate(g)
    a = allocate(g, target_interval=2 * fastest.interval)
    assert fastest.interval < a.interval <= 2 * fastest.interval
    assert a.multipliers < fastest.multipliers
    e = cosyn.perfmodel.estimate(g, "ecp5-85f", a.parallelism)
    assert (e.interval, e.lut) == (a.interval, a.estimate.lut)


def test_budget_trades_interval_for_resources(graphs) -> None:
    g = graphs["mlp"]
    fastest = allocate(g)
    limit = fastest.estimate.lut // 2
    a = allocate(g, budget={"lut": limit})
    assert a.estimate.lut <= limit < fastest.estimate.lut
    assert a.interval > fastest.interval
    half = allocate(g, budget=0.5)
    assert half.estimate.lut <= 0.5 * half.estimate.capacity["lut"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_interval": 10}, "target interval 10 is below 64 cycles"),
        ({"target_interval": 0}, "positive integer"),
        (
            {"budget": {"lut": 100}},
            "no parallelism fits the budget on ecp5-85f: the smallest design's dense/conv2d "
            "blocks alone need LUT",
        ),
        ({"budget": {"luts": 100}}, "unknown resource 'luts'"),
        ({"target_interval": 64, "budget": {"lut": 6000}}, "target interval 64 needs LUT"),
        ({"budget": 1.5}, "fraction of the device"),
        ({"device": "ecp6"}, "unknown device 'ecp6'"),
        ({"target_latency": 200}, "target latency 200 is below 2[0-9][0-9] cycles, the least"),
        ({"target_latency": -5}, "target latency must be a positive integer"),
        ({"target_latency": 900, "target_interval": 64}, "target interval or a target latency"),
    ],
)
def test_bad_targets_and_budgets_are_refused(graphs, kwargs, message: str) -> None:
    with pytest.raises(CosynError, match=message):
        allocate(graphs["mlp"], **kwargs)


def _weight(e: cosyn.perfmodel.Estimate) -> float:
    """The allocator's one figure for resources: the device fractions they take, summed."""
    return sum(getattr(e, r) / v for r, v in e.capacity.items() if v)


def _parallelisms(node) -> list[int]:
    """Every parallelism `node` takes as it is, less those with as many groups of lanes
    as one lane fewer (more multipliers, the same cycles)."""
    outs, ps = int(node.shape[0]), []
    for p in range(1, outs + 1):
        try:
            kept = resolve_parallelism(node, p, p)[0] == p
        except CosynError:
            break
        if kept and (p == 1 or -(-outs // p) < -(-outs // (p - 1))):
            ps.append(p)
    return ps


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_target_latency_takes_the_fewest_resources_that_meet_it(graphs, name: str) -> None:
    """The whole answer (first input to last output) within the target, and no node at
    its next smaller parallelism meets it with fewer resources."""
    g = graphs[name]
    fastest = allocate(g)
    for factor in (1.5, 3, 8):
        target = int(factor * fastest.estimate.completion)
        a = allocate(g, target_latency=target)
        assert a.estimate.completion <= target
        e = cosyn.perfmodel.estimate(g, "ecp5-85f", a.parallelism)
        assert (e.latency, e.completion, e.interval, e.lut) == (
            a.estimate.latency, a.estimate.completion, a.interval, a.estimate.lut
        )  # fmt: skip
        for node, p in a.parallelism.items():
            for q in _smaller(g, node, p):
                other = cosyn.perfmodel.estimate(g, "ecp5-85f", {**a.parallelism, node: q})
                assert other.completion > target or _weight(other) >= _weight(a.estimate)


def test_target_latency_is_the_cheapest_of_every_choice(graphs) -> None:
    """Against every combination of the MLP's choices (6,336: each P, and each (P, S)
    that needs fewer cycles than every choice of no more multipliers): the allocation
    for a latency is the cheapest that meets it."""
    g = graphs["mlp"]
    nodes = [n for n in g if folded(n)]
    options = [_choices(s) for s in plan(g).stages if s.node in nodes]
    assert all(p in o for n, o in zip(nodes, options, strict=True) for p in _parallelisms(n))
    designs = [
        cosyn.perfmodel.estimate(g, "ecp5-85f", dict(zip([n.name for n in nodes], c, strict=True)))
        for c in itertools.product(*options)
    ]
    for target in sorted({d.completion for d in designs})[1::27]:
        a = allocate(g, target_latency=target)
        cheapest = min(_weight(d) for d in designs if d.completion <= target)
        assert _weight(a.estimate) == pytest.approx(cheapest), target


def test_allocated_cnn_is_exact_in_rtl_with_the_estimated_cycles(graphs) -> None:
    g = graphs["cnn"]
    a = allocate(g, target_interval=1152)
    assert a.parallelism["dense_6"] == 3  # a last group of one lane: 10 outputs
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    top = check(g, x, parallelism=a.parallelism, samples=3)
    assert (top.plan.latency, top.plan.interval) == (a.estimate.latency, a.interval)
    assert {s.name: s.folding for s in top.plan.stages if s.name in a.parallelism} == (
        a.parallelism
    )


def test_allocated_simd_cnn_is_exact_in_rtl_with_the_estimated_cycles(graphs) -> None:
    """The fastest allocation (a conv with SIMD, (16, 2)), through the whole pipeline."""
    g = graphs["cnn"]
    a = allocate(g)
    assert any(isinstance(p, tuple) for p in a.parallelism.values())
    x = np.random.default_rng(1).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    top = check(g, x, parallelism=a.parallelism, samples=3)
    assert (top.plan.latency, top.plan.interval) == (a.estimate.latency, a.interval)


def test_cli_estimate_with_allocated_parallelism() -> None:
    model = ["estimate", "cosyn.models.zoo:mlp", "--act", "poly"]
    r = cli(*model, "--parallelism", "auto", "--budget", "0.5")
    assert r.returncode == 0, r.stderr
    assert "parallelism on ecp5-85f" in r.stdout and "allocated and estimated in" in r.stdout
    bad = cli(*model, "--parallelism", "rule", "--budget", "0.5")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--target-interval and --budget go with --parallelism auto" in bad.stderr
