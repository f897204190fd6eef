"""HLS backend: hls4ml projects whose C simulation equals the golden model exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cosyn.hw.hls import BOARDS, generate
from cosyn.hw.hls._boards import resolve
from cosyn.hw.hls._convert import CONVERTERS, supported_kinds
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_nodes import LIBRARY

from cosyn.errors import CosynError
from cosyn.ir import nodes as N
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import IntType

ONE = np.float32(1.0)


class _Builder:
    """Random integer graphs built node by node; types and ranges from the node kinds."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...], dtype: IntType) -> None:
        self.rng = rng
        q = N.Quantize("x", (), shape, dtype, ONE, np.zeros(0, np.float32), dtype.lo)
        self.nodes: list[N.Node] = [q]

    def add(self, node: N.Node) -> str:
        self.nodes.append(node)
        return node.name

    def range(self, src: str) -> tuple[int, int]:
        """The graph's bounds of `src`'s values, over all its channels."""
        lo, hi = self.graph().range(src)
        return int(lo.min()), int(hi.max())

    def name(self, kind: str) -> str:
        return f"{kind}_{len(self.nodes)}"

    def node(self, name: str) -> N.Node:
        return next(n for n in self.nodes if n.name == name)

    def sized(self, cls: type[N.Node], src: tuple[str, ...], **fields) -> str:
        """A node of `cls` on `src` whose dtype is the narrowest holding its range."""
        g = self.graph()
        ins = [g.range(i) for i in src]
        return self.add(cls.sized(ins, name=self.name(cls.kind), inputs=src, scale=ONE, **fields))

    def weighted(self, src: str, out: int, wbits: int) -> str:
        x = self.node(src)
        k = 3 if len(x.shape) == 3 else None
        c = x.shape[0]
        wshape = (out, c, k, k) if k else (out, c)
        w = self.rng.integers(-(2 ** (wbits - 1)), 2 ** (wbits - 1), wshape)
        b = self.rng.integers(-(2**10), 2**10, out)
        if not k:
            return self.sized(N.Dense, (src,), shape=(out,), weight=w, bias=b)
        stride = int(self.rng.integers(1, 3))
        size = (x.shape[1] + 2 - k) // stride + 1, (x.shape[2] + 2 - k) // stride + 1
        geometry = dict(stride=(stride, stride), padding=(1, 1))
        return self.sized(N.Conv2d, (src,), shape=(out, *size), weight=w, bias=b, **geometry)

    def channels(self, src: str) -> int:
        return self.node(src).shape[0]

    def shift(self, src: str, bits: int, signed: bool, rounding: str) -> str:
        c = self.channels(src)
        t = IntType(bits, signed)
        k = self.rng.integers(-2, 9, c if self.rng.random() < 0.5 else 1)
        lo = np.full(c, 0 if self.rng.random() < 0.5 else t.lo)
        hi = np.minimum(t.hi, self.rng.integers(max(t.hi // 2, 1), t.hi + 1, c))
        node = N.Shift(
            self.name("shift"),
            (src,),
            self.node(src).shape,
            t,
            ONE,
            shift=k,
            rounding=rounding,
            lo=lo,
            hi=hi,
        )
        return self.add(node)

    def threshold(self, src: str, steps: int) -> str:
        c = self.channels(src)
        lo_x, hi_x = self.range(src)
        t = np.sort(self.rng.integers(lo_x, hi_x + 2, (c, steps)), axis=1)
        base = self.rng.integers(-4, 5, c)
        sign = np.where(self.rng.random(c) < 0.3, -1, 1)
        shape = self.node(src).shape
        return self.sized(N.Threshold, (src,), shape=shape, thresholds=t, base=base, sign=sign)

    def flatten(self, src: str) -> str:
        x = self.node(src)
        node = N.Flatten(self.name("flat"), (src,), (int(np.prod(x.shape)),), x.dtype, ONE)
        return self.add(node)

    def add2(self, a: str, b: str, shifts: tuple[int, int]) -> str:
        return self.sized(N.Add, (a, b), shape=self.node(a).shape, shifts=shifts)

    def requant(self, src: str) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.shift(
                src, int(self.rng.integers(2, 9)), bool(self.rng.random() < 0.5), "half_even"
            )
        if r < 0.7:
            return self.shift(src, int(self.rng.integers(2, 9)), True, "floor")
        return self.threshold(src, int(self.rng.integers(0, 8)))

    def graph(self) -> Graph:
        return Graph(list(self.nodes))


def random_graph(seed: int, image: bool) -> Graph:
    """Quantize -> (conv -> requant)* -> flatten -> requant -> dense -> requant, plus an add."""
    rng = np.random.default_rng(seed)
    dtype = IntType(int(rng.integers(2, 9)), bool(rng.random() < 0.5))
    b = _Builder(
        rng, (int(rng.integers(1, 3)), 5, 5) if image else (int(rng.integers(1, 9)),), dtype
    )
    x = "x"
    if image:
        x = b.requant(b.weighted(x, int(rng.integers(1, 4)), int(rng.integers(2, 5))))
        x = b.requant(b.flatten(x))  # per-element parameters on a channels-last flatten
    h = b.requant(b.weighted(x, int(rng.integers(1, 7)), int(rng.integers(2, 5))))
    y = b.requant(b.weighted(h, b.channels(h), 2))
    h = b.add2(h, y, (int(rng.integers(0, 3)), 0))
    b.weighted(b.requant(h), int(rng.integers(1, 5)), int(rng.integers(2, 9)))
    return b.graph()


def vectors(g: Graph, n: int, seed: int) -> np.ndarray:
    """Integer inputs over the input's whole range, extremes included."""
    t = g.input.dtype
    xi = np.random.default_rng(seed).integers(t.lo, t.hi + 1, (n, *g.input.shape))
    xi[0], xi[1] = t.lo, t.hi
    return xi


def test_board_presets() -> None:
    assert resolve(None, "pynq-z2", None) == ("xc7z020clg400-1", 10.0)
    assert resolve(None, "alveo-u250", 4.0) == ("xcu250-figd2104-2L-e", 4.0)
    assert resolve(None, None, None) == ("xc7z020clg400-1", 10.0)
    assert {"pynq-z2", "alveo-u250"} <= set(BOARDS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(board="de10-nano"), "Unknown board 'de10-nano'; known boards: alveo-u250"),
        (dict(part="xc9z999"), "Unknown part 'xc9z999'; known parts: "),
        (dict(io_type="io_serial"), "io_type must be one of io_parallel, io_stream"),
        (dict(backend="Quartus"), "backend must be one of Vitis, Vivado"),
        (dict(reuse_factor=0), "reuse_factor must be a positive integer"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(CosynError, match=message.replace("(", r"\(")):
        generate(random_graph(0, False), tmp_path / "p", **kwargs)
    assert not (tmp_path / "p").exists()


# The transformer's kinds: the HLS backend refuses a graph that holds them (by name).
NO_HLS_YET = {"embed", "attention", "layernorm", "gelu", "token"}


def test_every_node_kind_but_the_input_has_a_layer() -> None:
    assert set(CONVERTERS) == set(LIBRARY) - {N.Quantize.kind} - NO_HLS_YET
    assert supported_kinds() == sorted(CONVERTERS)


def test_unknown_node_names_it(tmp_path: Path) -> None:
    class Softsign(N.Node):
        kind = "softsign"

        def eval(self, x: np.ndarray) -> np.ndarray:
            return x * x

    g = random_graph(1, False)
    last = g.output
    g = Graph([*g.nodes, Softsign("act_9", (last.name,), last.shape, last.dtype, ONE)])
    with pytest.raises(CosynError, match=r"act_9 \(Softsign\).*'softsign'"):
        generate(g, tmp_path / "p")
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too


def test_project_is_written_whole(tmp_path: Path) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    h = generate(random_graph(2, True), out, board="alveo-u250", backend="Vivado")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]
    assert not (out / "stale.txt").exists()
    readme = (out / "README.md").read_text()
    assert "xcu250-figd2104-2L-e" in readme and "vivado_hls -f build_prj.tcl" in readme
    assert 'set part "xcu250-figd2104-2L-e"' in (out / "project.tcl").read_text()
    assert (out / "firmware" / "nnet_utils" / "cosyn_requant.h").exists()
    assert h.part == "xcu250-figd2104-2L-e" and h.clock_ns == 5.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("image", "options"),
    [
        (False, dict(io_type="io_parallel")),
        (True, dict(io_type="io_parallel", reuse_factor=4)),
        (False, dict(io_type="io_stream", backend="Vivado")),
        (True, dict(io_type="io_stream", reuse_factor=2)),
    ],
)
def test_random_graph_csim_is_exact(tmp_path: Path, image: bool, options: dict) -> None:
    g = random_graph(0 if image else 1, image)
    assert {N.Shift, N.Threshold, N.Add, N.Dense} <= {type(n) for n in g}
    assert {"floor", "half_even"} <= {getattr(n, "rounding", None) for n in g}
    h = generate(g, tmp_path / "p", **options)
    xi = vectors(g, 200, 0)
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


def requant_graph(kind: str) -> Graph:
    """Quantize -> one requantizer, six channels each with its own parameters."""
    t = IntType(10, True)
    q = N.Quantize("x", (), (6,), t, ONE, np.zeros(0, np.float32), t.lo)
    out = IntType(7, True)
    if kind == "threshold":
        rng = np.random.default_rng(0)
        thr = np.sort(rng.integers(t.lo, t.hi + 2, (6, 9)), axis=1)
        sign = np.array([1, -1, 1, -1, 1, 1])
        node: N.Node = N.Threshold(
            "r",
            ("x",),
            (6,),
            IntType(5, True),
            ONE,
            thresholds=thr,
            base=np.array([0, 0, -3, 4, -9, 6]),
            sign=sign,
        )
    else:
        node = N.Shift(
            "r",
            ("x",),
            (6,),
            out,
            ONE,
            shift=np.array([-1, 0, 1, 2, 3, 7]),
            rounding=kind,
            lo=np.array([out.lo, 0, -5, out.lo, -60, -3]),
            hi=np.array([out.hi, out.hi, 20, 40, out.hi, 2]),
        )
    return Graph([q, node])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["half_even", "floor", "threshold"])
def test_requantizer_csim_is_exact_on_every_input(tmp_path: Path, kind: str) -> None:
    g = requant_graph(kind)
    h = generate(g, tmp_path / "p", io_type="io_stream" if kind == "floor" else "io_parallel")
    t = g.input.dtype
    xi = np.repeat(np.arange(t.lo, t.hi + 1)[:, None], 6, axis=1)
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


@pytest.mark.slow
@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**31 - 1), image=st.booleans(), stream=st.booleans())
@example(seed=22726324, image=True, stream=False)  # a right shift by more than x's bits
@example(seed=33554431, image=True, stream=False)  # 1-bit inputs, weights of 0 only
def test_hypothesis_graphs_csim_is_exact(
    tmp_path: Path, seed: int, image: bool, stream: bool
) -> None:
    g = random_graph(seed, image)
    h = generate(g, tmp_path / f"p{seed}", io_type="io_stream" if stream else "io_parallel")
    xi = vectors(g, 64, seed)
    assert np.array_equal(h.predict_int(xi), g.run_int(xi))


def test_model_needs_example_input(tmp_path: Path) -> None:
    import torch

    with pytest.raises(CosynError, match="Linear: generating HLS from a model needs"):
        generate(torch.nn.Linear(2, 2), tmp_path / "p")
