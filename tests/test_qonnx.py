"""cosyn.ir.from_qonnx: a QONNX file exported by Brevitas gives the graph cosyn.lower builds,
and its golden model equals the Brevitas model bit for bit (np.array_equal on float32)."""

from __future__ import annotations

from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import onnx
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.quant import Int32Bias
from brevitas_examples.bnn_pynq.models.common import CommonActQuant, CommonWeightQuant
from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm
from cosyn.models import data, fit, zoo
from cosyn.models.quant import Int8ActPow2, Int8WeightPow2, Uint8ActPow2
from cosyn.models.train import predict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qonnx.util.cleanup import cleanup
from strategies import cnns, inputs, mlps
from test_ir_exact import user_net
from torch import nn

import cosyn
from cosyn.errors import BitWidthError, CosynError, ModelFileError, UnsupportedLayerError
from cosyn.ir import nodes as N
from cosyn.ir.intervals import IntType
from cosyn.ir.qonnx import input_shape

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
EXPORTERS = pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])


def export(model: nn.Module, shape: tuple[int, ...], path, dynamo: bool = False) -> str:
    """Brevitas' QONNX export; `dynamo` picks torch's default exporter (Reshape, slow) over
    the TorchScript one (Flatten, constant QuantTensor outputs, fast)."""
    model.eval()
    export_qonnx(model, input_t=torch.zeros(1, *shape), export_path=str(path), dynamo=dynamo)
    return str(path)


def assert_same_graph(a: cosyn.ir.Graph, b: cosyn.ir.Graph) -> None:
    """Same node kinds, shapes, types, scales and integer parameters, in the same order."""
    assert [n.kind for n in a] == [n.kind for n in b]
    for x, y in zip(a, b, strict=True):
        assert (x.shape, x.dtype) == (y.shape, y.dtype), x.name
        np.testing.assert_array_equal(x.scale, y.scale)
        for k in ("weight", "bias", "thresholds", "base", "sign", "shift", "lo", "hi", "stride"):
            if hasattr(x, k):
                np.testing.assert_array_equal(getattr(x, k), getattr(y, k), err_msg=x.name)
    assert (a.output_bias is None) == (b.output_bias is None)
    if a.output_bias is not None:
        np.testing.assert_array_equal(a.output_bias, b.output_bias)


def assert_exact(
    model: nn.Module, x: torch.Tensor, path, dynamo: bool = False, same: bool = True
) -> cosyn.ir.Graph:
    """from_qonnx of the exported model equals the model on `x` (and, with `same`, is the
    graph cosyn.lower builds)."""
    g = cosyn.ir.from_qonnx(export(model, tuple(x.shape[1:]), path, dynamo))
    got = g.run(x.numpy())
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, predict(model, x).numpy())
    if same:
        assert_same_graph(g, cosyn.lower(model, x[:2]))
    return g


def one_bit(model: nn.Module) -> bool:
    acts = (m for m in model.modules() if isinstance(m, qnn.QuantReLU | qnn.QuantIdentity))
    return any(int(m.act_quant.bit_width()) == 1 for m in acts)


@pytest.mark.parametrize(("factory", "image"), [(zoo.mlp, False), (zoo.cnn, True)])
def test_zoo_trained_on_digits_reads_back_exact(factory, image, tmp_path):
    d = data.digits(image=image)
    model = factory()
    assert fit(model, d, epochs=2, quiet=True) > 50
    g = assert_exact(model, d.x_test, tmp_path / "m.onnx", dynamo=True)
    assert N.Shift in {type(n) for n in g}
    assert input_shape(tmp_path / "m.onnx") == tuple(d.x_test.shape[1:])


@SETTINGS
@given(st.data())
def test_non_power_of_two_batchnorm_mlps_read_back_exact(tmp_path_factory, data_):
    model = data_.draw(mlps("short", batchnorm=True))
    path = tmp_path_factory.mktemp("q") / "m.onnx"
    if one_bit(model):  # Brevitas writes 1-bit quantizers as BipolarQuant: refused, not misread
        with pytest.raises(UnsupportedLayerError, match=r"m\.onnx: node .*BipolarQuant"):
            cosyn.ir.from_qonnx(export(model, (model[1].in_features,), path))
        return
    g = assert_exact(model, data_.draw(inputs((model[1].in_features,))), path)
    assert N.Threshold in {type(n) for n in g}


