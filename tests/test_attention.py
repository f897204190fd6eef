"""SparseAttention, the integer transformer operators, ListOps and the transformer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cosyn.models import AttentionError, SparseAttention, data, intops, zoo
from cosyn.models.attention import attention_mask, rank_scores, window_table
from cosyn.models.intlayers import IntGELU, IntLayerNorm, int_of, quant_tensor
from cosyn.models.seqfit import fit_sequences, majority
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ------------------------------------------------------------------ integer square root


def test_isqrt_exhaustive_below_2_16():
    n = np.arange(1 << 16)
    want = [math.isqrt(int(i)) for i in n]
    assert np.array_equal(intops.isqrt_ref(n, 16), want)
    assert np.array_equal(intops.isqrt_int(torch.from_numpy(n), 16).numpy(), want)


def test_isqrt_squares_and_powers():
    k = np.random.default_rng(0).integers(1, 2**31 - 1, 4000)
    p = np.int64(1) << np.arange(62)
    for n in (k * k - 1, k * k, k * k + 1, p - 1, p, p + 1):
        n = n[(n >= 0) & (n < 2**62)]
        want = [math.isqrt(int(i)) for i in n]
        assert np.array_equal(intops.isqrt_ref(n), want)
        assert np.array_equal(intops.isqrt_int(torch.from_numpy(n)).numpy(), want)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**62 - 1), min_size=1, max_size=20))
def test_isqrt_property(ns):
    n = np.array(ns, np.int64)
    want = [math.isqrt(i) for i in ns]
    assert np.array_equal(intops.isqrt_ref(n), want)
    assert np.array_equal(intops.isqrt_int(torch.from_numpy(n)).numpy(), want)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.data())
def test_isqrt_at_its_width(bits, draw):
    n = draw.draw(st.lists(st.integers(0, 2**bits - 1), min_size=1, max_size=8))
    assert intops.isqrt_ref(np.array(n), bits).tolist() == [math.isqrt(i) for i in n]


def test_isqrt_refuses_out_of_range():
    with pytest.raises(ValueError, match="0 <= n < 2"):
        intops.isqrt_ref(np.array([-1]))
    with pytest.raises(ValueError, match="0 <= n < 2"):
        intops.isqrt_int(torch.tensor([1 << 20]), 20)


# ------------------------------------------------------------------ softmax


def _softmax_both(x, valid, spec):
    ref = intops.softmax_ref(x, valid, spec)
    got = intops.softmax_int(torch.from_numpy(x), torch.from_numpy(valid), spec).numpy()
    assert np.array_equal(ref, got)
    return ref


@settings(max_examples=150, deadline=None)
@given(
    st.integers(-14, -2),
    st.integers(1, 64),
    st.integers(1, 8),
    st.integers(4, 8),
    st.integers(0, 2**32 - 1),
)
def test_softmax_torch_equals_reference(log_scale, length, rows, out_bits, seed):
    rng = np.random.default_rng(seed)
    scale = 2.0**log_scale * rng.uniform(0.5, 1.0)
    spec = intops.softmax_spec(scale, max_len=64, out_bits=out_bits)
    span = int(rng.integers(1, 2**18))
    x = rng.integers(-span, span, (rows, length))
    valid = rng.random((rows, length)) < 0.7
    valid[np.arange(rows), rng.integers(0, length, rows)] = True
    p = _softmax_both(x, valid, spec)
    assert (p[~valid] == 0).all()
    assert (p >= 0).all() and (p.sum(-1) <= 1 << out_bits).all()


def test_softmax_worst_case_widths():
    """A full row of equal scores makes the largest sum; one dominant score the largest p."""
    for scale in (2.0**-12, 2.0**-7 * 0.7, 2.0**-3):
        spec = intops.softmax_spec(scale, max_len=256)
        full = np.zeros((1, 256), np.int64)
        assert 256 * spec.c < 1 << spec.sum_bits
        e = spec.c  # every entry's e: p = floor(c floor(2^m / 256c) / 2^(m-8)), just below 1
        p = (e * ((1 << spec.m) // (256 * e))) >> (spec.m - 8)
        assert p == 0
        assert np.array_equal(_softmax_both(full, full == 0, spec), np.full((1, 256), p))
        one = np.array([[0, -(1 << 40)]])
        top = (spec.c * ((1 << spec.m) // spec.c)) >> (spec.m - 8)  # 256 only if c is 2^i
        assert _softmax_both(one, one > -1 - (1 << 41), spec).tolist() == [[top, 0]]
        assert top in (255, 256)
        assert spec.c < 1 << spec.e_bits and spec.m + 1 <= 63


def test_softmax_near_float_softmax():
    """I-BERT's i-exp: within 2 steps of 2^-8 of the float softmax on random rows."""
    rng = np.random.default_rng(1)
    spec = intops.softmax_spec(2.0**-10, max_len=128)
    x = rng.integers(-(2**13), 2**13, (64, 128))
    p = _softmax_both(x, np.ones_like(x, bool), spec) / 256
    f = torch.softmax(torch.from_numpy(x * spec.scale), -1).numpy()
    assert np.abs(p - f).max() <= 2 / 256


