"""`steady_interval` (which stops stepping once the pipeline's registers repeat, and
steps quiet cycles at once) equals its definition: every block's control stepped
together one cycle at a time for 4, 6, ... samples (`first_outputs`) until the last
three differences of first outputs are equal. The RTL tests hold `first_outputs` to the
simulation; these hold the shortcuts to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel import steady
from cosyn.perfmodel.pipeline import plan
from cosyn.perfmodel.steady import MAX_SAMPLES, MIN_SAMPLES, _steady_interval, first_outputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import cnns, mlps, strided_cnn
from test_ir_exact import user_net

import cosyn

SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))


def _defined(p) -> int:
    """The interval as defined: each sample count stepped from the start."""
    samples = MIN_SAMPLES
    while True:
        d = np.diff(first_outputs(p, samples, skip=False)[1])
        if samples >= MAX_SAMPLES or d[-1] == d[-2] == d[-3]:
            return int(d[-1])
        samples += 2


def _check(g, parallelism=None) -> None:
    p = plan(g, parallelism)
    assert _steady_interval(p) == _defined(p)
    fast, slow = first_outputs(p, 5), first_outputs(p, 5, skip=False)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))


@pytest.mark.parametrize("parallelism", [None, 1, 2])
def test_zoo_models(parallelism) -> None:
    torch.manual_seed(0)
    _check(cosyn.lower(mlp(act="poly").eval(), torch.zeros(1, 64)), parallelism)
    _check(cosyn.lower(cnn(act="poly").eval(), torch.zeros(1, 1, 8, 8)), parallelism)


@pytest.mark.parametrize("checks", ["every input", "first input"])
def test_registers_compared_within_a_sample(monkeypatch, checks) -> None:
    """The repeat found at any input transfer of a sample (compared with the same transfer
    of earlier samples), or at the first only, gives the interval as defined, whatever
    `_checks` would choose for the plan."""
    monkeypatch.setattr(steady, "_checks", lambda p, n_in: n_in if checks == "every input" else 1)
    torch.manual_seed(0)
    _check(cosyn.lower(mlp(act="poly").eval(), torch.zeros(1, 64)), 2)
    g = cosyn.lower(cnn(act="poly").eval(), torch.zeros(1, 1, 8, 8))
    _check(g)
    _check(g, 2)


def test_strided_cnn_and_residual() -> None:
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    _check(cosyn.lower(strided_cnn(), x), {"conv2d_1": 1, "conv2d_3": 2, "dense_6": 1})
    model = user_net(channels=3, size=6)
    _check(cosyn.lower(model.eval(), torch.randn(2, 1, 6, 6)), 1)


@SETTINGS
@given(st.data())
def test_generated_mlps(data) -> None:
    model = data.draw(mlps("short", batchnorm=True))
    g = cosyn.lower(model, torch.randn(2, model[1].in_features))
    smallest = min(n.shape[0] for n in g if n.kind == "dense")
    p = data.draw(st.sampled_from([None, 1, 2, smallest]))
    _check(g, min(p, smallest) if p else None)


@SETTINGS
@given(st.data())
def test_generated_cnns(data) -> None:
    model = data.draw(cnns())
    g = cosyn.lower(model, torch.randn(2, model[1].in_channels, 8, 8))
    outs = {n.name: int(n.shape[0]) for n in g if n.kind in ("dense", "conv2d")}
    p = data.draw(
        st.one_of(
            st.sampled_from([None, 1, 2, min(outs.values())]),
            st.fixed_dictionaries({k: st.integers(1, v) for k, v in outs.items()}),
        )
    )
    _check(g, min(p, *outs.values()) if isinstance(p, int) else p)
