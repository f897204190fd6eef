"""HLS polynomial activation (CosynPoly): C simulation equal to `Poly.eval` on every input.

Graphs are built by hand around Poly nodes whose `stages` are found the way a
lowering finds them, by the Poly kind's range inference (`Poly.sized`: every input
integer of the node's range, per channel, through Horner's rule). The zoo's PolyAct
models, lowered by cosyn, are checked on the whole digits test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cosyn.hw.hls import generate
from cosyn.models import data, fit, zoo
from cosyn.models.train import predict
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_hls import ONE, _Builder, vectors

import cosyn
from cosyn.errors import BitWidthError
from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import IntType, int_type_for_range


def add_poly(b: _Builder, src: str, coeffs: np.ndarray) -> str:
    """A Poly node on `src`; `coeffs` has one row (per tensor) or one per channel."""
    return b.sized(N.Poly, (src,), shape=b.node(src).shape, coeffs=coeffs)


def shift_to(b: _Builder, src: str, bits: int, rounding: str = "half_even") -> str:
    """Requantize `src` to a signed `bits`-bit value, keeping its top bits (per channel)."""
    c = b.channels(src)
    width = int_type_for_range(*b.range(src)).bits
    k = np.maximum(width - bits + b.rng.integers(-1, 2, c), 0)
    t = IntType(bits, True)
    node = N.Shift(
        b.name("shift"),
        (src,),
        b.node(src).shape,
        t,
        ONE,
        shift=k,
        rounding=rounding,
        lo=np.full(c, t.lo),
        hi=np.full(c, t.hi),
    )
    return b.add(node)


@st.composite
def coefficients(draw, rows: int) -> np.ndarray:
    """(rows or 1, degree + 1) integers of 1 to 8 bits, the range's ends drawn often."""
    per_tensor = draw(st.booleans())
    degree = draw(st.integers(0, 4))
    t = IntType(draw(st.integers(1, 8)), draw(st.booleans()))
    value = st.one_of(st.sampled_from([t.lo, t.hi, min(t.hi, 1)]), st.integers(t.lo, t.hi))
    n = (1 if per_tensor else rows) * (degree + 1)
    return np.array(draw(st.lists(value, min_size=n, max_size=n))).reshape(-1, degree + 1)


def every_input(g: Graph) -> np.ndarray:
    """One vector per input integer; element p of vector i holds lo + (i + p) % range,
    so every element (and channel) sees every integer of the input's range."""
    t = g.input.dtype
    n = t.hi - t.lo + 1
    p = np.arange(int(np.prod(g.input.shape))).reshape(g.input.shape)
    return t.lo + (np.arange(n).reshape((n,) + (1,) * p.ndim) + p) % n


def assert_csim_exact(g: Graph, out: Path, io_type: str, xi: np.ndarray) -> None:
    h = generate(g, out, io_type=io_type)
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


def extremes_graph() -> Graph:
    """Quantize (i8) -> Poly (degree 3, coefficients at the ends of i8) -> Shift to i6."""
    b = _Builder(np.random.default_rng(0), (5,), IntType(8, True))
    coeffs = np.array(
        [
            [127, -128, 127, -128],
            [-128, -128, -128, -128],
            [1, 0, 0, 0],
            [3, -2, 5, 7],
            [0, 0, 1, 0],
        ]
    )
    shift_to(b, add_poly(b, "x", coeffs), 6)
    return b.graph()


def test_extremes_csim_is_exact_on_every_input(tmp_path: Path) -> None:
    g = extremes_graph()
    p = g.nodes[1]
    assert isinstance(p, N.Poly) and p.stages[-1].bits == 30
    xi = every_input(g)
    assert np.array_equal(generate(g, tmp_path / "p").predict_int(xi), g.run_int(xi))


def test_config_declares_every_stage_type(tmp_path: Path) -> None:
    g = extremes_graph()
    generate(g, tmp_path / "p", io_type="io_stream")
    params = (tmp_path / "p" / "firmware" / "parameters.h").read_text()
    stage_types = [IntType(8, True), *g.nodes[1].stages]
    for k, t in enumerate(stage_types):
        assert f"::stage<{k}> {{ typedef ap_int<{t.bits}> type; }};" in params
    assert "static const unsigned degree = 3;" in params
    assert (tmp_path / "p" / "firmware" / "nnet_utils" / "cosyn_poly.h").exists()