def test_softmax_refuses_bad_rows():
    spec = intops.softmax_spec(2.0**-8, max_len=4)
    with pytest.raises(ValueError, match="more than max_len=4"):
        intops.softmax_ref(np.zeros((1, 5)), np.ones((1, 5), bool), spec)
    with pytest.raises(ValueError, match="at least one valid"):
        intops.softmax_int(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool), spec)
    with pytest.raises(ValueError, match="too coarse"):
        intops.softmax_spec(1.0, max_len=4)


# ------------------------------------------------------------------ LayerNorm, GELU


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([1, 2, 3, 8, 16, 33, 64]), st.integers(2, 12), st.integers(0, 2**32 - 1))
def test_layernorm_torch_equals_reference(features, in_bits, seed):
    rng = np.random.default_rng(seed)
    spec = intops.layernorm_spec(features, in_bits=in_bits)
    top = 1 << (in_bits - 1)
    x = rng.integers(-top, top, (6, features))
    x[0] = top - 1  # constant row: variance 0
    x[1, ::2], x[1, 1::2] = -top, top - 1  # largest variance
    gamma = rng.integers(-128, 128, features)
    beta = rng.integers(-(1 << (spec.z_bits - 1)), 1 << (spec.z_bits - 1), features)
    ref = intops.layernorm_ref(x, gamma, beta, spec)
    got = intops.layernorm_int(*map(torch.from_numpy, (x, gamma, beta)), spec).numpy()
    assert np.array_equal(ref, got)
    assert ref.min() >= -128 and ref.max() <= 127


def test_integer_operators_refuse_inputs_out_of_range():
    spec = intops.layernorm_spec(4, in_bits=4)
    with pytest.raises(ValueError, match=r"inputs must be signed 4-bit integers, not in \[-9, 0\]"):
        intops.layernorm_ref(np.array([[-9, 0, 0, 0]]), np.ones(4), np.zeros(4), spec)
    with pytest.raises(ValueError, match="gamma must be signed 8-bit"):
        intops.layernorm_int(torch.zeros(1, 4), torch.full((4,), 128), torch.zeros(4), spec)
    with pytest.raises(ValueError, match="GELU inputs must be signed 8-bit"):
        intops.gelu_ref(np.array([128]), intops.gelu_spec(2.0**-4))


def test_layernorm_normalizes():
    """gamma 1, beta 0: within a step and a half of the float LayerNorm (scale 2^-5)."""
    rng = np.random.default_rng(2)
    spec = intops.layernorm_spec(32)
    x = rng.integers(-128, 128, (64, 32))
    out = intops.layernorm_ref(x, np.full(32, 32), np.zeros(32, np.int64), spec)
    f = torch.nn.functional.layer_norm(torch.from_numpy(x).double(), (32,), eps=0).numpy()
    assert np.abs(out - np.clip(f * 32, -128, 127)).max() <= 1.5


def test_layernorm_module_equals_reference():
    torch.manual_seed(0)
    ln = IntLayerNorm(16)
    with torch.no_grad():
        ln.gamma.uniform_(-2, 2)
        ln.beta.uniform_(-1, 1)
    x = torch.randn(40, 16) * 3
    ln(x)
    ln.eval()
    y = ln(x)
    xi = int_of(ln.input_quant(x)).numpy()
    ref = intops.layernorm_ref(xi, *(t.numpy() for t in ln.int_params()), ln.spec)
    assert np.array_equal((y.value * 2**ln.spec.out_frac).detach().numpy(), ref)


@pytest.mark.parametrize("log_scale", [-6, -4, -2])
def test_gelu_every_input(log_scale):
    spec = intops.gelu_spec(2.0**log_scale, in_bits=8)
    x = np.arange(-128, 128)
    ref = intops.gelu_ref(x, spec)
    assert np.array_equal(ref, intops.gelu_int(torch.from_numpy(x), spec).numpy())
    f = torch.nn.functional.gelu(torch.from_numpy(x * 2.0**log_scale)).numpy() * 2**spec.out_frac
    assert np.abs(ref - np.clip(f, -128, 127)).max() <= 1.5  # I-BERT's erf fit, one step
    module = IntGELU().eval()
    qt = quant_tensor(torch.from_numpy(x * 2.0**log_scale).float(), 2.0**log_scale, 8, False)
    assert np.array_equal((module(qt).value * 2**spec.out_frac).numpy(), ref)


