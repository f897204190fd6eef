"""The whole pipeline: a trained MLP in the Amaranth simulator equals the golden model,
with the manifest's latency and interval measured exactly; files, determinism, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cosyn.hw.rtl import Top, generate
from cosyn.hw.rtl._tb import run_top
from cosyn.hw.rtl._verilog import lint
from cosyn.models.data import digits
from cosyn.models.train import fit
from cosyn.models.zoo import mlp
from cosyn.perfmodel.pipeline import plan

import cosyn
from cosyn.errors import CosynError, UnsupportedLayerError
from cosyn.ir import Graph
from cosyn.ir.nodes import IntType, Node, Quantize


@pytest.fixture(scope="module")
def trained_mlp() -> tuple[Graph, np.ndarray]:
    data = digits()
    torch.manual_seed(0)
    model = mlp()
    fit(model, data, epochs=2, quiet=True)
    model.eval()
    g = cosyn.lower(model, data.x_train[:64])
    return g, g.quantize(data.x_test[:24].numpy())


def test_mlp_exact_with_manifest_timing(trained_mlp, tmp_path) -> None:
    g, xi = trained_mlp
    d = generate(g, tmp_path / "rtl")
    y, ins, outs = run_top(Top(plan(g)), xi)
    assert np.array_equal(y, g.run_int(xi))
    assert outs[0, 0] - ins[0, 0] == d.manifest["latency"]
    assert set(np.diff(outs[:, 0]).tolist()) == {d.manifest["interval"]}


def test_mlp_back_pressure_and_gaps_lose_nothing(trained_mlp) -> None:
    g, xi = trained_mlp
    y, _, _ = run_top(Top(plan(g, 4)), xi[:6], gaps=0.3, stalls=0.5, seed=3)
    assert np.array_equal(y, g.run_int(xi[:6]))


@pytest.mark.parametrize("p", [1, 3, {"dense_1": 16, "dense_3": 5}])
def test_parallelism_timing_measured(trained_mlp, p) -> None:
    g, xi = trained_mlp
    top = Top(plan(g, p))
    y, ins, outs = run_top(top, xi[:5])
    assert np.array_equal(y, g.run_int(xi[:5]))
    assert outs[0, 0] - ins[0, 0] == top.plan.latency
    assert np.diff(outs[:, 0])[-1] == top.plan.interval
    e = cosyn.perfmodel.estimate(g, "ecp5-85f", p)
    assert outs[0, -1] - ins[0, 0] == e.completion  # sample 0's last output


def test_dense_interval_near_ideal(trained_mlp) -> None:
    g, _ = trained_mlp
    for p in (1, 2, 4, 8):
        for s in Top(plan(g, p)).plan.stages:
            if s.node.kind == "dense":  # groups of P outputs, the last maybe partly empty
                n, outputs = s.node.macs // int(s.node.shape[0]), int(s.node.shape[0])
                ideal = n * -(-outputs // s.parallelism)
                assert s.timing.interval <= 1.05 * ideal, (s.node.name, p)


def test_files_manifest_and_determinism(trained_mlp, tmp_path) -> None:
    g, _ = trained_mlp
    a = generate(g, tmp_path / "a", parallelism={"dense_1": 3})
    b = generate(g, tmp_path / "b", parallelism={"dense_1": 3})
    assert sorted(p.name for p in a.path.iterdir()) == ["manifest.json", "top.v"]
    for f in ("top.v", "manifest.json"):
        assert (a.path / f).read_bytes() == (b.path / f).read_bytes()
    man = json.loads((a.path / "manifest.json").read_text())
    assert man == a.manifest and man["top"] == "cosyn_top"
    assert "module cosyn_top" in (a.path / "top.v").read_text()
    assert man["input"] == {
        "shape": [64],
        "order": "flat",
        "bits": 8,
        "signed": False,
        "tdata_width": 8,
        "elements": 64,
    }
    d1 = next(n for n in man["nodes"] if n["name"] == "dense_1")
    assert (d1["parallelism"], d1["requested_parallelism"], d1["note"]) == (3, 3, "")


@pytest.mark.parametrize("p", [0, -2, 65, 2.5])
def test_impossible_parallelism_names_the_node(trained_mlp, p, tmp_path) -> None:
    g, _ = trained_mlp
    with pytest.raises(CosynError, match="dense_1"):
        generate(g, tmp_path / "x", parallelism={"dense_1": p})
    assert not (tmp_path / "x").exists()


def test_unknown_kind_is_unsupported(trained_mlp, tmp_path) -> None:
    g, _ = trained_mlp

    class Mystery(Node):
        kind = "mystery"

    q: Quantize = g.input
    odd = Mystery("odd_1", (q.name,), q.shape, IntType(8, False), q.scale)
    with pytest.raises(UnsupportedLayerError, match="odd_1"):
        generate(Graph([q, odd]), tmp_path / "y")


@pytest.mark.parametrize("p", [None, 3])
def test_top_v_lints_clean_under_verilator_wall(trained_mlp, tmp_path, p) -> None:
    g, _ = trained_mlp
    d = generate(g, tmp_path / "rtl", parallelism=p)
    assert lint(d.path / "top.v") == ""
