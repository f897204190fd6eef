"""The ways forward code flattens, preprocesses and rescales, through cosyn.lower and
from_qonnx alike: x.view(x.shape[0], -1), x.reshape(x.size(0), -1), torch.flatten(x, 1) and
nn.Flatten before or after the input quantizer; float preprocessing before it (2 * x - 1,
mean/std normalisation) folded into the input quantizer; float operations between an
accumulator and the next quantizer (scalars, per-channel buffers, BatchNorm1d, TensorNorm,
a decreasing map) folded into a threshold bank; 1-bit quantizers as they compute;
residual blocks that add QuantTensors (Brevitas' own QuantBasicBlock); QuantConv1d as a
(1, k) Conv2d of a (C, 1, L) image; and one CosynError line, never a crash, for what cosyn
does not lower."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from brevitas.quant_tensor import IntQuantTensor
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
from brevitas_examples.bnn_pynq.models.resnet import QuantBasicBlock
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from cosyn.models.quant import Int4WeightPow2, Int8ActPow2, Uint8ActPow2
from cosyn.models.train import predict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_qonnx import assert_same_graph, export, one_line
from torch import nn

import cosyn
from cosyn.errors import CosynError, UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.chain import quant_type
from cosyn.ir.intervals import IntType

PRE = {
    "none": lambda x: x,
    "bipolar": lambda x: 2.0 * x - torch.tensor([1.0]),
    "normalise": lambda x: (x - 0.1307) / 0.3081,
    "reversed": lambda x: 0.5 + x * 3.0,  # the constant first
}


def _act(bits: int) -> nn.Module:
    """FINN's activation quantizer at a power-of-two scale (1/4; binary: 1), so that the
    model's own float32 matmuls are exact and the graph must equal them bit for bit."""
    top = (2 ** (bits - 1) - 1) / 4 if bits > 1 else 1.0
    return qnn.QuantIdentity(act_quant=CommonActQuant, bit_width=bits, max_val=top, min_val=-top)


def _linear(i: int, o: int, bits: int) -> nn.Module:
    top = {1: 0.25, 2: 0.5}.get(bits, (2 ** (bits - 1) - 1) / 4)
    return qnn.QuantLinear(i, o, bias=False, weight_quant=CommonWeightQuant,
                           weight_bit_width=bits, weight_scaling_const=top)  # fmt: skip


class Net(nn.Module):
    """Image (1, 4, 4) -> quantizer -> QuantLinear -> `mid` -> quantizer -> QuantLinear ->
    quantizer, flattened by `flatten` `before` or after the input quantizer."""

    def __init__(self, flatten: str = "view", before: bool = True, pre="none", mid="bn"):
        super().__init__()
        self.flatten, self.before, self.pre, self.mid = flatten, before, pre, mid
        self.flat = nn.Flatten()
        self.inp = _act(3)
        self.fc1 = _linear(16, 8, 3)
        self.bn = nn.BatchNorm1d(8)
        self.norm = TensorNorm()
        self.register_buffer("gain", torch.linspace(-1.5, 2.0, 8))
        self.act = _act(3)
        self.fc2 = _linear(8, 3, 2)
        self.out = _act(4)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in (self.fc1, self.fc2):
                m.weight.uniform_(-1, 1, generator=g)
            for t in (self.bn.weight, self.bn.bias, self.bn.running_mean):
                t.copy_(torch.randn(8, generator=g))
            self.bn.running_var.uniform_(0.5, 3.0, generator=g)
            self.norm.weight.fill_(-0.7)
            self.norm.running_mean.fill_(0.3)
            self.norm.running_var.fill_(2.5)

    def _flatten(self, x):
        if self.flatten == "view":
            return x.view(x.shape[0], -1)
        if self.flatten == "reshape":
            return x.reshape(x.size(0), -1)
        if self.flatten == "torch":
            return torch.flatten(x, 1)
        return self.flat(x)

    def _mid(self, x):
        if self.mid == "bn":
            return self.bn(x)
        if self.mid == "scalars":
            return x * 0.37 + 0.25
        if self.mid == "decreasing":
            return 0.5 - x / 3.0
        if self.mid == "channel":
            return x * self.gain - 0.125
        return self.norm(x)

    def forward(self, x):
        x = self._flatten(x) if self.before else x
        x = self.inp(PRE[self.pre](x))
        x = x if self.before else self._flatten(x)
        x = self.act(self._mid(self.fc1(x)))
        return self.out(self.fc2(x))