@SETTINGS
@given(st.data())
def test_power_of_two_mlps_read_back_exact(tmp_path_factory, data_):
    model = data_.draw(mlps("pow2"))
    path = tmp_path_factory.mktemp("q") / "m.onnx"
    if one_bit(model):
        with pytest.raises(UnsupportedLayerError, match="BipolarQuant"):
            cosyn.ir.from_qonnx(export(model, (model[1].in_features,), path))
        return
    assert_exact(model, data_.draw(inputs((model[1].in_features,))), path)


@SETTINGS
@given(st.data())
def test_cnns_read_back_exact(tmp_path_factory, data_):
    model = data_.draw(cnns())
    path = tmp_path_factory.mktemp("q") / "m.onnx"
    if one_bit(model):
        with pytest.raises(UnsupportedLayerError, match="BipolarQuant"):
            cosyn.ir.from_qonnx(export(model, (model[1].in_channels, 8, 8), path))
        return
    assert_exact(model, data_.draw(inputs((model[1].in_channels, 8, 8))), path)


@EXPORTERS
def test_user_model_with_residual_add_and_per_channel_weights_reads_back_exact(tmp_path, dynamo):
    model = user_net()
    x = torch.randn(200, 1, 8, 8)
    g = assert_exact(model, x, tmp_path / "m.onnx", dynamo)
    assert {N.Add, N.Flatten, N.Threshold, N.Conv2d} <= {type(n) for n in g}
    cleanup(str(tmp_path / "m.onnx"), out_file=str(tmp_path / "clean.onnx"))  # reorders nodes
    clean = cosyn.ir.from_qonnx(tmp_path / "clean.onnx")
    assert sorted(n.kind for n in clean) == sorted(n.kind for n in g)
    np.testing.assert_array_equal(clean.run(x.numpy()), g.run(x.numpy()))


