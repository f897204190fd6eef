"""Hardware-aware sparsity: block masks by magnitude, drop and grow by gradient, and a
masked MLP in the Amaranth simulator: bit-exact, in the cycles of the terms it keeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cosyn.hw.rtl import Top
from cosyn.hw.rtl._tb import run_top
from cosyn.models.data import digits
from cosyn.models.sparsity import Masks
from cosyn.models.train import fit
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel.pipeline import plan
from test_cli import cli

import cosyn

BLOCK = {"1": 4, "3": 2, "5": 1}  # the layers' parallelism in the design (dense_1, ...)


def _blocks(w: torch.Tensor, p: int) -> torch.Tensor:
    """Whether each block of p outputs by one input has a non-zero weight."""
    return (w.detach().reshape(-1, p, w.shape[1]) != 0).any(1)


def test_prune_keeps_the_largest_blocks_and_they_stay_zero() -> None:
    torch.manual_seed(0)
    model = mlp()
    norms = {n: m.weight.detach().abs().reshape(-1, BLOCK[n], m.in_features).sum(1)
             for n, m in model.named_modules() if n in BLOCK}  # fmt: skip
    masks = Masks(model, 0.25, BLOCK).prune()
    for name, m in masks.layers.items():
        live = _blocks(m.weight, BLOCK[name])
        assert int(live.sum()) == round(0.25 * live.numel())
        assert norms[name][live].min() >= norms[name][~live].max()  # the largest kept
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(3):  # Adam's momentum moves every weight; the step zeroes them again
        model(torch.rand(8, 64)).sum().backward()
        opt.step()
        masks.step()
    for name, m in masks.layers.items():
        assert not (_blocks(m.weight, BLOCK[name]) & ~masks.mask[name]).any()
        assert torch.equal(masks.kept[name], 4.0 * masks.mask[name])  # prune, 3 steps
    assert masks.sparsity() >= 0.75
    masks.prune()  # kept counts from the last prune: the steps before it are not kept's
    assert all(torch.equal(masks.kept[n], masks.mask[n].float()) for n in masks.layers)
    with pytest.raises(ValueError, match="layer 5: a block of 11 outputs"):
        Masks(model, 0.5, 11)
    with pytest.raises(ValueError, match="layer dense_1: no QuantLinear"):
        Masks(model, 0.5, {"dense_1": 4})


@pytest.mark.parametrize("explore", [0.0, 1.0])
def test_drop_and_grow_keeps_the_density_and_grows_where_the_gradient_is(explore) -> None:
    torch.manual_seed(1)
    model = mlp()
    masks = Masks(model, 0.3, BLOCK, every=1, stop=10, drop=0.5, explore=explore).prune()
    before = {n: m.clone() for n, m in masks.mask.items()}
    model(torch.rand(16, 64)).pow(2).sum().backward()
    grads = {n: m.weight.grad.abs().reshape(-1, BLOCK[n], m.in_features).sum(1)
             for n, m in masks.layers.items()}  # fmt: skip
    masks.step()
    for name, mask in masks.mask.items():
        assert int(mask.sum()) == int(before[name].sum())  # the density holds
        grown = mask & ~before[name]
        assert grown.any()
        if not explore:  # RigL: no block left out has a larger gradient than one grown
            others = ~mask & ~before[name]
            assert grads[name][grown].min() >= grads[name][others].max()


def test_sparse_mlp_exact_in_the_cycles_of_its_kept_terms() -> None:
    """80% of the blocks masked, trained a little: the pipeline in the Amaranth
    simulator equals the golden model, on the plan's latency and interval, and each
    dense block issues only its groups' kept terms."""
    data = digits()
    torch.manual_seed(0)
    model = mlp()
    masks = Masks(model, 0.2, BLOCK).prune()
    fit(model, data, epochs=1, quiet=True, on_step=masks.step)
    g = cosyn.lower(model.eval(), data.x_train[:64])
    par = {f"dense_{k}": p for k, p in BLOCK.items()}
    pl = plan(g, par)
    for s in pl.stages:
        if s.kind == "dense":
            live = _blocks(torch.from_numpy(s.node.weight), s.parallelism).sum(1)
            assert s.timing.sparse and s.timing.terms == tuple(max(int(k), 1) for k in live)
    dense = max(s.timing.groups * max(s.timing.n, s.timing.p) for s in pl.stages
                if s.kind == "dense")  # fmt: skip
    assert pl.interval <= 0.3 * dense
    xi = g.quantize(data.x_test[:4].numpy())
    y, ins, outs = run_top(Top(pl), xi)
    assert np.array_equal(y, g.run_int(xi))
    assert outs[0, 0] - ins[0, 0] == pl.latency
    assert np.diff(outs[:, 0])[-1] == pl.interval