X = torch.rand(256, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def both(model: nn.Module, tmp_path, dynamo: bool = False) -> cosyn.ir.Graph:
    """cosyn.lower and from_qonnx give one graph, equal to the model on X."""
    model.eval()
    g = cosyn.lower(model, X[:2])
    np.testing.assert_array_equal(g.run(X.numpy()), predict(model, X).numpy())
    h = cosyn.ir.from_qonnx(export(model, (1, 4, 4), tmp_path / "m.onnx", dynamo))
    assert_same_graph(g, h)
    np.testing.assert_array_equal(h.run(X.numpy()), predict(model, X).numpy())
    return g


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
@pytest.mark.parametrize("flatten", ["view", "reshape", "torch", "module"])
def test_flatten_patterns_before_or_after_the_input_quantizer(flatten, before, tmp_path):
    g = both(Net(flatten, before), tmp_path)
    assert [n.kind for n in g][:3] == ["quantize", "flatten", "dense"]
    assert g.input.shape == (1, 4, 4) and g.nodes[2].shape == (8,)


@pytest.mark.slow  # torch's default exporter takes seconds
def test_flatten_of_the_raw_input_reads_back_from_torch_default_exporter(tmp_path):
    both(Net("view", True, "bipolar"), tmp_path, dynamo=True)  # Reshape before Mul, Sub, Quant


@pytest.mark.parametrize("pre", ["bipolar", "normalise", "reversed"])
def test_float_preprocessing_folds_into_the_input_quantizer(pre, tmp_path):
    g = both(Net(pre=pre), tmp_path)
    assert isinstance(g.nodes[0], N.Quantize) and g.nodes[1].kind == "flatten"
    plain = cosyn.lower(Net().eval(), X[:2])
    assert not np.array_equal(g.input.thresholds, plain.input.thresholds)


@pytest.mark.parametrize("mid", ["bn", "scalars", "decreasing", "channel", "tensornorm"])
def test_float_chain_between_layers_folds_into_a_threshold_bank(mid, tmp_path):
    g = both(Net(mid=mid), tmp_path)
    bank = g.nodes[3]
    assert isinstance(bank, N.Threshold) and bank.inputs == (g.nodes[2].name,)
    decreasing = {"decreasing": True, "tensornorm": True, "scalars": False}.get(mid)
    if decreasing is not None:  # one sign for every channel
        assert np.all(bank.sign == (-1 if decreasing else 1))
    if mid == "channel":  # the gain's sign, channel by channel
        assert np.array_equal(bank.sign.reshape(-1) < 0, Net().gain.numpy() < 0)


def test_one_bit_quantizers_lower_as_they_compute():
    """Binary (CommonActQuant, 1 bit: -1/+1 in two bits) and a 1-bit signed integer
    quantizer (-1/0 in one bit); the golden model equals Brevitas either way."""
    for act, dtype in ((CommonActQuant, IntType(2, True)), (None, IntType(1, True))):
        kw = {} if act is None else {"act_quant": act}  # an injector class is falsy
        model = Net()
        model.act = qnn.QuantIdentity(bit_width=1, **kw)
        g = cosyn.lower(model.eval(), X[:2])
        assert g.nodes[3].dtype == dtype
        np.testing.assert_array_equal(g.run(X.numpy()), predict(model, X).numpy())


def test_a_one_bit_quantizer_of_unknown_levels_is_refused():
    def quant(x):
        y = torch.where(x >= 0, 2.0, 0.0)
        one = torch.tensor(1.0)
        return IntQuantTensor(y, one, torch.tensor(0.0), one, True, False)

    with pytest.raises(UnsupportedLayerError, match=r"odd \(.*levels \[0\.0, 2\.0\]"):
        quant_type(quant, quant(torch.zeros(1, 3)), (3,), "odd (QuantIdentity)")


def _relu4() -> nn.Module:
    return qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=4, return_quant_tensor=True)


def _block(i: int, o: int, stride: int, shared: nn.Module | None = None) -> nn.Module:
    """Brevitas' QuantBasicBlock (it asserts both operands are QuantTensors, then adds them)
    with its activations at power-of-two scales, so the model's float32 convs are exact."""
    b = QuantBasicBlock(i, o, stride=stride, shared_quant_act=shared, weight_quant=Int4WeightPow2)
    b.relu1, b.relu_out = _relu4(), _relu4()
    if len(b.downsample):
        b.downsample[-1] = _relu4()
    b.relu2 = b.downsample[-1] if len(b.downsample) else shared
    return b