class FloatOpsNet(nn.Module):
    """Float Mul before the input quantizer; Hardtanh (Clip), Mul and Div between layers."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(
            6, 5, bias=True, weight_quant=Int8WeightPow2, bias_quant=Int32Bias
        )
        self.clip = nn.Hardtanh(-0.5, 0.75)
        self.out = qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True)

    def forward(self, x):
        return self.out(self.clip(self.fc(self.inp(x * 1.5))) * 0.3 / 1.7)


@EXPORTERS
def test_float_clip_mul_div_between_layers_read_back_exact(tmp_path, dynamo):
    torch.manual_seed(0)
    x = torch.randn(3000, 6) * 2
    g = assert_exact(FloatOpsNet(), x, tmp_path / "m.onnx", dynamo, same=False)
    assert [type(n) for n in g] == [N.Quantize, N.Dense, N.Threshold]


# -- files cosyn refuses, with one line naming the file and the node ------------------------


def small_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPow2, return_quant_tensor=True),
        qnn.QuantLinear(4, 3, bias=False, weight_quant=Int8WeightPow2, return_quant_tensor=True),
        qnn.QuantReLU(act_quant=Uint8ActPow2, return_quant_tensor=True),
    )


def one_line(e: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, msg


@pytest.mark.parametrize("content", [b"", b"not an onnx file \x00\xff" * 9, None])
def test_malformed_file_raises_model_file_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    if content is None:  # a real export cut in half
        good = export(small_mlp(), (4,), tmp_path / "good.onnx")
        content = Path(good).read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as e:
        cosyn.ir.from_qonnx(path)
    one_line(e, "bad.onnx")


def test_missing_file_raises_model_file_error(tmp_path):
    with pytest.raises(ModelFileError) as e:
        cosyn.ir.from_qonnx(tmp_path / "nowhere.onnx")
    one_line(e, "nowhere.onnx", "no such file")


def test_unsupported_op_names_file_and_node(tmp_path):
    path = export(small_mlp(), (4,), tmp_path / "m.onnx")
    model = onnx.load(path)
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.name = "Sigmoid", "my_sigmoid"
    onnx.save(model, path)
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.ir.from_qonnx(path)
    one_line(e, "m.onnx", "'my_sigmoid'", "Sigmoid", "supported: Quant")


@EXPORTERS
def test_float_weights_are_refused_with_the_layer_named(tmp_path, dynamo):
    path = export(small_mlp(), (4,), tmp_path / "m.onnx", dynamo)
    model = onnx.load(path)
    weights = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    quant = next(n for n in model.graph.node if n.op_type == "Quant" and n.input[0] in weights)
    quant.op_type, quant.domain = "Identity", ""  # the float weight, without its Quant
    del quant.input[1:], quant.attribute[:]
    onnx.save(model, path)
    layer = "(Gemm)" if dynamo else "(MatMul)"
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.ir.from_qonnx(path)
    one_line(e, "m.onnx", layer, "not the output of a Quant")


def test_one_bit_relu_exported_as_bipolar_quant_is_refused(tmp_path):
    model = small_mlp()
    model[2] = qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=1, return_quant_tensor=True)
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.ir.from_qonnx(export(model, (4,), tmp_path / "m.onnx"))
    one_line(e, "m.onnx", "(BipolarQuant)", "2 or more bits")


def test_quant_with_a_zero_point_is_refused(tmp_path):
    path = export(small_mlp(), (4,), tmp_path / "m.onnx", dynamo=True)
    model = onnx.load(path)
    first = model.graph.node[0]
    assert first.op_type == "Quant"
    zp = next(i for i in model.graph.initializer if i.name == first.input[2])
    zp.CopyFrom(onnx.numpy_helper.from_array(np.array(3.0, np.float32), zp.name))
    onnx.save(model, path)
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.ir.from_qonnx(path)
    one_line(e, "m.onnx", f"'{first.name}' (Quant)", "zero points are not supported")


def test_dilated_convolution_is_refused(tmp_path):
    path = export(zoo.cnn(), (1, 8, 8), tmp_path / "m.onnx")
    model = onnx.load(path)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dil = next(a for a in conv.attribute if a.name == "dilations")
    dil.ints[:] = [2, 2]
    onnx.save(model, path)
    with pytest.raises(UnsupportedLayerError) as e:
        cosyn.ir.from_qonnx(path)
    one_line(e, "m.onnx", f"'{conv.name}' (Conv)", "dilation=1")


class TinyFC(nn.Module):
    """FINN's FC network in small: the raw input viewed flat, 2x - 1, a bipolar input
    quantizer, binary weights, BatchNorm1d, 2-bit activations, TensorNorm at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=CommonActQuant, bit_width=1)
        self.fc1 = qnn.QuantLinear(16, 6, bias=False, weight_quant=CommonWeightQuant,
                                   weight_bit_width=1)  # fmt: skip
        self.bn = nn.BatchNorm1d(6)
        self.act = qnn.QuantIdentity(act_quant=CommonActQuant, bit_width=2)
        self.fc2 = qnn.QuantLinear(6, 3, bias=False, weight_quant=CommonWeightQuant,
                                   weight_bit_width=2)  # fmt: skip
        self.norm = TensorNorm()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for t in (self.fc1.weight, self.fc2.weight):
                t.uniform_(-1, 1, generator=g)
            for t in (self.bn.weight, self.bn.bias, self.bn.running_mean):
                t.copy_(torch.randn(6, generator=g) * 2)
            self.norm.weight.fill_(-0.4)

    def forward(self, x):
        x = x.view(x.shape[0], -1)
        x = 2.0 * x - torch.tensor([1.0])
        return self.norm(self.fc2(self.act(self.bn(self.fc1(self.inp(x))))))