@pytest.mark.slow
def test_sparse_cnn_exact_in_the_cycles_of_its_kept_terms(tmp_path) -> None:
    """The default CNN with 80% of its blocks masked (its convolutions too): both conv
    blocks skip terms, and the pipeline equals the golden model on the plan's latency
    and interval in the Amaranth simulator and on Verilator (its Verilog, random gaps
    and back-pressure), in fewer cycles than every term's."""
    from test_rtl_models import check

    torch.manual_seed(0)
    model = cnn()
    par = {"conv2d_1": 4, "conv2d_3": 5, "dense_6": 3}  # a last group of 1 in the last two
    block = {"1": 4, "3": 5, "6": 3}  # the layers of those nodes
    masks = Masks(model, 0.2, block).prune()
    assert set(masks.layers) == set(block)
    x = torch.rand(3, 1, 8, 8)
    g = cosyn.lower(model.eval(), x)
    pl = plan(g, par)
    convs = [s for s in pl.stages if s.kind == "conv2d"]
    assert len(convs) == 2 and all(s.timing.kept is not None for s in convs)
    top = check(g, x.numpy(), par, samples=3)
    r = cosyn.sim.simulate(cosyn.rtl.generate(g, tmp_path / "rtl", par), x.numpy(), "verilator")
    assert r.ok and r.mismatches == 0 and (r.latency, r.interval) == (pl.latency, pl.interval)
    for layer in model.modules():  # every weight back: the blocks issue every term
        if isinstance(layer, Masks.LAYER):
            with torch.no_grad():
                layer.weight.add_(1.0)
    full = plan(cosyn.lower(model.eval(), x), par)
    assert top.plan.interval < 0.5 * full.interval


def test_allocation_counts_the_terms_a_sparse_block_issues() -> None:
    """80% of the weights masked: each dense block meets the target interval with fewer
    multipliers than its MACs would need, and no multiplier is busier than every cycle."""
    from cosyn.scheduler import allocate

    torch.manual_seed(0)
    model = mlp()
    Masks(model, 0.2).prune()
    g = cosyn.lower(model.eval(), torch.rand(4, 64))
    a = allocate(g, "ecp5-85f", target_interval=1024)
    assert a.interval <= 1024 and a.utilization <= 1
    assert a.multipliers < sum(-(-n.macs // 1024) for n in g if n.kind == "dense")


def test_cli_train_with_a_density(tmp_path) -> None:
    """`cosyn train --density`: blocks of the default design's parallelism (the allocation
    for ECP5-85F: dense_5's 10 outputs in two groups of P = 5), 20% kept; a density out
    of range or an unknown method is a one-line error, exit 2, before training."""
    out = tmp_path / "m.pt"
    r = cli("train", "--epochs", "3", "--density", "0.2", "--sparse", "dst-ee", "--out", str(out))
    assert r.returncode == 0, r.stderr
    w = torch.load(out)["5.weight"]  # 10 outputs by 32 inputs: two blocks per input
    blocks = (w.reshape(2, 5, 32) != 0).any(1)
    assert int(blocks.sum()) == round(0.2 * blocks.numel()) and "weights zero" in r.stdout
    for bad in (["--density", "0"], ["--density", "0.5", "--sparse", "topk"], ["--sparse", "rigl"]):
        r = cli("train", "--epochs", "1", *bad, "--out", str(tmp_path / "x.pt"))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x.pt").exists()


def test_cli_train_with_a_density_under_a_latency_budget(tmp_path) -> None:
    """Under a budget the blocks span the allocation's parallelism, the cost's table is
    estimated again after pruning, the hardened gates' fine-tuning keeps the masks, and
    the design, estimated and simulated on Icarus (`train.json`), meets the budget with
    equal cycles."""
    out = tmp_path / "m.pt"
    r = cli("train", "--act", "gate", "--latency-budget", "8us", "--density", "0.3",
            "--epochs", "3", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "train.json").read_text())
    sim, est = report["simulation"], report["allocation"]["estimate"]
    assert sim["mismatches"] == 0 and sim["completion"] == est["completion"] <= 800
    assert "weights zero in the masked layers" in r.stdout
    assert "fine-tuned for 1 epoch\n" in r.stdout
    w = torch.load(out)["5.weight"]
    assert float((w != 0).float().mean()) <= 0.3 + 1 / w.shape[1]  # at most 30% of blocks kept
