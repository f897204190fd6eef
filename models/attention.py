"""SparseAttention: quantized multi-head self-attention over sequences of any length.

Each sequence is attended at its own length L (no padding inside the operator): a
batch is a list of (L_i, dim) tensors, or one (L, dim) tensor. Q, K and V are
QuantLinear layers with Brevitas power-of-two quantizers (`cosyn.models.quant`) and
signed `act_bits` outputs; the scores are exact integers (Q_int . K_int over a head's
dh features, at scale sq sk / sqrt(dh)), the softmax is I-BERT's integer softmax
(`intops.softmax_ref`, probabilities p at 2^-prob_bits), and a head's output is the
exact integer sum of p * V_int over its keys (at 2^-prob_bits sv, exact in float32:
|sum| <= 2^prob_bits 2^(act_bits-1)), requantized by the output projection's input
quantizer.

Which keys each query sees (`pattern`):
- "dense": all L keys.
- "window": query i sees keys j with |i - j| <= window and the first `n_global`
  tokens; the first `n_global` queries (e.g. a CLS token) see all keys (Longformer).
  Cost L (2 window + 1 + n_global) + n_global L scores: linear in L.
- "topk": Q and K are also rounded to `rank_bits` (q_lo = round_shift(q, act_bits -
  rank_bits) saturated to signed rank_bits); the low-bit scores q_lo . k_lo rank the
  keys per query and head, and the full-precision softmax runs over the min(k, L)
  best (DAC'22, Peng et al., "A Length Adaptive Algorithm-Hardware Co-design of
  Transformer on FPGA Through Sparse Attention and Dynamic Pipelining"). Ties: of
  keys with equal low-bit scores, the lower key index is taken first.

A pattern is a key table per query row (`window_table`, `topk_table`): integer
results do not depend on the order of keys within a row. `attention_mask` expands
the tables to an (H, L, L) boolean mask.
"""

from __future__ import annotations

import math

import brevitas.nn as qnn
import torch
from brevitas.quant_tensor import IntQuantTensor, QuantTensor
from cosyn.models.intlayers import int_of, ste
from cosyn.models.intops import (
    round_shift,
    saturate_int,
    signed_bits,
    softmax_int,
    softmax_spec,
)
from cosyn.models.quant import Int8ActPow2, Int32Bias, weight_quant
from torch import Tensor, nn

from cosyn.errors import CosynError

__all__ = [
    "PATTERNS",
    "AttentionError",
    "SparseAttention",
    "attention_mask",
    "rank_scores",
    "topk_table",
    "window_table",
]

PATTERNS = ("dense", "window", "topk")


class AttentionError(CosynError):
    """A SparseAttention configured or fed wrongly (pattern, window, k, sequence length)."""


def window_table(length: int, window: int, n_global: int) -> tuple[Tensor, Tensor]:
    """Keys of the window rows min(n_global, L)..L-1: (1, R, n_global + 2 window + 1).

    Columns 0..n_global-1 are the global keys, then keys i - window .. i + window
    except globals; `valid` marks the entries that exist (0 <= j < L, no duplicate).
    """
    g = min(n_global, length)
    i = torch.arange(g, length)[:, None]
    glob = torch.arange(n_global).expand(len(i), -1)
    near = i + torch.arange(-window, window + 1)
    idx = torch.cat([glob, near], 1)
    valid = torch.cat([glob < length, (near >= n_global) & (near < length)], 1)
    return idx.clamp(0, length - 1)[None], valid[None]


def rank_scores(q: Tensor, k: Tensor, act_bits: int, rank_bits: int) -> Tensor:
    """Low-bit scores (H, L, L) of int64 q, k (L, H, dh) rounded to rank_bits."""
    s = act_bits - rank_bits
    ql = saturate_int(round_shift(q, s), rank_bits)
    kl = saturate_int(round_shift(k, s), rank_bits)
    return torch.einsum("lhd,mhd->hlm", ql.double(), kl.double()).long()


def topk_table(scores: Tensor, k: int) -> Tensor:
    """The min(k, L) keys of highest score per row of (H, L, L); ties to the lower index."""
    length = scores.shape[-1]
    key = scores * length + (length - 1 - torch.arange(length))  # unique; lower j wins
    return key.topk(min(k, length), dim=-1).indices


def _scatter(mask: Tensor, rows: int, idx: Tensor, valid: Tensor) -> None:
    h, r, _ = idx.shape
    heads = torch.arange(h)[:, None, None].expand_as(idx)
    at = (rows + torch.arange(r))[None, :, None].expand_as(idx)
    mask[heads[valid], at[valid], idx[valid]] = True