# ------------------------------------------------------------------ patterns


def _window_brute(length, window, n_global):
    return torch.tensor(
        [
            [abs(i - j) <= window or i < n_global or j < n_global for j in range(length)]
            for i in range(length)
        ]
    )


def test_window_mask_brute_force():
    for length in range(1, 21):
        for window in range(4):
            for g in range(3):
                mask = attention_mask("window", length, window, g)
                assert torch.equal(mask[0], _window_brute(length, window, g)), (length, window, g)
                idx, valid = window_table(length, window, g)
                assert idx.shape[-1] == g + 2 * window + 1  # cost linear in length
                assert int(valid.sum()) == int(mask[0, min(g, length) :].sum())


def test_topk_mask_brute_force_lower_index_first():
    rng = np.random.default_rng(3)
    for length in range(1, 17):
        for k in (1, 2, 3, 5, 16):
            scores = torch.from_numpy(rng.integers(-2, 3, (2, length, length)))  # many ties
            mask = attention_mask("topk", length, k=k, scores=scores)
            for h in range(2):
                for i in range(length):
                    best = sorted(range(length), key=lambda j, h=h, i=i: (-scores[h, i, j], j))
                    want = torch.zeros(length, dtype=torch.bool)
                    want[best[:k]] = True
                    assert torch.equal(mask[h, i], want), (length, k, h, i)


def test_rank_scores_round_to_rank_bits():
    q = torch.tensor([[[127, -128, 7, 8, -9]]])
    s = rank_scores(q, q, 8, 4)  # q_lo = round_shift(q, 4) saturated: 7, -8, 0, 1, -1
    assert s.tolist() == [[[49 + 64 + 0 + 1 + 1]]]


# ------------------------------------------------------------------ attention and model


def _attention(pattern, **kw):
    torch.manual_seed(0)
    a = SparseAttention(16, heads=2, pattern=pattern, window=2, n_global=1, k=3, max_len=24, **kw)
    a(torch.randn(24, 16))  # settle the quantizers' statistics
    return a.eval()


@pytest.mark.parametrize("pattern", ["dense", "window", "topk"])
def test_attention_equals_integer_reference(pattern):
    """Every head's output is sum p * V_int at 2^-8 sv, p the integer softmax of the
    exact integer scores over the pattern's keys (from a brute-force mask)."""
    a = _attention(pattern)
    torch.manual_seed(1)
    for length in (1, 2, 3, 5, 8, 24):
        x = a.input_quant(torch.randn(length, 16))
        q, k, v = a.q(x), a.k_proj(x), a.v(x)
        qi, ki, vi = (int_of(t).reshape(length, 2, 8).numpy() for t in (q, k, v))
        spec = intops.softmax_spec(float(q.scale) * float(k.scale) / math.sqrt(8), 24)
        s = np.einsum("lhd,mhd->hlm", qi, ki)
        if pattern == "topk":
            mask = attention_mask(
                "topk", length, k=3, scores=rank_scores(*map(torch.from_numpy, (qi, ki)), 8, 4)
            )
        else:
            mask = attention_mask(pattern, length, 2, 1)
        mask = np.broadcast_to(mask.numpy(), s.shape)
        p = intops.softmax_ref(s, mask, spec)
        want = np.einsum("hlm,mhd->lhd", p, vi).reshape(length, 16)
        with torch.no_grad():
            ints = [int_of(t).reshape(length, 2, 8) for t in (q, k, v)]
            floats = [t.value.reshape(length, 2, 8) for t in (q, k, v)]
            got = a._sequence(ints, floats, spec) / (2.0**-8 * v.scale)
        assert np.array_equal(got.numpy(), want), (pattern, length)


def test_attention_widths():
    """dh = 8, 8-bit Q/K/V: q . k up to 8 * 128 * 128 = 2^17 (19 bits signed), the
    difference to the row's maximum down to -8 * 128 * 255, 4-bit ranking scores up to
    8 * 8 * 8 = 2^9, sum p v in [-128 * 2^8, 127 * 2^8] (16 bits)."""
    a = SparseAttention(16, heads=2, rank_bits=4)
    assert a.widths() == {"score": 19, "score_diff": 19, "rank_score": 11, "prob": 9, "output": 16}


