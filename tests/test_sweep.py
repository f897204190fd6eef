"""`cosyn sweep`: trainings under latency budgets as Ray tasks, their accuracy/latency
front, points kept across runs, and bad budgets, seeds and clusters refused in one line."""

from __future__ import annotations

import json

import pytest
from cosyn.models.sweep import Point, dominates, front
from cosyn.perfmodel.pipeline import multipliers
from test_cli import cli


def _p(budget: str, accuracy: float, completion: int, lut: float) -> Point:
    return Point(budget, 0, accuracy, completion, 64, lut, 8, {"g": "relu"})


def test_front_keeps_what_nothing_dominates() -> None:
    fast, slow_better, slow_worse = (
        _p("a", 95.0, 400, 9000),
        _p("b", 97.0, 900, 5000),
        _p("c", 96.0, 900, 5000),
    )
    same = _p("d", 95.0, 400, 9000)
    assert dominates(slow_better, slow_worse) and not dominates(slow_worse, slow_better)
    assert not dominates(fast, same) and not dominates(fast, slow_better)
    assert front([slow_worse, fast, slow_better, same]) == [fast, same, slow_better]


def test_points_are_known_by_budget_seed_and_activation() -> None:
    """A gated point keeps its name; a point of another activation names it, and shows it
    where it has no gates to show."""
    gated, relu = _p("4us", 97.0, 400, 5000), Point("4us", 1, 97.0, 400, 64, 5000, 8, {}, "relu")
    assert gated.key == "4us-seed0" and gated.activations == "relu"
    assert relu.key == "4us-relu-seed1" and relu.activations == "relu"


@pytest.mark.slow
def test_sweep_trains_each_budget_on_ray_and_keeps_the_points(tmp_path) -> None:
    """One point: `cosyn train --latency-budget 6us --lut-weight 1` in a Ray task (the
    gates trained with the budget and the LUTs in the loss, the parallelism allocated for
    it, the design simulated on Icarus: the whole answer within 600 cycles, as
    estimated), kept, and kept again."""
    out = tmp_path / "sweep"
    args = ("sweep", "--budgets", "6us", "--lut-weight", "1", "--epochs", "1", "--workers", "1",
            "--out", str(out))  # fmt: skip
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    point = out / "points" / "6us-seed0"
    report = json.loads((point / "train.json").read_text())
    a, sim = report["allocation"], report["simulation"]
    assert a["estimate"]["completion"] == sim["completion"] <= 600 and sim["mismatches"] == 0
    assert a["estimate"]["latency"] == sim["latency"]
    # fewer than the fastest design's multipliers
    assert sum(map(multipliers, a["parallelism"].values())) < 101
    assert report["budget"]["latency"] == 600 and report["budget"]["lut_weight"] == 1.0
    assert set(report["choices"].values()) <= {"relu", "poly"}
    s = json.loads((out / "sweep.json").read_text())
    assert [p["budget"] for p in s["points"]] == ["6us"] and s["front"] == ["6us-seed0"]
    assert s["points"][0]["completion"] == sim["completion"]
    assert (out / "front.png").stat().st_size > 0 and (point / "model.pt").is_file()
    again = cli(*args)  # kept: nothing to train, no Ray started
    assert again.returncode == 0, again.stderr
    kept = json.loads((out / "sweep.json").read_text())
    assert kept["trained"] == 0 and kept["points"] == s["points"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--budgets", "1us"), "--budgets 1us: target latency 100 is below"),
        (("--budgets", "8us", "--seeds", "a"), "--seeds 'a': give whole numbers"),
        (("--budgets", "8us", "--address", "127.0.0.1:1"), "--address 127.0.0.1:1: no Ray"),
        (("--budgets", "8us", "--address", "nowhere"), "give the Ray cluster as host:port"),
        (("--budgets", "8us", "--acts", "relu,tanh"), "--acts 'tanh': choose one of"),
    ],
)
def test_sweep_refuses_in_one_line(tmp_path, extra, message: str) -> None:
    r = cli("sweep", "--out", str(tmp_path / "s"), *extra)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_demo_sweep_row_says_which_budgets_were_met(monkeypatch, tmp_path) -> None:
    """`cosyn demo --sweep`'s row: budgets met by the points' simulated whole answer (the
    sweep itself is the test above); a point over its budget, or one that failed, fails
    the demo."""
    from cosyn.models.sweep import Point, Sweep

    from cosyn import cli as cosyn_cli

    def point(budget: str, completion: int) -> Point:
        return Point(budget, 0, 96.0, completion, 64, 5000.0, 20, {})

    def fake(points, failed=None):
        return lambda *a, **k: Sweep("m", "ecp5-85f", points, len(points), 1.0, failed or {})

    budgets = ("400cycles", "800cycles")
    monkeypatch.setattr(cosyn_cli.sweeps, "sweep", fake([point("400cycles", 384),
                                                         point("800cycles", 742)]))  # fmt: skip
    check, result, ok = cosyn_cli._demo_sweep(tmp_path, 0, 1, budgets)
    assert check.startswith("sweep (Ray, GateActs, 1 epochs)")
    assert ok and result.startswith("2 of 2 budgets met") and "front: 400cycles" in result
    monkeypatch.setattr(cosyn_cli.sweeps, "sweep", fake([point("400cycles", 401)]))
    assert not cosyn_cli._demo_sweep(tmp_path, 0, 1, budgets)[2]
    failed = fake([point("400cycles", 384)], {"800cycles-seed0": "error"})
    monkeypatch.setattr(cosyn_cli.sweeps, "sweep", failed)
    assert not cosyn_cli._demo_sweep(tmp_path, 0, 1, budgets)[2]