@pytest.mark.parametrize(
    "dynamo", [pytest.param(True, marks=pytest.mark.slow), False], ids=["dynamo", "torchscript"]
)
def test_finn_style_binary_network_reads_back_exact(tmp_path, dynamo):
    """BipolarQuant on the input, the weights and nothing else; Reshape/Flatten, Mul and
    Sub before the first quantizer; Sub, Div, Mul, Add after the last layer."""
    x = torch.rand(300, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    g = assert_exact(TinyFC().eval(), x, tmp_path / "m.onnx", dynamo)
    ops = {n.op_type for n in onnx.load(tmp_path / "m.onnx").graph.node}
    assert {"BipolarQuant", "Mul", "Sub", "Div"} <= ops
    assert g.input.dtype == IntType(2, True) and len(g.output_ops) == 4
    assert [n.kind for n in g] == ["quantize", "flatten", "dense", "threshold", "dense"]


@pytest.fixture(scope="module")
def tiny_fc_file(tmp_path_factory) -> bytes:
    path = export(TinyFC().eval(), (1, 4, 4), tmp_path_factory.mktemp("fc") / "m.onnx")
    return Path(path).read_bytes()


OP_TYPES = ["Relu", "Sigmoid", "MaxPool", "Quant", "BipolarQuant", "Gemm", "MatMul", "Add",
            "Sub", "Mul", "Div", "Pow", "Reshape", "Flatten", "Conv", "Identity", "Transpose",
            "BatchNormalization", "Constant", "Clip", "Trunc"]  # fmt: skip


@st.composite
def corrupted(draw, content: bytes) -> bytes:
    """The file with one to three random edits: an op type, a node dropped or moved, an
    input rewired, an attribute or an initializer replaced, or bytes cut off."""
    m = onnx.load_from_string(content)
    nodes, inits = m.graph.node, m.graph.initializer
    names = [o for n in nodes for o in n.output] + [i.name for i in inits] + ["", "nowhere"]
    for _ in range(draw(st.integers(1, 3))):
        n = nodes[draw(st.integers(0, len(nodes) - 1))]
        kind = draw(st.sampled_from(["op", "drop", "move", "input", "attr", "init", "cut"]))
        if kind == "op":
            n.op_type = draw(st.sampled_from(OP_TYPES))
        elif kind == "drop":
            nodes.remove(n)
        elif kind == "move":
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            nodes.remove(n)
            nodes.insert(draw(st.integers(0, len(nodes))), copy)
        elif kind == "input" and n.input:
            n.input[draw(st.integers(0, len(n.input) - 1))] = draw(st.sampled_from(names))
        elif kind == "attr":
            name = draw(st.sampled_from(["signed", "narrow", "transB", "axis", "rounding_mode"]))
            value = draw(st.one_of(st.integers(-2, 3), st.sampled_from(["ROUND", "FLOOR", "X"])))
            n.attribute.append(onnx.helper.make_attribute(name, value))
        elif kind == "init" and inits:
            i = inits[draw(st.integers(0, len(inits) - 1))]
            shape = draw(st.lists(st.integers(0, 3), max_size=3))
            a = np.asarray(draw(st.sampled_from([0.0, -1.0, 0.5, 3.0, np.nan])), np.float32)
            i.CopyFrom(onnx.numpy_helper.from_array(np.full(shape, a, np.float32), i.name))
        elif kind == "cut":
            data = m.SerializeToString()
            return data[: draw(st.integers(0, len(data) - 1))]
    return m.SerializeToString()


def test_an_error_from_the_graph_names_the_file(tiny_fc_file, tmp_path) -> None:
    """An input scale of 0 passes the file's checks and fails where the graph sizes a
    threshold; that error, raised below the reader, still names the file."""
    m = onnx.load_from_string(tiny_fc_file)
    scale = "/inp/act_quant/export_handler/Constant_1_output_0"
    i = next(i for i in m.graph.initializer if i.name == scale)
    i.CopyFrom(onnx.numpy_helper.from_array(np.zeros((), np.float32), scale))
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(BitWidthError, match=f"^{path}: act_act_quant_Quant .* more than 62 bits"):
        cosyn.ir.from_qonnx(path)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_corrupted_files_give_a_graph_or_one_cosyn_error_line(
    tiny_fc_file, tmp_path_factory, data_
):
    path = tmp_path_factory.mktemp("bad") / "m.onnx"
    path.write_bytes(data_.draw(corrupted(tiny_fc_file)))
    try:
        g = cosyn.ir.from_qonnx(path)
    except CosynError as e:
        assert "\n" not in str(e) and "m.onnx" in str(e)
        return
    g.run(np.zeros((2, *g.input.shape), np.float32))