class ResNet(nn.Module):
    """Image (3, 8, 8) -> conv, BatchNorm, the shared quantizer -> an identity block (the
    same quantizer on both operands of its add) -> a strided block (a 1x1 conv on the
    shortcut) -> x.value, flattened -> QuantLinear."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True)
        self.conv = qnn.QuantConv2d(3, 8, 3, padding=1, bias=False, weight_quant=Int4WeightPow2)
        self.bn, self.relu = nn.BatchNorm2d(8), _relu4()
        self.block1, self.block2 = _block(8, 8, 1, self.relu), _block(8, 16, 2)
        self.fc = qnn.QuantLinear(16 * 4 * 4, 10, bias=False, weight_quant=Int4WeightPow2)
        g = torch.Generator().manual_seed(0)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 2.0, generator=g)
                m.bias.data.uniform_(-0.5, 0.5, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)

    def forward(self, x):
        x = self.block2(self.block1(self.relu(self.bn(self.conv(self.inp(x))))))
        return self.fc(x.value.flatten(1))


def test_residual_blocks_adding_quant_tensors_lower_to_add_nodes(tmp_path):
    """fx tracing passes the blocks' isinstance(x, QuantTensor) checks; each `out + x` of
    two values at the shared quantizer's scale is an Add node, equal to the model on 64
    images through both frontends."""
    torch.manual_seed(0)
    model = ResNet().eval()
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    g = cosyn.lower(model, x[:2])
    block = ["conv2d", "threshold", "conv2d", "threshold"]
    kinds = ["quantize", "conv2d", "threshold", *block, "add", "shift"]
    assert [n.kind for n in g] == [*kinds, "conv2d", "threshold", *block, "add", "shift",
                                   "flatten", "dense"]  # fmt: skip
    adds = [n for n in g if isinstance(n, N.Add)]
    assert all(a.shifts == (0, 0) for a in adds)
    assert adds[0].inputs == (g.nodes[6].name, g.nodes[2].name)  # relu2(...) + the block input
    np.testing.assert_array_equal(g.run(x.numpy()), predict(model, x).numpy())
    h = cosyn.ir.from_qonnx(export(model, (3, 8, 8), tmp_path / "resnet.onnx"))
    assert_same_graph(g, h)
    np.testing.assert_array_equal(h.run(x.numpy()), predict(model, x).numpy())


def test_a_residual_add_of_unrelated_scales_is_refused_in_one_line():
    """Brevitas itself refuses to add QuantTensors of different scales in eval mode."""
    model = ResNet()
    model.block1.relu2 = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)  # scale 6/15
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(model.eval(), torch.rand(2, 3, 8, 8))
    one_line(e, "ResNet: the model fails", "Scaling factors are different", "runs in Brevitas")


class Signal(nn.Module):
    """Signal (2, 16) -> QuantConv1d (padding 1, a bias), BatchNorm1d, QuantReLU, MaxPool1d
    (or F.max_pool1d) -> QuantConv1d (stride 2) -> QuantReLU -> torch.flatten -> QuantLinear."""

    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        self.functional = functional
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPow2)
        self.conv1 = qnn.QuantConv1d(2, 8, 3, padding=1, weight_quant=Int4WeightPow2)
        self.bn, self.pool = nn.BatchNorm1d(8), nn.MaxPool1d(2)
        self.conv2 = qnn.QuantConv1d(8, 8, 3, stride=2, bias=False, weight_quant=Int4WeightPow2)
        self.relu1, self.relu2 = (qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=4) for _ in "12")
        self.fc = qnn.QuantLinear(8 * 3, 10, bias=False, weight_quant=Int4WeightPow2)
        g = torch.Generator().manual_seed(0)
        self.bn.weight.data.uniform_(0.5, 2.0, generator=g)
        self.bn.bias.data.uniform_(-0.5, 0.5, generator=g)

    def forward(self, x):
        x = self.relu1(self.bn(self.conv1(self.inp(x))))
        x = torch.nn.functional.max_pool1d(x, 2) if self.functional else self.pool(x)
        return self.fc(torch.flatten(self.relu2(self.conv2(x)), 1))


@pytest.mark.parametrize("functional", [False, True], ids=["module", "function"])
def test_conv1d_lowers_as_a_conv2d_of_height_one(functional, tmp_path):
    """A (batch, C, L) signal is a (C, 1, L) image: QuantConv1d a Conv2d of a (1, k) kernel,
    MaxPool1d a MaxPool2d of a (1, 2) window; the graph (fed x[:, :, None]) equals the model
    on 64 signals through both frontends."""
    torch.manual_seed(0)
    model = Signal(functional).eval()
    x = torch.rand(64, 2, 16, generator=torch.Generator().manual_seed(3))
    g = cosyn.lower(model, x[:2])
    assert [(n.kind, n.shape) for n in g] == [
        ("quantize", (2, 1, 16)), ("conv2d", (8, 1, 16)), ("threshold", (8, 1, 16)),
        ("maxpool2d", (8, 1, 8)), ("conv2d", (8, 1, 3)), ("shift", (8, 1, 3)),
        ("flatten", (24,)), ("dense", (10,)),
    ]  # fmt: skip
    conv, pool = g.nodes[1], g.nodes[3]
    assert conv.weight.shape == (8, 2, 1, 3) and (conv.stride, conv.padding) == ((1, 1), (0, 1))
    assert (g.nodes[4].stride, pool.kernel, pool.stride) == ((1, 2), (1, 2), (1, 2))
    y = predict(model, x).numpy()
    np.testing.assert_array_equal(g.run(x[:, :, None].numpy()), y)
    h = cosyn.ir.from_qonnx(export(model, (2, 16), tmp_path / "signal.onnx"))
    assert_same_graph(g, h)
    np.testing.assert_array_equal(h.run(x[:, :, None].numpy()), y)


AVG_1D = {  # name: (pooling, global mean), each of a (batch, C, L) signal
    "module": (nn.AvgPool1d(3), lambda x: x.mean(-1)),
    "function": (lambda x: F.avg_pool1d(x, 2), lambda x: x.mean(2)),
    "adaptive": (nn.AdaptiveAvgPool1d(6), lambda x: F.adaptive_avg_pool1d(x, 1).flatten(1)),
}


class AvgSignal(nn.Module):
    """Signal (2, 18) -> QuantConv1d (padding 1) -> QuantReLU -> the `kind` of AvgPool1d ->
    QuantReLU -> QuantConv1d -> QuantReLU -> a global mean over L -> QuantIdentity ->
    QuantLinear; divisions by 3 and 7 stay the model's (threshold banks), by 2 and 4 shifts."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.pool, self.mean = AVG_1D[kind]
        self.inp, self.mid = (qnn.QuantIdentity(act_quant=Int8ActPow2) for _ in "12")
        self.conv1 = qnn.QuantConv1d(2, 6, 3, padding=1, weight_quant=Int4WeightPow2)
        self.conv2 = qnn.QuantConv1d(6, 6, 3, bias=False, weight_quant=Int4WeightPow2)
        self.relus = nn.ModuleList(
            qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=4) for _ in "123"
        )
        self.fc = qnn.QuantLinear(6, 4, bias=False, weight_quant=Int4WeightPow2)

    def forward(self, x):
        x = self.relus[1](self.pool(self.relus[0](self.conv1(self.inp(x)))))
        return self.fc(self.mid(self.mean(self.relus[2](self.conv2(x)))))