def attention_mask(
    pattern: str,
    length: int,
    window: int = 0,
    n_global: int = 0,
    k: int = 1,
    scores: Tensor | None = None,
) -> Tensor:
    """(H, L, L) bool: query i sees key j (H = 1 unless top-k `scores` are per head)."""
    if pattern == "dense":
        return torch.ones(1, length, length, dtype=torch.bool)
    if pattern == "topk":
        idx = topk_table(scores, k)
        mask = torch.zeros(idx.shape[0], length, length, dtype=torch.bool)
        _scatter(mask, 0, idx, torch.ones_like(idx, dtype=torch.bool))
        return mask
    mask = torch.zeros(1, length, length, dtype=torch.bool)
    mask[:, : min(n_global, length)] = True
    _scatter(mask, min(n_global, length), *window_table(length, window, n_global))
    return mask


def _linear(i: int, o: int, weight_bits: int, act_bits: int, input_quant: bool = False):
    extra = {"input_quant": Int8ActPow2, "input_bit_width": act_bits} if input_quant else {}
    return qnn.QuantLinear(
        i,
        o,
        bias=True,
        weight_quant=weight_quant(weight_bits),
        bias_quant=Int32Bias,
        output_quant=Int8ActPow2,
        output_bit_width=act_bits,
        return_quant_tensor=True,
        **extra,
    )


