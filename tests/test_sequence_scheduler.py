"""The length-aware sequence scheduler (`cosyn.scheduler.schedule_sequences`): a
transformer's stages and their cycles from the performance model, the flow of sequences
through buffers of whole tokens (every start and pass-on as early as the rules allow, no
buffer over its capacity), padding, bad sequences reported while the rest run, the
standard library's stream, and `cosyn schedule`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cosyn.models import zoo
from cosyn.perfmodel.attention import AttentionTiming
from cosyn.perfmodel.pipeline import TIMINGS, Ctx
from cosyn.scheduler import (
    POLICIES,
    SequenceStage,
    compare,
    schedule_sequences,
    sequence_stages,
    stdlib_lengths,
)
from cosyn.scheduler.sequences import STDLIB
from test_cli import cli

import cosyn
from cosyn.errors import CosynError


@pytest.fixture(scope="module")
def window_graph() -> cosyn.ir.Graph:
    return cosyn.lower(zoo.transformer(pattern="window", blocks=2, max_len=65), None)


def test_stages_of_a_transformer_come_from_the_performance_model(window_graph) -> None:
    g = window_graph
    stages = sequence_stages(g)
    assert [s.kind for s in stages] == ["tokens", "attention", "tokens", "attention", "tokens"]
    for s in stages[1::2]:
        timing = AttentionTiming(g[s.name])
        assert [s.cycles(n) for n in (1, 17, 65)] == [timing.interval(n) for n in (1, 17, 65)]
    # between the attention blocks, the slowest block per token is a LayerNorm
    ln = g["blocks_0_ln1"]
    src = g[ln.inputs[0]]
    t = TIMINGS["layernorm"](ln, Ctx((src.dtype,), (src.shape,)))
    assert stages[2].per_token == t.interval
    assert stages[2].cycles(10) == stages[2].fill + 9 * t.interval
    assert "blocks_0_ln1" in stages[2].nodes and "blocks_1_attn_q" in stages[2].nodes
    assert stages[0].nodes[0] == "embed" and stages[-1].nodes[-1] == "head"


def test_a_graph_of_samples_is_refused() -> None:
    g = cosyn.lower(zoo.mlp(), torch.zeros(1, 64))
    with pytest.raises(CosynError, match="not sequences"):
        sequence_stages(g)


def _check_flow(s) -> None:
    """Every rule of the module doc, and each start and pass-on at the earliest cycle the
    rules allow."""
    n_st, n = s.start.shape
    assert sorted(s.order) == list(range(n))
    assert np.array_equal(s.done, s.start + s.cycles)
    for k in range(n_st):
        for j in range(n):
            bounds = [0]
            if k:
                bounds.append(s.leave[k - 1, j])
            if j:
                bounds.append(s.leave[k, j - 1])
            assert s.start[k, j] == max(bounds)
            if k == n_st - 1:
                assert s.leave[k, j] == s.done[k, j]
                continue
            assert s.leave[k, j] >= s.done[k, j]
            if s.leave[k, j] > s.done[k, j]:  # a cycle earlier it would not have fit
                t = s.leave[k, j] - 1
                held = s.tokens[:j][(s.leave[k, :j] <= t) & (s.start[k + 1, :j] > t)].sum()
                assert held + s.tokens[j] > s.capacity
    for k in range(n_st - 1):  # the buffer behind stage k never holds more than it can
        for t in np.unique(s.leave[k]):
            held = s.tokens[(s.leave[k] <= t) & (s.start[k + 1] > t)].sum()
            assert held <= s.capacity


def _stages(costs: list[tuple[int, int]], max_len: int) -> list[SequenceStage]:
    """Token stages of (fill, per token) between two attention blocks of `max_len`."""
    node = cosyn.lower(zoo.transformer(pattern="dense", max_len=max_len), None)
    attn = next(s for s in sequence_stages(node) if s.kind == "attention")
    chains = [SequenceStage(f"c{i}", "tokens", (), fill=f, per_token=p)
              for i, (f, p) in enumerate(costs)]  # fmt: skip
    return [chains[0], attn, *chains[1:]]


@pytest.mark.parametrize("policy", POLICIES)
def test_flow_obeys_the_rules_and_wastes_no_cycle(policy: str) -> None:
    rng = np.random.default_rng(3)
    stages = _stages([(5, 40), (30, 900), (3, 7)], max_len=20)
    lengths = rng.integers(1, 20, size=60)
    s = schedule_sequences(lengths, stages, policy, batch=4, window=6)
    _check_flow(s)
    assert np.array_equal(np.sort(s.lengths[s.order]), np.sort(lengths))
    assert s.rejected == []
    if policy == "padded":
        for b in range(0, 60, 4):
            assert set(s.tokens[b : b + 4]) == {lengths[b : b + 4].max() + 1}
    else:
        assert np.array_equal(s.tokens, lengths[s.order] + 1)
        assert np.array_equal(s.cycles, s.useful)


def test_a_window_of_one_is_first_come_first_served() -> None:
    stages = _stages([(5, 40), (30, 900)], max_len=20)
    lengths = np.random.default_rng(4).integers(1, 20, size=40)
    fcfs = schedule_sequences(lengths, stages, "fcfs")
    one = schedule_sequences(lengths, stages, "length-aware", window=1)
    assert np.array_equal(one.order, np.arange(40)) and np.array_equal(one.leave, fcfs.leave)
    aware = schedule_sequences(lengths, stages, "length-aware", window=8)
    assert not np.array_equal(aware.order, np.arange(40))  # it does reorder
    # none waits for ever: the oldest waiting is taken once passed over 8 times
    assert max(pos - i for i, pos in enumerate(np.argsort(aware.order))) <= 2 * 8


def test_bad_sequences_are_reported_and_the_rest_scheduled() -> None:
    stages = _stages([(5, 40)], max_len=20)
    s = schedule_sequences([3, 0, 19, 20, 7, -2], stages, "fcfs")
    assert [(i, n) for i, n, _ in s.rejected] == [(1, 0), (3, 20), (5, -2)]
    assert "empty" in s.rejected[0][2] and "at most" not in s.rejected[1][2]
    assert "more than the design's 19" in s.rejected[1][2]
    assert list(s.lengths) == [3, 19, 7] and s.total_cycles > 0
    with pytest.raises(CosynError, match="policy 'lifo'"):
        schedule_sequences([3], stages, "lifo")
    with pytest.raises(CosynError, match="positive"):
        schedule_sequences([3], stages, "padded", batch=0)


def test_stdlib_stream_length_aware_beats_padding(window_graph) -> None:
    """The issue's target on the real distribution: at least 2x padded batching's
    throughput, the busiest stage more than 90% busy (the window pattern, 2 blocks;
    sequences over 64 tokens are rejected by this small design and reported)."""
    runs = compare(stdlib_lengths(0)[:3000], window_graph)
    aware, padded = runs["length-aware"], runs["padded"]
    assert aware.throughput >= 2 * padded.throughput
    assert aware.utilization > 0.9 > padded.utilization
    assert len(aware.rejected) == np.count_nonzero(stdlib_lengths(0)[:3000] > 64)


def test_stdlib_lengths_fixture() -> None:
    f = json.loads(STDLIB.read_text())
    counts = f["histogram"]
    total = sum(counts.values())
    assert total == f["docstrings"]
    lengths = stdlib_lengths(1)
    assert len(lengths) == total and int(np.median(lengths)) == f["median"]
    assert lengths.max() == f["max"] and not np.array_equal(lengths, stdlib_lengths(2))


def test_cli_schedule(tmp_path) -> None:
    stream = tmp_path / "lengths.txt"
    stream.write_text("5 12\n0\n40 3 100\n")
    plot = tmp_path / "t.png"
    r = cli("schedule", "--lengths", stream, "--max-len", "33", "--pattern", "window",
            "--plot", plot)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "length-aware" in r.stdout and "x padded" in r.stdout
    assert "sequence 2 rejected: an empty sequence" in r.stdout
    assert "sequence 3 rejected: 40 tokens" in r.stdout and "sequence 5 rejected" in r.stdout
    assert plot.stat().st_size > 0
    stream.write_text("5 twelve\n")
    r = cli("schedule", "--lengths", stream, "--plot", plot)
    assert r.returncode == 2 and str(stream) in r.stderr and len(r.stderr.splitlines()) == 1
    stream.write_text("5\n")
    r = cli("schedule", "cosyn.models.zoo:mlp", "--lengths", stream)
    assert r.returncode == 2 and "takes a transformer" in r.stderr


def test_a_generated_design_is_scheduled_at_its_own_parallelism(window_graph, tmp_path) -> None:
    """`schedule_sequences(lengths, d)` as DESIGN.md writes it: the Design of
    `cosyn.rtl.generate`, at the parallelism its manifest records."""
    d = cosyn.rtl.generate(window_graph, tmp_path / "rtl", parallelism=1)
    s = schedule_sequences([5, 60, 2], d, "fcfs")
    slow = sequence_stages(window_graph, 1)
    assert [t.cycles(9) for t in s.stages] == [t.cycles(9) for t in slow]
    assert [t.cycles(9) for t in slow] != [t.cycles(9) for t in sequence_stages(window_graph)]
    mlp = cosyn.rtl.generate(cosyn.lower(zoo.mlp(), torch.zeros(1, 64)), tmp_path / "mlp")
    with pytest.raises(CosynError, match="not a sequence design"):
        schedule_sequences([5], mlp)