@pytest.mark.parametrize("pattern", ["dense", "window", "topk"])
def test_attention_each_sequence_alone(pattern):
    a = _attention(pattern)
    torch.manual_seed(2)
    seqs = [torch.randn(n, 16) for n in range(1, 25)]
    with torch.no_grad():
        batch = a(seqs)
        for s, out in zip(seqs, batch, strict=True):
            assert torch.equal(a(s), out), len(s)


@pytest.mark.parametrize(
    ("pattern", "act", "pooling"),
    [("dense", "relu", "cls"), ("window", "gelu", "mean"), ("topk", "relu", "cls")],
)
def test_transformer_each_sequence_alone(pattern, act, pooling):
    torch.manual_seed(0)
    m = zoo.transformer(
        dim=16,
        ffn=32,
        blocks=2,
        max_len=17,
        pattern=pattern,
        window=2,
        k=3,
        act=act,
        pooling=pooling,
    )
    d = data.listops(n_train=24, n_test=0, min_len=4, max_len=16, max_depth=3, seed=4)
    m(d.x_train)  # quantizer statistics
    m.eval()
    seqs = [
        torch.randint(0, 15, (n,), generator=torch.Generator().manual_seed(n)) for n in range(1, 17)
    ]
    with torch.no_grad():
        batch = m(seqs)
        for s, out in zip(seqs, batch, strict=True):
            assert torch.equal(m(s), out), len(s)


def test_errors_name_the_problem():
    with pytest.raises(AttentionError, match="pattern must be one of dense, window, topk"):
        SparseAttention(16, pattern="local")
    with pytest.raises(AttentionError, match="k must be between 1 and max_len=8"):
        SparseAttention(16, pattern="topk", k=9, max_len=8)
    with pytest.raises(AttentionError, match="window must be between 0 and max_len=8"):
        SparseAttention(16, pattern="window", window=9, max_len=8)
    with pytest.raises(AttentionError, match=r"prob_bits \+ act_bits must be at most 24"):
        SparseAttention(16, prob_bits=16, act_bits=12)
    with pytest.raises(AttentionError, match="heads must divide dim=16"):
        SparseAttention(16, heads=3)
    a = SparseAttention(16, max_len=8)
    with pytest.raises(AttentionError, match="sequence 1 has 9 tokens"):
        a([torch.randn(3, 16), torch.randn(9, 16)])
    m = zoo.transformer(max_len=8)
    with pytest.raises(AttentionError, match="sequence 0 has 0 tokens"):
        m([torch.zeros(0, dtype=torch.long)])
    with pytest.raises(AttentionError, match="sequence 0 has 8 tokens"):
        m(torch.zeros(8, dtype=torch.long))


# ------------------------------------------------------------------ data


def _evaluate(text: str) -> int:
    """An independent ListOps evaluator: a stack machine over the token text."""
    stack: list[list] = []
    for tok in text.split():
        if tok.startswith("["):
            stack.append([tok])
        elif tok == "]":
            op, *args = stack.pop()
            if op == "[MAX":
                value = max(args)
            elif op == "[MIN":
                value = min(args)
            elif op == "[SM":
                value = sum(args) % 10
            else:
                s = sorted(args)
                mid = len(s) // 2
                value = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
            if not stack:
                return value
            stack[-1].append(value)
        else:
            stack[-1].append(int(tok))
    raise AssertionError(f"unbalanced: {text}")


def test_listops_answers_and_lengths():
    d = data.listops(n_train=400, n_test=100, min_len=16, max_len=64, seed=5)
    for xs, ys in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        for x, y in zip(xs, ys, strict=True):
            assert 16 <= len(x) <= 64
            assert _evaluate(" ".join(data.LISTOPS_TOKENS[i] for i in x)) == int(y)
    again = data.listops(n_train=400, n_test=100, min_len=16, max_len=64, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(d.x_train, again.x_train, strict=True))
    assert d.vocab == 15 and d.classes == 10


# ------------------------------------------------------------------ training


def test_learns_tiny_listops():
    """One operator over 2..5 digits, 3 epochs of 600 expressions: 29.0% on the 200 test
    expressions against 10.0% for the majority class (seeds 0)."""
    d = data.listops(n_train=600, n_test=200, min_len=4, max_len=7, max_depth=1, seed=0)
    torch.manual_seed(0)
    m = zoo.transformer(dim=32, ffn=64, max_len=8)
    acc = fit_sequences(m, d, epochs=3, lr=1e-2, quiet=True)
    assert acc >= majority(d) + 10