class SparseAttention(nn.Module):
    """Quantized multi-head self-attention, one sequence at a time (see the module doc).

    Args:
        dim: model width; heads divides it (dh = dim / heads).
        pattern: "dense", "window" or "topk".
        window: keys on each side of a query ("window"); n_global: global tokens.
        k: keys per query ("topk"); rank_bits: bits of the ranking Q and K.
        max_len: the longest sequence accepted (sizes the softmax's integer widths).
        weight_bits: 2, 4 or 8; act_bits: signed bits of Q, K, V and the output;
        prob_bits: the softmax's output bits; exp_frac: i-exp's working precision.
        own_input: quantize the input itself (forward); an encoder block, which feeds
            `packed` quantized tokens, builds it without (no quantizer that never sees
            data, whose scale a checkpoint would lack).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 2,
        pattern: str = "dense",
        window: int = 4,
        n_global: int = 1,
        k: int = 8,
        max_len: int = 256,
        weight_bits: int = 8,
        act_bits: int = 8,
        rank_bits: int = 4,
        prob_bits: int = 8,
        exp_frac: int = 7,
        own_input: bool = True,
    ) -> None:
        super().__init__()
        _check(dim, heads, pattern, window, n_global, k, max_len, act_bits, rank_bits, prob_bits)
        self.dim, self.heads, self.pattern = dim, heads, pattern
        self.window, self.n_global, self.k, self.max_len = window, n_global, k, max_len
        self.act_bits, self.rank_bits = act_bits, rank_bits
        self.prob_bits, self.exp_frac = prob_bits, exp_frac
        self.input_quant = (
            qnn.QuantIdentity(act_quant=Int8ActPow2, bit_width=act_bits, return_quant_tensor=True)
            if own_input
            else None
        )
        self.q, self.k_proj, self.v = (_linear(dim, dim, weight_bits, act_bits) for _ in "qkv")
        self.o = _linear(dim, dim, weight_bits, act_bits, input_quant=True)

    def forward(self, x: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        """Float (L, dim) -> (L, dim), or a list of them, each sequence on its own."""
        if self.input_quant is None:
            raise ValueError(
                "SparseAttention: built without its input quantizer (own_input=False, as in "
                "an encoder block); call packed() with quantized tokens"
            )
        seqs = [x] if isinstance(x, Tensor) else list(x)
        out = self.packed(self.input_quant(torch.cat(seqs)), [len(s) for s in seqs])
        parts = list(out.value.split([len(s) for s in seqs]))
        return parts[0] if isinstance(x, Tensor) else parts

    def widths(self) -> dict[str, int]:
        """Bits of each integer the attention computes, from its bit widths and max_len.

        score: q . k over dh features (q, k in [-2^(a-1), 2^(a-1) - 1]); score_diff: a
        score minus its row's maximum; rank_score: the same at rank_bits; prob: p in
        [0, 2^prob_bits], unsigned; output: sum p v over a row's keys, bounded by
        sum p <= 2^prob_bits (each p is floored), not by the row's length. The softmax's
        own widths (e, its sum, the divisor) are `intops.softmax_spec`'s.
        """
        dh = self.dim // self.heads
        top, low = 1 << (self.act_bits - 1), 1 << (self.rank_bits - 1)
        return {
            "score": signed_bits(-dh * top * (top - 1), dh * top * top),
            "score_diff": signed_bits(-dh * top * (2 * top - 1), 0),
            "rank_score": signed_bits(-dh * low * (low - 1), dh * low * low),
            "prob": self.prob_bits + 1,
            "output": signed_bits(-top << self.prob_bits, (top - 1) << self.prob_bits),
        }

    def check_lengths(self, lengths: list[int]) -> None:
        for n, length in enumerate(lengths):
            if not 1 <= length <= self.max_len:
                raise AttentionError(
                    f"SparseAttention: sequence {n} has {length} tokens; "
                    f"lengths must be between 1 and max_len={self.max_len}"
                )

    def packed(self, x: QuantTensor, lengths: list[int]) -> IntQuantTensor:
        """Sequences of `lengths` packed one after another in x (sum(lengths), dim)."""
        self.check_lengths(lengths)
        q, k, v = self.q(x), self.k_proj(x), self.v(x)
        dh = self.dim // self.heads
        spec = softmax_spec(
            float(q.scale.detach()) * float(k.scale.detach()) / math.sqrt(dh),
            self.max_len,
            self.prob_bits,
            self.exp_frac,
        )
        ints = [int_of(t).reshape(-1, self.heads, dh) for t in (q, k, v)]
        floats = [t.value.reshape(-1, self.heads, dh) for t in (q, k, v)]
        outs, start = [], 0
        for length in lengths:
            part = slice(start, start + length)
            outs.append(self._sequence([t[part] for t in ints], [t[part] for t in floats], spec))
            start += length
        return self.o(torch.cat(outs))

    def _sequence(self, ints: list[Tensor], floats: list[Tensor], spec) -> Tensor:
        length = len(ints[0])
        if self.pattern == "dense":
            return self._attend(ints, floats, spec, 0, None, None)
        if self.pattern == "topk":
            scores = rank_scores(ints[0], ints[1], self.act_bits, self.rank_bits)
            idx = topk_table(scores, self.k)
            return self._attend(ints, floats, spec, 0, idx, torch.ones_like(idx, dtype=torch.bool))
        g = min(self.n_global, length)
        parts = [self._attend(ints, floats, spec, 0, None, None, rows=g)] if g else []
        if length > g:
            idx, valid = window_table(length, self.window, self.n_global)
            parts.append(self._attend(ints, floats, spec, g, idx, valid))
        return torch.cat(parts)

    def _attend(self, ints, floats, spec, start, idx, valid, rows=None) -> Tensor:
        """Rows start.. (all, or `rows` of them) over all keys (idx None) or a key table."""
        (qi, ki, _), (qf, kf, vf) = ints, floats
        end = len(qi) if rows is None else start + rows
        qi, qf = qi[start:end].transpose(0, 1), qf[start:end].transpose(0, 1)  # (H, R, dh)
        ki, kf, vf = (t.transpose(0, 1) for t in (ki, kf, vf))  # (H, L, dh)
        scale = 1.0 / math.sqrt(qi.shape[-1])
        if idx is None:
            s_int = (qi.double() @ ki.double().transpose(1, 2)).long()
            valid = torch.ones(1, 1, 1, dtype=torch.bool)
            s_f = qf @ kf.transpose(1, 2) * scale
            p = self._probs(s_int, s_f, valid, spec)
            out = p @ vf
        else:
            h = torch.arange(self.heads)[:, None, None]
            s_int = torch.einsum("hrd,hrmd->hrm", qi.double(), ki[h, idx].double()).long()
            s_f = torch.einsum("hrd,hrmd->hrm", qf, kf[h, idx]) * scale
            p = self._probs(s_int, s_f, valid, spec)
            out = torch.einsum("hrm,hrmd->hrd", p, vf[h, idx])
        return out.transpose(0, 1).reshape(-1, self.dim)

    def _probs(self, s_int: Tensor, s_f: Tensor, valid: Tensor, spec) -> Tensor:
        p_int = softmax_int(s_int, valid, spec).float() * 2.0**-self.prob_bits
        p_f = torch.softmax(s_f.masked_fill(~valid, -math.inf), -1)
        return ste(p_int, p_f)


def _check(dim, heads, pattern, window, n_global, k, max_len, act_bits, rank_bits, prob_bits):
    if pattern not in PATTERNS:
        raise AttentionError(
            f"SparseAttention: pattern must be one of {', '.join(PATTERNS)}, not {pattern!r}"
        )
    if heads < 1 or dim % heads:
        raise AttentionError(f"SparseAttention: heads must divide dim={dim}, not {heads!r}")
    if max_len < 1:
        raise AttentionError(f"SparseAttention: max_len must be positive, not {max_len!r}")
    for name, value in (("window", window), ("n_global", n_global)):
        if not 0 <= value <= max_len:
            raise AttentionError(
                f"SparseAttention: {name} must be between 0 and max_len={max_len}, not {value!r}"
            )
    if not 1 <= k <= max_len:
        raise AttentionError(
            f"SparseAttention: k must be between 1 and max_len={max_len}, not {k!r}"
        )
    if not 2 <= rank_bits <= act_bits:
        raise AttentionError(
            f"SparseAttention: rank_bits must be in 2..act_bits={act_bits}, not {rank_bits!r}"
        )
    if prob_bits + act_bits > 24:
        raise AttentionError(
            f"SparseAttention: prob_bits + act_bits must be at most 24 (sum p v exact in "
            f"float32), not {prob_bits} + {act_bits}"
        )
    dh = dim // heads
    if (dh << 2 * (act_bits - 1)).bit_length() > 52:
        raise AttentionError(
            f"SparseAttention: scores of dh={dh} at act_bits={act_bits} exceed float64 (2^52)"
        )