def test_wrong_stage_count_names_the_node(tmp_path: Path) -> None:
    g = extremes_graph()
    p = g.nodes[1]
    assert isinstance(p, N.Poly)
    p.stages = p.stages[:-1]
    with pytest.raises(BitWidthError, match=rf"{p.name}: a degree-3 polynomial needs 3 Horner"):
        generate(g, tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_each_step_is_held_in_its_stage_type(tmp_path: Path) -> None:
    """One bit less in a middle stage wraps some values: the C++ honours the stage types."""
    g = extremes_graph()
    p = g.nodes[1]
    assert isinstance(p, N.Poly)
    narrow = IntType(p.stages[1].bits - 1, True)
    p.stages = (p.stages[0], narrow, p.stages[2])
    xi = every_input(g)
    assert not np.array_equal(generate(g, tmp_path / "p").predict_int(xi), g.run_int(xi))


@pytest.mark.slow
def test_wide_stages_csim_is_exact(tmp_path: Path) -> None:
    """12-bit inputs and coefficients, degree 4: stages up to 57 bits, io_stream."""
    t = IntType(12, True)
    b = _Builder(np.random.default_rng(1), (3,), t)
    coeffs = np.array([[t.lo] * 5, [t.hi, t.lo, t.hi, t.lo, t.hi], [t.hi] * 5])
    p = add_poly(b, "x", coeffs)
    assert int_type_for_range(*b.range(p)).bits == 57
    shift_to(b, p, 8, "floor")
    g = b.graph()
    assert_csim_exact(g, tmp_path / "p", "io_stream", every_input(g))


@pytest.mark.slow
@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
def test_image_graph_csim_is_exact_on_every_input(tmp_path: Path, io_type: str) -> None:
    """(C, H, W) input: per-channel Poly, conv, per-tensor Poly, flatten, per-element Poly."""
    rng = np.random.default_rng(2)
    b = _Builder(rng, (3, 5, 5), IntType(6, True))
    x = add_poly(b, "x", np.array([[31, -32, 5], [-32, 0, -32], [1, 1, 1]]))
    x = shift_to(b, b.weighted(shift_to(b, x, 7), 4, 4), 5)
    x = b.flatten(add_poly(b, x, np.array([[-16, 15, 3]])))
    x = shift_to(b, x, 6)
    rows = b.channels(x)
    x = add_poly(b, x, rng.integers(-8, 8, (rows, 3)))
    b.weighted(b.threshold(x, 5), 3, 3)
    g = b.graph()
    assert sum(isinstance(n, N.Poly) for n in g) == 3
    assert_csim_exact(g, tmp_path / "p", io_type, every_input(g))


@st.composite
def poly_graphs(draw) -> Graph:
    """Quantize -> Poly -> requant, or Quantize -> Dense -> Shift -> Poly -> requant,
    or the image version (conv, with a flatten before or after the Poly); coefficients
    and inputs at their extremes."""
    shape = draw(st.sampled_from(["flat", "dense", "image", "image-flat"]))
    dtype = IntType(draw(st.integers(1, 8)), draw(st.booleans()))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = shape.startswith("image")
    b = _Builder(rng, (3, 4, 4) if image else (draw(st.integers(1, 6)),), dtype)
    x = "x"
    if shape != "flat":
        x = shift_to(b, b.weighted(x, draw(st.integers(1, 5)), 4), draw(st.integers(2, 8)))
    if shape == "image-flat":
        x = b.flatten(x)  # per-element coefficients in hls4ml's channels-last order
    p = add_poly(b, x, draw(coefficients(b.channels(x))))
    if shape == "image":
        p = b.flatten(p)
    if draw(st.booleans()):
        shift_to(b, p, draw(st.integers(2, 8)), draw(st.sampled_from(["half_even", "floor"])))
    else:
        b.threshold(p, draw(st.integers(0, 6)))
    return b.graph()


@pytest.mark.slow
@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a shrink step compiles a project
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(g=poly_graphs(), stream=st.booleans(), seed=st.integers(0, 2**16))
def test_hypothesis_poly_graphs_csim_is_exact(
    tmp_path: Path, g: Graph, stream: bool, seed: int
) -> None:
    xi = np.concatenate([every_input(g), vectors(g, 32, seed)])
    assert_csim_exact(g, tmp_path / f"p{seed}", "io_stream" if stream else "io_parallel", xi)


@pytest.mark.slow
@pytest.mark.parametrize(("factory", "io_type"), [(zoo.mlp, "io_stream"), (zoo.cnn, "io_parallel")])
def test_zoo_polyact_csim_is_exact_on_digits(tmp_path: Path, factory, io_type: str) -> None:
    """PolyAct models trained on digits: C simulation equals the model on the test set."""
    d = data.digits(image=factory is zoo.cnn)
    torch.manual_seed(0)
    model = factory(act="poly")
    fit(model, d, epochs=2, quiet=True)
    g = cosyn.lower(model, d.x_test[:8])
    assert sum(isinstance(n, N.Poly) for n in g) == 2
    h = generate(g, tmp_path / "p", io_type=io_type)
    xi = g.quantize(d.x_test.numpy())
    assert xi.shape[0] == 360
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))
    assert np.array_equal(h.predict(d.x_test.numpy()), predict(model, d.x_test).numpy())
