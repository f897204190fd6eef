"""A whole transformer encoder in RTL (`SequenceTop`): each sequence at its own length,
every output equal to the golden model's, in the Amaranth simulator (all three attention
patterns, lengths 1, w, the maximum and others, with gaps and back-pressure), on Icarus
and Verilator through `cosyn.sim.simulate`, lint-clean; every sequence's cycles equal to
the performance model's (`perfmodel.sequence`), and so the length-aware scheduler's
prediction of a stream drawn from the standard library's lengths; bad sequences refused
by the testbench writer in one line each."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cosyn.hw.rtl._sequence import SequenceTop
from cosyn.hw.rtl._tb import Port, run_streams
from cosyn.hw.rtl._verilog import lint
from cosyn.models import data, zoo
from cosyn.perfmodel.sequence import sequence_cycles
from cosyn.scheduler import schedule_sequences, stdlib_lengths
from cosyn.sim import SimulationError

import cosyn

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

MAX_LEN = 9  # with the CLS token: sequences of 1 to 8 tokens
WINDOW = 2


def graph(pattern: str, blocks: int = 1, act: str = "relu") -> cosyn.ir.Graph:
    """A small zoo transformer whose quantizers have seen ListOps."""
    torch.manual_seed(0)
    m = zoo.transformer(dim=8, heads=2, ffn=16, blocks=blocks, max_len=MAX_LEN, window=WINDOW,
                        k=3, pattern=pattern, act=act)  # fmt: skip
    m(data.listops(n_train=24, n_test=0, min_len=2, max_len=8, max_depth=2, seed=4).x_train)
    return cosyn.lower(m.eval(), None)


def sequences(lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 15, n) for n in lengths]


def run(top: SequenceTop, seqs: list[np.ndarray], **kw) -> tuple[np.ndarray, np.ndarray]:
    """The outputs of each sequence streamed through `top` in-process (count, then ids),
    and per sequence the cycles its count went in, its first and its last output left."""
    flat = [v for s in seqs for v in (len(s), *s.tolist())]
    src = Port(top.s_axis_tvalid, top.s_axis_tready, top.s_axis_tdata)
    sink = Port(top.m_axis_tvalid, top.m_axis_tready, top.m_axis_tdata, top.m_axis_tlast)
    r = run_streams(top, {"s": (src, flat)}, sink, len(seqs) * top.out_elements,
                    limit=2_000_000, **kw)  # fmt: skip
    y = np.asarray(r.values, dtype=np.int64).reshape(len(seqs), -1)
    assert np.array_equal(np.asarray(r.lasts).reshape(y.shape)[:, -1], np.ones(len(seqs)))
    assert np.asarray(r.lasts).sum() == len(seqs)
    width = sink.data.shape().width
    y = np.where(y >= 1 << (width - 1), y - (1 << width), y) if top.out_type.signed else y
    starts = np.cumsum([0, *(len(s) + 1 for s in seqs)])[:-1]
    outs = np.asarray(r.out_cycles).reshape(len(seqs), -1)
    return y, np.stack([np.asarray(r.in_cycles["s"])[starts], outs[:, 0], outs[:, -1]])


def golden(g: cosyn.ir.Graph, seqs: list[np.ndarray]) -> np.ndarray:
    return np.stack([g.run_int(s).reshape(-1) for s in seqs])


@pytest.mark.parametrize(
    ("pattern", "blocks", "act", "lengths", "stress"),
    [
        ("window", 1, "relu", [1, WINDOW, 8, 3, 5, 7], False),
        ("dense", 2, "gelu", [8, 1, 5, 2], False),
        ("topk", 1, "relu", [3, 8, 1, 6], True),
    ],
)
def test_encoder_is_exact_at_every_kind_of_length(pattern, blocks, act, lengths, stress) -> None:
    g = graph(pattern, blocks, act)
    top = SequenceTop(g)
    seqs = sequences(lengths)
    kw = {"gaps": 0.3, "stalls": 0.4, "seed": 1} if stress else {}
    y, cycles = run(top, seqs, **kw)
    assert np.array_equal(y, golden(g, seqs))
    if not stress:  # at full rate, every sequence's cycles are the model's
        assert np.array_equal(cycles, np.stack(sequence_cycles(top.plan, lengths)))


def test_skip_fifos_hold_what_the_other_path_holds() -> None:
    top = SequenceTop(graph("window", blocks=2))
    depths = {(r, j): d for r, j, d in top.fifos}
    # around attention: the longest sequence (9 tokens of 8) and two tokens more
    assert depths[("blocks_0_add1", 0)] == (MAX_LEN + 2) * 8
    # the last block's skip carries the CLS row alone: three rows
    assert depths[("blocks_1_add1", 0)] == 3 * 8
    # around the feed-forward layers: its four blocks and two, of 16-element tokens
    assert depths[("blocks_0_add2", 0)] == depths[("blocks_1_add2", 0)] == (4 + 2) * 16
    assert len(depths) == 4


@pytest.mark.slow
@pytest.mark.parametrize(("simulator", "pattern"), [("icarus", "window"), ("verilator", "topk")])
def test_encoder_on_a_simulator(simulator, pattern, tmp_path) -> None:
    g = graph(pattern, blocks=2)
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    assert d.manifest["sequence"] and d.manifest["max_tokens"] == MAX_LEN - 1
    if simulator == "verilator":
        assert lint(d.path / "top.v") == ""
    seqs = sequences([1, 8, WINDOW, 5, 3, 8, 7])
    r = cosyn.sim.simulate(d, seqs, simulator)
    assert r.ok and r.vectors == len(seqs) and r.mismatches == 0
    assert np.array_equal(r.outputs.reshape(len(seqs), -1), golden(g, seqs))


@pytest.mark.slow
def test_scheduled_stream_takes_the_predicted_cycles_on_verilator(tmp_path) -> None:
    """Issue 12's check of the scheduler: a stream drawn from the standard library's
    docstring lengths (the first 12; those over the design's 32 tokens are rejected),
    ordered by the length-aware policy, takes exactly the cycles it predicted, each
    sequence's first output included."""
    torch.manual_seed(0)
    m = zoo.transformer(dim=8, heads=2, ffn=16, max_len=33, window=WINDOW, pattern="window")
    m(data.listops(n_train=24, n_test=0, min_len=2, max_len=8, max_depth=2, seed=4).x_train)
    d = cosyn.rtl.generate(cosyn.lower(m.eval(), None), tmp_path / "rtl")
    s = schedule_sequences(stdlib_lengths(0)[:12], d, "length-aware", window=4, exact=True)
    assert s.rejected and len(s.order) >= 4
    first, out0, _ = s.exact
    seqs = sequences([int(n) for n in s.lengths[s.order]], seed=2)
    r = cosyn.sim.simulate(d, seqs, "verilator", backpressure=False)
    assert r.ok
    assert r.cycles == s.exact_cycles
    assert r.first_outputs == list(out0 - first[0])


def test_bad_sequences_are_refused_one_line_each(tmp_path) -> None:
    g = graph("window")
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    cases = [
        ([np.array([1, 2]), np.array([], dtype=np.int64)], "sequence 1 has 0 tokens"),
        ([np.arange(9)], "sequence 0 has 9 tokens; the design takes 1 to 8"),
        ([np.array([3, 99])], "sequence 0 has ids outside"),
        ([], "one or more sequences"),
    ]
    for seqs, message in cases:
        with pytest.raises(SimulationError, match=message) as e:
            cosyn.sim.write_testbench(d, tmp_path / "tb", seqs)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "tb").exists()
