"""Lowering of PolyAct to the integer graph: requantize, Poly, requantize.

The input quantizer and the output quantizer become requantize nodes found against
the module's own Brevitas quantizers (`builder.quantize`, exact by construction). In
between sits a `Poly` node whose integer coefficients are the module's own fixed-point
arithmetic (`PolyAct.integer_coeffs`), and whose stage widths come from the Poly
kind's range inference (`Poly.sized`), which enumerates every input integer of
every channel: exact and tight.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import fx, nn

from cosyn.errors import BitWidthError, UnsupportedLayerError
from cosyn.ir import nodes as N

__all__ = ["lower_polyact"]

_MAX_LEVELS = 1 << 17  # enumerate at most this many input integers per channel


def _exponent(scale: torch.Tensor, what: str) -> int:
    """log2 of a per-tensor power-of-two scale."""
    s = scale.double().reshape(-1)
    ex = torch.round(torch.log2(s))
    if s.numel() != 1 or not torch.equal(torch.exp2(ex), s):
        raise UnsupportedLayerError(
            f"{what}: the input quantizer must have one power-of-two scale per tensor; "
            "use a fixed-point preset such as cosyn.models.quant.Int8ActPow2"
        )
    return int(ex.item())


def _channels(a: np.ndarray, c: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(a, np.int64).reshape(-1), (c,)).copy()


def _scale(e: np.ndarray, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """2^E as a float32 scale: () when one per tensor, else (C,) or (C, 1, 1)."""
    if e.min() < -126 or e.max() > 100:
        raise BitWidthError(
            f"{what}: polynomial scale 2^{int(e.min())} leaves float32's normal range; "
            "rescale the layer's input or coefficients"
        )
    s = torch.exp2(torch.from_numpy(e).to(torch.float32))
    if torch.all(s == s[0]):
        return s[0].reshape(())
    return s.reshape((-1,) + (1,) * (len(shape) - 1))


def lower_poly_node(builder, n: fx.Node, m: nn.Module, v: object, name: str):
    """Input requantize and Poly node of PolyAct `m`; returns the Poly node's value."""
    what = f"{name} (PolyAct)"
    xin = builder.quantize(v, m.input_quant.act_quant, n, f"{name}.input_quant")
    ex = _exponent(xin.scale, what)
    shape = builder.shape(n)
    c = shape[0]
    if m.channels not in (None, c):
        raise UnsupportedLayerError(f"{what}: has {m.channels} channels, its input {c}")
    coeffs, e = m.integer_coeffs(ex)
    coeffs = np.ascontiguousarray(np.broadcast_to(coeffs, (c, coeffs.shape[1])))
    lo, hi = builder.ranges[xin.node]
    if int((hi - lo).max()) >= _MAX_LEVELS:
        raise BitWidthError(f"{what}: input has more than {_MAX_LEVELS} levels per channel")
    scale = _scale(_channels(e, c), shape, what)
    node = N.Poly.sized(
        builder.in_ranges((xin.node,)),
        name=builder.fresh(name, N.Poly.kind),
        inputs=(xin.node,),
        shape=shape,
        scale=scale.numpy(),
        coeffs=coeffs,
    )
    builder.add(node)
    return dataclasses.replace(xin, node=node.name, scale=scale)


def lower_polyact(builder, n: fx.Node, m: nn.Module, v: object, name: str):
    """PolyAct -> requantize (input), Poly, requantize (output)."""
    if m.relu_mix:
        raise UnsupportedLayerError(
            f"{name} (PolyAct): still annealing ({m.relu_mix:g} ReLU blended in); finish the "
            "schedule (cosyn.models.anneal reaches 0) before lowering"
        )
    h = lower_poly_node(builder, n, m, v, name)
    return builder.quantize(h, m.output_quant.act_quant, n, f"{name}.output_quant")