@pytest.mark.parametrize("kind", list(AVG_1D))
def test_avgpool1d_lowers_as_an_avgpool2d_of_height_one(kind, tmp_path):
    """AvgPool1d, F.avg_pool1d and AdaptiveAvgPool1d are AvgPool2d nodes of a (1, k) window
    and a mean over L the (1, L) one of the (C, 1, L) image: the graph equals the model on
    64 signals, the same through from_qonnx (AveragePool, ReduceMean, GlobalAveragePool)."""
    torch.manual_seed(0)
    model = AvgSignal(kind).eval()
    x = torch.rand(64, 2, 18, generator=torch.Generator().manual_seed(3)) * 2 - 1
    g = cosyn.lower(model, x[:2])
    pools = [(n.kernel, n.stride, n.shape) for n in g if n.kind == "avgpool2d"]
    k, length = {"module": (3, 4), "function": (2, 7), "adaptive": (3, 4)}[kind]
    assert pools == [((1, k), (1, k), (6, 1, 18 // k)), ((1, length), (1, length), (6, 1, 1))]
    y = predict(model, x).numpy()
    np.testing.assert_array_equal(g.run(x[:, :, None].numpy()), y)
    h = cosyn.ir.from_qonnx(export(model, (2, 18), tmp_path / "signal.onnx"))
    assert_same_graph(g, h)
    np.testing.assert_array_equal(h.run(x[:, :, None].numpy()), y)


def test_avgpool1d_refuses_what_avgpool2d_refuses_in_one_line():
    model = AvgSignal("module")
    model.pool = nn.AdaptiveAvgPool1d(4)  # 18 into 4 windows of different sizes
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(model.eval(), torch.rand(2, 2, 18))
    one_line(e, "pool (AdaptiveAvgPool1d)", "does not divide")


def test_a_dilated_conv1d_is_refused_in_one_line():
    model = Signal()
    model.conv1.dilation, model.conv1.padding = (2,), (2,)  # the same length out
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(model.eval(), torch.rand(2, 2, 16))
    one_line(e, "conv1 (QuantConv1d)", "dilation=1")


class Bad(Net):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.linspace(0.1, 0.9, 16).reshape(1, 4, 4))

    def forward(self, x):
        if self.kind == "per_pixel":
            return super().forward(x - self.mean)
        if self.kind == "sigmoid":
            return torch.sigmoid(super().forward(x))
        x = super().forward(x)
        if self.kind == "difference":
            return x - x
        if self.kind == "shape":
            return x * x.shape[1]
        return x.view(-1)  # "batch": the batch flattened away


@pytest.mark.parametrize(
    ("kind", "parts"),
    [
        ("per_pixel", ("sub (call_function sub)", "before the input quantizer must be one value")),
        ("sigmoid", ("sigmoid (call_function sigmoid)", "supported: QuantIdentity")),
        ("difference", ("sub (call_function sub)", "two computed values can only be added or")),
        ("shape", ("mul (call_function mul)", "depends on the input's shape")),
        ("batch", ("view_1 (call_method view)", "flatten/view/reshape to (batch, -1)")),
    ],
)
def test_what_cosyn_does_not_lower_is_one_line_naming_the_operation(kind, parts):
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(Bad(kind).eval(), X[:2])
    one_line(e, *parts)


def test_an_error_inside_a_submodule_names_its_path():
    class Inner(nn.Module):
        def forward(self, x):
            return torch.tanh(x)

    model = Net()
    model.norm = Inner()
    model.mid = "tensornorm"
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.lower(model.eval(), X[:2])
    one_line(e, "norm.tanh (call_function tanh)", "cannot lower this operation")


class Op(nn.Module):
    """One line of forward code, as a module a generated Sequential can hold."""

    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code
        self.register_buffer("c", torch.linspace(-1.0, 1.0, 6))

    def forward(self, y):
        return {
            "scale": lambda: y * -2.0 + 0.5,
            "channel": lambda: y * self.c,
            "square": lambda: y * y,
            "double": lambda: y + y,
            "batch": lambda: y.view(-1),
            "flatten": lambda: torch.flatten(y, 1),
            "exp": lambda: torch.exp(y),
            "shape": lambda: y + y.shape[0],
            "slice": lambda: y[:, :6],
            "cat": lambda: torch.cat([y, y], 1)[:, :6],
        }[self.code]()


CODES = ["scale", "channel", "square", "double", "batch", "flatten", "exp", "shape", "slice", "cat"]
LAYERS = [
    lambda: _act(2),
    lambda: _act(1),
    lambda: qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=2),
    lambda: qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=1),
    lambda: _linear(6, 6, 2),
    lambda: _linear(6, 6, 1),
    lambda: nn.BatchNorm1d(6),
    lambda: TensorNorm(),
    lambda: nn.ReLU(),
    lambda: nn.Sigmoid(),
    lambda: nn.Dropout(),
    lambda: nn.Softmax(dim=1),
    lambda: nn.LayerNorm(6),
    lambda: nn.Flatten(),
    *(lambda c=c: Op(c) for c in CODES),
]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(range(len(LAYERS))), min_size=1, max_size=6))
def test_generated_models_lower_or_raise_one_cosyn_error_line(layers):
    torch.manual_seed(0)
    model = nn.Sequential(*(LAYERS[i]() for i in layers)).eval()
    x = torch.rand(4, 6) * 4 - 2
    try:
        g = cosyn.lower(model, x[:2])
    except CosynError as e:
        assert "\n" not in str(e) and str(e)
        return
    np.testing.assert_array_equal(g.run(x.numpy()), predict(model, x).numpy())
