"""Whole models through the RTL pipeline in the Amaranth simulator: the default CNN, a
residual net with threshold requantizers, Conv1d models with average pools, and
hypothesis-generated MLPs and CNNs. Every output equals the golden model; latency and
interval equal the manifest's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cosyn.hw.rtl import Top, generate
from cosyn.hw.rtl._tb import run_top
from cosyn.hw.rtl._verilog import lint
from cosyn.models.data import digits
from cosyn.models.train import fit
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel.pipeline import _compose, plan
from cosyn.perfmodel.steady import first_outputs
from cosyn.scheduler.parallelism import design_parallelism
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import cnns, inputs, mlps, strided_cnn
from test_ir_exact import user_net
from test_lower_patterns import AvgSignal

import cosyn

SETTINGS = settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
CNN_SETTINGS = settings(SETTINGS, max_examples=2)  # each CNN simulates thousands of cycles


def check(g: cosyn.ir.Graph, x: np.ndarray, parallelism=None, samples: int = 5) -> Top:
    """Simulate `samples` vectors at full rate the design `generate(g, parallelism=...)`
    builds (by default the allocation for ECP5-85F): exact outputs, latency, completion
    and interval, and every sample's first input and output transfer where the pipeline's
    model has it."""
    parallelism = design_parallelism(g, "ecp5-85f", parallelism)
    top = Top(plan(g, parallelism))
    xi = g.quantize(x[:samples])
    y, ins, outs = run_top(top, xi)
    assert np.array_equal(y, g.run_int(xi))
    assert outs[0, 0] - ins[0, 0] == top.plan.latency
    assert np.diff(outs[:, 0])[-1] == top.plan.interval
    e = cosyn.perfmodel.estimate(g, "ecp5-85f", parallelism)
    assert (e.latency, e.interval) == (top.plan.latency, top.plan.interval)
    assert e.completion == outs[0, -1] - ins[0, 0]  # sample 0's whole answer
    firsts_in, firsts_out = first_outputs(top.plan, samples)
    assert np.array_equal(firsts_in, ins[:, 0]) and np.array_equal(firsts_out, outs[:, 0])
    return top


def test_default_cnn_trained_on_digits(tmp_path) -> None:
    data = digits(image=True)
    torch.manual_seed(0)
    model = cnn()
    fit(model, data, epochs=1, quiet=True)
    g = cosyn.lower(model.eval(), data.x_train[:64])
    top = check(g, data.x_test.numpy(), samples=6)
    d = generate(g, tmp_path / "rtl")
    assert (d.manifest["latency"], d.manifest["interval"]) == (top.plan.latency, top.plan.interval)
    assert d.manifest["input"]["order"] == "hwc" and d.manifest["input"]["shape"] == [1, 8, 8]


def test_residual_with_thresholds_fork_and_fifo(tmp_path) -> None:
    model = user_net(channels=3, size=6)  # every block kind but poly, with a fork and a FIFO
    x = torch.randn(8, 1, 6, 6)
    g = cosyn.lower(model.eval(), x)
    assert {"add", "flatten", "threshold", "conv2d"} <= {n.kind for n in g}
    top = check(g, x.numpy(), parallelism=1)
    assert {"fork", "fifo"} <= {s.kind for s in top.plan.stages}
    assert lint(generate(g, tmp_path / "rtl", parallelism=1).path / "top.v") == ""


@SETTINGS
@given(st.data())
def test_generated_mlps(data_) -> None:
    model = data_.draw(mlps("short", batchnorm=True))
    x = data_.draw(inputs((model[1].in_features,), n=8))
    g = cosyn.lower(model, x[:2])
    smallest = min(n.shape[0] for n in g if n.kind == "dense")
    p = data_.draw(st.sampled_from([None, 1, 2, smallest]))
    check(g, x.numpy(), parallelism=min(p, smallest) if p else None)


@CNN_SETTINGS
@given(st.data())
def test_generated_cnns(data_) -> None:
    model = data_.draw(cnns())
    x = data_.draw(inputs((model[1].in_channels, 8, 8), n=8))
    g = cosyn.lower(model, x[:2])
    outs = {n.name: int(n.shape[0]) for n in g if n.kind in ("dense", "conv2d")}
    p = data_.draw(
        st.one_of(
            st.sampled_from([None, 1, 2, min(outs.values())]),
            st.fixed_dictionaries({k: st.integers(1, v) for k, v in outs.items()}),
        )
    )
    check(g, x.numpy(), parallelism=min(p, *outs.values()) if isinstance(p, int) else p,
          samples=5)  # fmt: skip


def test_strided_cnn_fifo_sized_for_the_steady_state() -> None:
    """The 3x3 conv's line buffer holds the next sample back while it still reads rows;
    with the FIFO sample 0 needs (none), the 1x1 conv in front (one multiplier) then
    refills it at its own pace, so the interval is 445, more than the slowest block's
    (440). The plan sizes a FIFO in front of the 3x3 conv for the steady state, and the
    RTL runs at 440, every sample."""
    x = torch.randn(8, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    g = cosyn.lower(strided_cnn(), x)
    p = {"conv2d_1": 1, "conv2d_3": 2, "dense_6": 1}
    assert _compose(g, p, {}).interval == 445
    top = check(g, x.numpy(), parallelism=p, samples=8)
    assert max(int(s.timing.interval) for s in top.plan.stages) == 440
    assert [s.name for s in top.plan.stages if s.kind == "fifo"] == ["conv2d_3.i.fifo"]
    assert (top.plan.latency, top.plan.interval) == (535, 440)
    _, outs = first_outputs(top.plan, 8)
    assert np.all(np.diff(outs) == 440)


@pytest.mark.parametrize(("factory", "image"), [(mlp, False), (cnn, True)])
def test_polynomial_activations_exact_and_lint_clean(factory, image, tmp_path) -> None:
    data = digits(image=image)
    torch.manual_seed(0)
    model = factory(act="poly")
    fit(model, data, epochs=1, quiet=True)
    g = cosyn.lower(model.eval(), data.x_train[:64])
    assert "poly" in {n.kind for n in g}
    check(g, data.x_test.numpy(), samples=4)
    assert lint(generate(g, tmp_path / "rtl").path / "top.v") == ""


@pytest.mark.parametrize("kind", ["module", "function"])
def test_conv1d_with_average_pools(kind) -> None:
    """A Conv1d model with AvgPool1d(3) or F.avg_pool1d(2) and a mean over L: its window
    sums on the (C, 1, L) image exact in the pipeline, with the planned latency/interval."""
    torch.manual_seed(0)
    model = AvgSignal(kind).eval()
    x = torch.rand(8, 2, 18, generator=torch.Generator().manual_seed(3)) * 2 - 1
    g = cosyn.lower(model, x[:2])
    assert [n.kind for n in g].count("avgpool2d") == 2
    check(g, x[:, :, None].numpy(), samples=4)
