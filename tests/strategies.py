"""Hypothesis strategies: random Brevitas layer stacks, bit widths and inputs."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import torch
from brevitas.inject.enum import ScalingImplType
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFloat,
    Int32Bias,
    Uint8ActPerTensorFloat,
)
from cosyn.models.quant import Int8ActPow2, Int8WeightPow2, Uint8ActPow2
from hypothesis import strategies as st
from torch import nn


def _const(base: type, scale: float) -> type:
    """`base` with a constant scale: a non-power-of-two scale with a 2- or 3-bit mantissa.
    With integer biases (Int32Bias) the model's float32 accumulation of up to 12 products
    then stays below 2**24 units and is exact, so the graph must match it bit for bit."""
    return type(
        f"{base.__name__}Const",
        (base,),
        {"scaling_impl_type": ScalingImplType.CONST, "scaling_init": scale},
    )


@st.composite
def short_scales(draw) -> dict:
    s = st.builds(lambda m, e: m * 2.0**-e, st.sampled_from([3, 5]), st.integers(3, 7))
    return {
        "act": _const(Int8ActPerTensorFloat, draw(s)),
        "uact": _const(Uint8ActPerTensorFloat, draw(s)),
        "weight": _const(Int8WeightPerTensorFloat, draw(s)),
    }


POW2 = {"act": Int8ActPow2, "uact": Uint8ActPow2, "weight": Int8WeightPow2}
FLOAT = {
    "act": Int8ActPerTensorFloat,
    "uact": Uint8ActPerTensorFloat,
    "weight": Int8WeightPerTensorFloat,
}


@st.composite
def quant_act(draw, q: dict, signed: bool | None = None) -> nn.Module:
    """A quantized activation: ReLU (1 to 8 bits), identity or hard tanh (2 to 8 bits)."""
    kind = draw(
        st.sampled_from(
            ["relu", "identity", "hardtanh"]
            if signed is None
            else ["identity"]
            if signed
            else ["relu"]
        )
    )
    if kind == "relu":
        return qnn.QuantReLU(
            act_quant=q["uact"], bit_width=draw(st.integers(1, 8)), return_quant_tensor=True
        )
    bits = draw(st.integers(2, 8))
    if kind == "identity":
        return qnn.QuantIdentity(act_quant=q["act"], bit_width=bits, return_quant_tensor=True)
    return qnn.QuantHardTanh(
        act_quant=q["act"], bit_width=bits, max_val=1.0, min_val=-1.0, return_quant_tensor=True
    )


@st.composite
def mlps(draw, scales: str = "pow2", batchnorm: bool | None = None) -> nn.Module:
    """A random MLP stack: input quantizer, 1 to 3 QuantLinear (+BatchNorm) + activation.

    `scales`: "pow2" (fixed point), "short" (constant non-power-of-two scales) or "float"
    (Brevitas' default learned float scales).
    """
    q = {"pow2": POW2, "float": FLOAT}.get(scales) or draw(short_scales())
    width = draw(st.integers(1, 12))
    layers = [draw(quant_act(q, signed=draw(st.booleans())))]
    for _ in range(draw(st.integers(1, 3))):
        out = draw(st.integers(1, 12))
        bias = draw(st.booleans())
        layers.append(
            qnn.QuantLinear(
                width,
                out,
                bias=bias,
                weight_quant=q["weight"],
                weight_bit_width=draw(st.integers(2, 8)),
                bias_quant=Int32Bias if bias and scales != "float" else None,
                return_quant_tensor=True,
            )
        )
        if batchnorm if batchnorm is not None else draw(st.booleans()):
            layers.append(nn.BatchNorm1d(out))
        layers.append(draw(quant_act(q)))
        width = out
    model = nn.Sequential(*layers)
    _randomize(model, draw(st.integers(0, 2**31 - 1)))
    return model


def _randomize(model: nn.Module, seed: int) -> None:
    """Random weights and batch-norm statistics (some gammas negative), then calibrate."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g))
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) + 0.1)
            elif isinstance(m, qnn.QuantLinear | qnn.QuantConv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    first = next(m for m in model.modules() if isinstance(m, qnn.QuantLinear | qnn.QuantConv2d))
    shape = (
        (first.in_features,) if isinstance(first, qnn.QuantLinear) else (first.in_channels, 8, 8)
    )
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, *shape, generator=g) * 2)
    model.eval()


@st.composite
def cnns(draw) -> nn.Module:
    """A random CNN: input quantizer, 1 or 2 QuantConv2d (+BatchNorm2d) + activation,
    flatten, QuantLinear; power-of-two scales, images of 1 to 3 channels, 8 x 8."""
    c = draw(st.integers(1, 3))
    layers = [draw(quant_act(POW2, signed=draw(st.booleans())))]
    size = 8
    for _ in range(draw(st.integers(1, 2))):
        o, k, stride = (
            draw(st.integers(1, 6)),
            draw(st.sampled_from([1, 3])),
            draw(st.integers(1, 2)),
        )
        pad = draw(st.integers(0, k // 2))
        layers.append(
            qnn.QuantConv2d(
                c,
                o,
                k,
                stride=stride,
                padding=pad,
                bias=True,
                weight_quant=POW2["weight"],
                bias_quant=Int32Bias,
                weight_bit_width=draw(st.integers(2, 8)),
                return_quant_tensor=True,
            )
        )
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(o))
        layers.append(draw(quant_act(POW2)))
        c, size = o, (size + 2 * pad - k) // stride + 1
    layers += [
        nn.Flatten(),
        qnn.QuantLinear(
            c * size * size,
            draw(st.integers(1, 5)),
            bias=True,
            weight_quant=POW2["weight"],
            bias_quant=Int32Bias,
        ),
    ]
    model = nn.Sequential(*layers)
    _randomize(model, draw(st.integers(0, 2**31 - 1)))
    return model


@st.composite
def inputs(draw, shape: tuple[int, ...], n: int = 64) -> torch.Tensor:
    """Random inputs with the extremes mixed in: zeros, huge values, and exact ties."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (n, *shape)).astype(np.float32)
    x[0] = 0.0
    x[1] = 1e6
    x[2] = -1e6
    mask = rng.random((n, *shape)) < 0.3  # exact halves of common scales: ties to round
    x[mask] = (rng.integers(-300, 300, mask.sum()) + 0.5).astype(np.float32) * 2.0 ** -rng.integers(
        0, 9, mask.sum()
    )
    return torch.from_numpy(x)


def strided_cnn() -> nn.Module:
    """1x1 stride-2 conv 2->4, 3x3 stride-2 padded conv 4->6, dense 24->3: found by hypothesis,
    where consecutive samples stall each other (interval 445 at parallelism 1, 2 and 1,
    not the largest block interval, 440)."""

    def conv(i: int, o: int, k: int, stride: int, pad: int) -> nn.Module:
        return qnn.QuantConv2d(i, o, k, stride=stride, padding=pad, bias=True,
                               weight_quant=Int8WeightPow2, bias_quant=Int32Bias,
                               return_quant_tensor=True)  # fmt: skip

    def relu() -> nn.Module:
        return qnn.QuantReLU(act_quant=Uint8ActPow2, return_quant_tensor=True)

    torch.manual_seed(0)
    model = nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True),
        conv(2, 4, 1, 2, 0), relu(), conv(4, 6, 3, 2, 1), relu(), nn.Flatten(),
        qnn.QuantLinear(24, 3, bias=True, weight_quant=Int8WeightPow2, bias_quant=Int32Bias),
    )  # fmt: skip
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 2, 8, 8))
    return model.eval()
