"""The attention block (`hw/rtl/_attention.py`) in the Amaranth simulator: exactly
`Attention.eval` on every sequence, back to back and under back-pressure, in the cycles
its timing (`perfmodel.attention.AttentionTiming`) gives."""

from __future__ import annotations

import numpy as np
import pytest
from cosyn.hw.rtl._attention import AttentionBlock
from cosyn.hw.rtl._tb import Port, run_streams
from cosyn.models.intops import softmax_spec

from cosyn.ir.intervals import as_range
from cosyn.ir.kinds.attention import Attention
from cosyn.ir.nodes import IntType


def attention(pattern: str, heads: int, dh: int, max_len: int, window: int = 1,
              n_global: int = 1, bits: int = 6, k: int = 1,
              rank_bits: int = 2) -> tuple[Attention, IntType]:  # fmt: skip
    t = IntType(bits, True)
    r = as_range(t.lo, t.hi)
    spec = softmax_spec(2.0 ** -(2 * bits - 2) / dh**0.5, max_len, 8)
    node = Attention.sized(
        [r, r, r], name="att", inputs=("q", "k", "v"), shape=(heads * dh,), scale=np.float32(1),
        heads=heads, pattern=pattern, window=window, n_global=n_global, k=k, act_bits=bits,
        rank_bits=rank_bits, max_len=max_len, spec=spec,
    )  # fmt: skip
    return node, t


def stream(node: Attention, t: IntType, lengths: list[int], seed: int = 0, **kw):
    """The sequences of `lengths` (random Q, K, V of type t, the extremes among them)
    through the block: (outputs per sequence, wanted, length transfer cycles, each
    sequence's last output cycle, the block)."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(t.lo, t.hi + 1, (3, n, int(node.shape[0]))) for n in lengths]
    seqs[0][:, 0] = t.lo  # the most negative scores and values
    block = AttentionBlock(node, (t, t, t))
    ins = {"n": (Port.of(block.n), lengths)}
    for j, p in enumerate("qkv"):
        ins[p] = (Port.of(getattr(block, p)), np.concatenate([s[j].ravel() for s in seqs]).tolist())
    total = sum(s[0].size for s in seqs)
    run = run_streams(block, ins, Port.of(block.o), total, limit=2_000_000, **kw)
    ends = np.cumsum([s[0].size for s in seqs])
    got = np.split(np.asarray(run.values), ends[:-1])
    want = [node.eval(*s) for s in seqs]
    lasts = [run.out_cycles[e - 1] for e in ends]
    return got, want, run.in_cycles["n"], lasts, block


@pytest.mark.parametrize(
    ("pattern", "heads", "dh", "max_len", "window", "n_global", "lengths"),
    [
        ("dense", 1, 2, 4, 0, 0, [1, 4, 3]),
        ("dense", 2, 3, 7, 0, 0, [5, 1, 7]),
        ("window", 2, 2, 9, 1, 1, [1, 9, 2, 5]),  # lengths 1, the maximum, w and others
        ("window", 1, 3, 8, 2, 0, [3, 8, 1]),
        ("window", 3, 1, 6, 0, 2, [6, 2, 1]),
        ("window", 2, 2, 5, 3, 1, [5, 4]),  # a window wider than the sequence
    ],
)
def test_exact_back_to_back_in_the_modelled_cycles(pattern, heads, dh, max_len, window,
                                                   n_global, lengths):  # fmt: skip
    node, t = attention(pattern, heads, dh, max_len, window, n_global)
    got, want, takes, lasts, block = stream(node, t, lengths)
    for n, g, w in zip(lengths, got, want, strict=True):
        assert np.array_equal(g.reshape(w.shape), w), n
    timing = block.cycles
    for k, n in enumerate(lengths):
        assert lasts[k] - takes[k] == timing.last_output(n)
        if k + 1 < len(lengths):
            assert takes[k + 1] - takes[k] == timing.interval(n)


def test_exact_under_gaps_and_back_pressure():
    node, t = attention("window", 2, 2, 7, 1, 1)
    for seed in range(3):
        got, want, *_ = stream(node, t, [7, 3, 1], seed=seed, gaps=0.4, stalls=0.5)
        assert all(np.array_equal(g.reshape(w.shape), w) for g, w in zip(got, want, strict=True))


def test_window_cycles_grow_linearly_and_dense_quadratically():
    window, _ = attention("window", 2, 16, 257, 4, 1)
    dense, _ = attention("dense", 2, 16, 257, 0, 0)
    grow = {a.pattern: AttentionBlock(a, (IntType(6, True),) * 3).cycles for a in (window, dense)}
    w, d = (grow[p].interval(256) / grow[p].interval(32) for p in ("window", "dense"))
    assert w <= 8.5 and d > 50


@pytest.mark.parametrize(
    ("heads", "dh", "max_len", "k", "rank_bits", "lengths"),
    [(1, 2, 6, 3, 2, [6, 1, 2, 4]), (2, 3, 7, 2, 3, [5, 7, 1]), (2, 2, 5, 8, 2, [5, 3]),
     (1, 4, 9, 1, 4, [9, 3])],
)  # fmt: skip
def test_top_k_exact_in_the_modelled_cycles(heads, dh, max_len, k, rank_bits, lengths):
    """Few rank bits: many equal low-bit scores, where the lower key must win; k above
    the length (every key)."""
    node, t = attention("topk", heads, dh, max_len, k=k, rank_bits=rank_bits)
    got, want, takes, lasts, block = stream(node, t, lengths, seed=k)
    for n, g, w in zip(lengths, got, want, strict=True):
        assert np.array_equal(g.reshape(w.shape), w), n
    for j, n in enumerate(lengths):
        assert lasts[j] - takes[j] == block.cycles.last_output(n)
        if j + 1 < len(lengths):
            assert takes[j + 1] - takes[j] == block.cycles.interval(n)


@pytest.mark.parametrize(("pattern", "k"), [("window", 1), ("dense", 1), ("topk", 2)])
def test_control_model_follows_the_block_under_back_pressure(pattern, k):
    """Random gaps on every input and random back-pressure: each transfer in the cycle
    the control model (`AttentionControl`) says, the outputs exact."""
    from test_rtl_units import control_run, sim_run

    node, t = attention(pattern, 2, 2, 6, k=k)
    lengths = [4, 1, 6, 2]
    rng = np.random.default_rng(len(pattern))
    seqs = [rng.integers(t.lo, t.hi + 1, (3, n, 4)) for n in lengths]
    block = AttentionBlock(node, (t, t, t))
    values = [lengths] + [np.concatenate([s[j].ravel() for s in seqs]) for j in range(3)]
    n_out = sum(4 * n for n in lengths)
    cycles = 20 * sum(block.cycles.interval(n) for n in lengths)
    offers = [rng.random(cycles) >= 0.3 for _ in range(4)]
    readies = rng.random(cycles) >= 0.4
    ports = [block.n, block.q, block.k, block.v]
    taken, outs, ys = sim_run(block, ports, values, n_out, offers, readies)
    ctl = block.cycles.control(lengths)
    assert (taken, outs) == control_run(ctl, [len(v) for v in values], n_out, offers, readies)
    want = np.concatenate([node.eval(*s).ravel() for s in seqs])
    assert np.array_equal(ys, want)
