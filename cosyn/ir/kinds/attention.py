"""Sparse multi-head self-attention (`cosyn.models.SparseAttention`) over one sequence.

The node takes the integers of Q, K and V (L tokens each) and gives, per query and head,
the exact integer sum of p * V over the keys its pattern lets it see, p being I-BERT's
integer softmax of the integer scores Q . K (`intops.softmax_ref`): the value the model
computes before its output projection, at scale 2^-prob_bits times V's. The keys of a
query come from the model's own definitions (`attention_mask`, `rank_scores`); integer
results do not depend on their order. `attention` lowers a SparseAttention module: its
Q, K, V and output projections are QuantLinear layers and quantizers, as anywhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from cosyn.errors import UnsupportedLayerError
from cosyn.ir.builder import Builder, _log2_ratio, _Val, layer_bias
from cosyn.ir.intervals import Range, as_range
from cosyn.ir.nodes import Node
from cosyn.models.attention import SparseAttention, attention_mask, rank_scores
from cosyn.models.intlayers import quant_tensor
from cosyn.models.intops import SoftmaxSpec, softmax_ref, softmax_spec

__all__ = ["Attention", "attention", "layer"]


@dataclass(eq=False)
class Attention(Node):
    """out[i, h] = sum over keys j of query i's pattern of p[h, i, j] * v[j, h], with
    p = softmax_ref(q_h . k_h over its keys): inputs q, k, v (L, heads * dh), output the
    same shape. `pattern`, `window`, `n_global`, `k` and `rank_bits` (of `act_bits` Q and
    K) as SparseAttention's; `spec` the softmax's constants; at most `max_len` tokens.
    `queries` > 0: only the first that many queries' rows (a classifier's last block,
    whose CLS row alone reaches the head), over every key; 0: every query's."""

    heads: int = 1
    pattern: str = "dense"
    window: int = 0
    n_global: int = 0
    k: int = 1
    act_bits: int = 8
    rank_bits: int = 4
    max_len: int = 1
    spec: SoftmaxSpec | None = None
    queries: int = 0
    kind: ClassVar[str] = "attention"
    multiplies: ClassVar[bool] = True
    sequence: ClassVar[bool] = True

    def eval(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        length = len(q)
        if not 1 <= length <= self.max_len:
            raise ValueError(
                f"{self.name}: a sequence of {length} tokens; it takes 1 to {self.max_len}"
            )
        qh, kh, vh = (np.asarray(a, np.int64).reshape(length, self.heads, -1) for a in (q, k, v))
        rows = self.rows(length)
        scores = np.einsum("lhd,mhd->hlm", qh[:rows], kh)
        p = softmax_ref(scores, self.mask(qh, kh)[:, :rows], self.spec)
        return np.einsum("hlm,mhd->lhd", p, vh).reshape(rows, -1)

    def rows(self, length: int) -> int:
        """Query rows out of a sequence of `length` tokens."""
        return min(self.queries, length) if self.queries else length

    def mask(self, qh: np.ndarray, kh: np.ndarray) -> np.ndarray:
        """(heads or 1, L, L) bool: query i sees key j, for q and k of (L, heads, dh)."""
        ranks = None
        if self.pattern == "topk":
            ranks = rank_scores(*map(torch.from_numpy, (qh, kh)), self.act_bits, self.rank_bits)
        m = attention_mask(self.pattern, len(qh), self.window, self.n_global, self.k, ranks)
        return m.numpy()

    def infer_shape(self, *x: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(x)) != 1 or len(x[0]) != 1 or x[0][0] % self.heads:
            raise ValueError(f"it takes q, k, v of one shape (heads * dh,), not {list(x)}")
        return x[0]

    def infer_range(self, q: Range, k: Range, v: Range) -> Range:
        """Per feature: p >= 0 and a row's p sum to at most 2^out_bits, so the sum lies
        between that many times v's least value (or 0) and its greatest (or 0)."""
        top = 1 << self.spec.out_bits
        return as_range(top * np.minimum(v[0], 0), top * np.maximum(v[1], 0))

    @property
    def keys(self) -> int:
        """The most keys a (non-global) query sees at `max_len` tokens."""
        if self.pattern == "window":
            return min(self.max_len, 2 * self.window + 1 + self.n_global)
        return min(self.k, self.max_len) if self.pattern == "topk" else self.max_len

    @property
    def macs(self) -> int:
        """Per token at `max_len` tokens: its scores and its sum over `keys` keys (without
        the global rows and the low-bit ranking)."""
        return 2 * int(self.shape[0]) * self.keys


def layer(b: Builder, m: torch.nn.Module, v: _Val, n: object, name: str) -> _Val:
    """A QuantLinear on the clean value `v` (`Builder.layer`) fed a QuantTensor at v's
    scale, as an encoder feeds it."""
    bits = b.node(b.clean(v, name).node).dtype.bits
    zero = quant_tensor(torch.zeros(1, m.in_features), v.scale, bits, False)
    return b.layer(m, v, layer_bias(m, zero), n, name, f"{name} ({type(m).__name__})")


def attention(
    b: Builder, m: SparseAttention, x: _Val, n: object, name: str, queries: int = 0
) -> _Val:
    """`m` as its encoder uses it (`m.packed`: its own input quantizer skipped) on the
    clean value `x`; `n` is the frontend's handle of a token's value (dim,); `queries`
    as `Attention`'s."""
    what = f"{name} (SparseAttention)"
    q, k, v = (layer(b, p, x, n, f"{name}.{a}") for a, p in
               (("q", m.q), ("k_proj", m.k_proj), ("v", m.v)))  # fmt: skip
    for a in (q, k, v):
        if a.scale.numel() != 1 or _log2_ratio(a.scale, torch.ones(())) is None:
            raise UnsupportedLayerError(
                f"{what}: Q, K and V need one power-of-two scale each (their products are "
                "exact in float32 then); use power-of-two output quantizers (Int8ActPow2)"
            )
    dh = m.dim // m.heads
    spec = softmax_spec(float(q.scale) * float(k.scale) / math.sqrt(dh), m.max_len, m.prob_bits,
                        m.exp_frac)  # fmt: skip
    scale = (v.scale * 2.0**-m.prob_bits).to(torch.float32)
    node = Attention.sized(
        b.in_ranges((q.node, k.node, v.node)), name=b.fresh(name, Attention.kind),
        inputs=(q.node, k.node, v.node), shape=(m.dim,), scale=scale.numpy(), heads=m.heads,
        pattern=m.pattern, window=m.window, n_global=m.n_global, k=m.k, act_bits=m.act_bits,
        rank_bits=m.rank_bits, max_len=m.max_len, spec=spec, queries=queries,
    )  # fmt: skip
    out = b.emit(node, scale)
    return layer(b, m.o, out, n, f"{name}.o")
