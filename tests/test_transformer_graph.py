"""The transformer's integer graph: `cosyn.lower` of a zoo transformer is a graph of
sequences whose golden model equals the model bit for bit, one sequence at a time, at
every length; the transformer's layers lower in traced models too."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from cosyn.models import IntGELU, IntLayerNorm, data, zoo
from cosyn.models.quant import Int8ActPow2, Int32Bias, weight_quant
from torch import nn

import cosyn
from cosyn.errors import GraphError, UnsupportedLayerError
from cosyn.ir import Graph, IntType, Quantize
from cosyn.ir.kinds.attention import Attention

MAX_LEN = 17  # tokens with the CLS token: sequences of 1 to 16


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def model(**kw) -> nn.Module:
    """A two-block zoo transformer whose quantizers have seen ListOps (their statistics)."""
    torch.manual_seed(0)
    m = zoo.transformer(dim=16, ffn=32, blocks=2, max_len=MAX_LEN, window=2, k=3, **kw)
    m(data.listops(n_train=24, n_test=0, min_len=4, max_len=16, max_depth=3, seed=4).x_train)
    return m.eval()


def ids(length: int) -> torch.Tensor:
    return torch.randint(0, 15, (length,), generator=torch.Generator().manual_seed(length))


@pytest.mark.parametrize(
    ("pattern", "act"), [("dense", "relu"), ("window", "gelu"), ("topk", "relu"), ("topk", "gelu")]
)
def test_graph_equals_the_model_at_every_length(pattern, act):
    m = model(pattern=pattern, act=act)
    g = cosyn.lower(m, ids(5))
    assert g.sequence and g.pooled
    kinds = {n.kind for n in g}
    assert {"embed", "attention", "layernorm", "add", "token"} <= kinds
    assert ("gelu" in kinds) == (act == "gelu")
    seqs = [ids(n) for n in range(1, MAX_LEN)]
    with torch.no_grad():
        for s in seqs:
            assert np.array_equal(g.run(s.numpy()), m(s).numpy()), len(s)
        assert np.array_equal(g.run([s.numpy() for s in seqs]), m(seqs).numpy())


def test_bad_sequences_are_refused_by_name():
    m = model(pattern="window")
    g = cosyn.lower(m, ids(3))
    with pytest.raises(ValueError, match=r"^embed: a sequence of 17 tokens; it takes 1 to 16"):
        g.run(ids(17).numpy())
    with pytest.raises(ValueError, match=r"^embed: a sequence of 0 tokens"):
        g.run(np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"^embed: token ids must be 0 to 15"):
        g.run(np.array([3, 16]))
    with pytest.raises(ValueError, match=r"^tokens: a sequence is integers"):
        g.run(np.array([1.0, 2.0]))
    with pytest.raises(UnsupportedLayerError, match=r"^Transformer: mean pooling .*pooling='cls'"):
        cosyn.lower(zoo.transformer(dim=16, ffn=32, max_len=MAX_LEN, pooling="mean"), ids(3))


def test_only_a_graph_of_sequences_holds_attention():
    t = IntType(4, True)
    x = Quantize("x", (), (4,), t, np.float32(1))
    spec = cosyn.models.intops.softmax_spec(2.0**-6, 8)
    a = Attention("a", ("x", "x", "x"), (4,), IntType(16, True), np.float32(1), max_len=8,
                  spec=spec)  # fmt: skip
    Graph([x, a], sequence=True).check()
    with pytest.raises(GraphError, match=r"^a \(attention\): it mixes the tokens of a sequence"):
        Graph([x, a]).check()


class _Block(nn.Module):
    """Position-wise transformer layers in a traced model: linear, i-GELU, linear,
    LayerNorm, head (the first linear requantizes its biased output itself)."""

    def __init__(self) -> None:
        super().__init__()
        common = dict(bias=True, weight_quant=weight_quant(8), bias_quant=Int32Bias)
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True)
        self.up = qnn.QuantLinear(8, 16, output_quant=Int8ActPow2, return_quant_tensor=True,
                                  **common)  # fmt: skip
        self.act = IntGELU(8, 8)
        self.down = qnn.QuantLinear(16, 8, return_quant_tensor=True, **common)
        self.norm = IntLayerNorm(8)
        self.head = qnn.QuantLinear(8, 4, return_quant_tensor=False, **common)

    def forward(self, x):
        return self.head(self.norm(self.down(self.act(self.up(self.inp(x))))))


@pytest.fixture(scope="module")
def block() -> tuple[nn.Module, cosyn.ir.Graph, torch.Tensor]:
    """`_Block` with its quantizers' statistics, lowered; inputs."""
    torch.manual_seed(0)
    m = _Block()
    for p in (m.up.bias, m.down.bias, m.head.bias):
        nn.init.uniform_(p, -1, 1)  # biases that the output quantizer's grid does not hold
    x = torch.randn(256, 8) * 2
    m(x)  # quantizer statistics
    m.eval()
    return m, cosyn.lower(m, x[:1]), x


def test_layernorm_and_gelu_lower_in_a_traced_model(block):
    m, g, x = block
    assert [n.kind for n in g if n.kind in ("gelu", "layernorm")] == ["gelu", "layernorm"]
    with torch.no_grad():
        assert np.array_equal(g.run(x.numpy()), m(x).numpy())


def test_gelu_and_layernorm_in_rtl_exact_with_manifest_timing(block, tmp_path):
    from cosyn.hw.rtl import Top
    from cosyn.hw.rtl._tb import run_top
    from cosyn.hw.rtl._verilog import lint
    from cosyn.perfmodel.pipeline import plan
    from cosyn.scheduler.parallelism import design_parallelism

    _, g, x = block
    xi = g.quantize(x[:6].numpy())
    d = cosyn.rtl.generate(g, tmp_path / "rtl")
    y, ins, outs = run_top(Top(plan(g, design_parallelism(g))), xi)
    assert np.array_equal(y, g.run_int(xi))
    assert outs[0, 0] - ins[0, 0] == d.manifest["latency"]
    assert np.diff(outs[:, 0])[-1] == d.manifest["interval"]
    assert cosyn.perfmodel.estimate(g).interval == d.manifest["interval"]
    assert lint(d.path / "top.v") == ""


@pytest.mark.slow
def test_gelu_and_layernorm_on_icarus(block, tmp_path):
    _, g, x = block
    r = cosyn.sim.simulate(cosyn.rtl.generate(g, tmp_path / "rtl"), x[:8].numpy(), "icarus")
    assert np.array_equal(r.outputs, g.run_int(g.quantize(x[:8].numpy())))
    assert r.interval == cosyn.perfmodel.estimate(g).interval
