"""The command line and the errors a user can cause."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys

import brevitas.nn as qnn
import pytest
import torch
from cosyn.models.quant import Int32Bias
from torch import nn

import cosyn
from cosyn.errors import UnsupportedLayerError


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """`cosyn ARGS` run as `python -c "from cosyn.cli import main; main()" ARGS` runs it, in
    this process (no interpreter and torch to start each time): argv, the working folder
    (first on sys.path, as `python -c` puts it) and the exit status as there, stdout and
    stderr captured."""
    from cosyn.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    here, path, argv = os.getcwd(), list(sys.path), sys.argv
    try:
        if cwd is not None:
            os.chdir(cwd)
            sys.path.insert(0, os.getcwd())
        sys.argv = ["cosyn", *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
        sys.path[:], sys.argv = path, argv
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_train_under_a_budget_without_gates_trains_as_without_one(tmp_path):
    """`--seed` seeds the initial weights too, and a model with no GateAct trains under a
    latency budget exactly as without one (the quantizers' statistics for the allocation
    are a copy's): the same weights, bit for bit. The budget sets the parallelism, and
    the design, simulated on Icarus, meets it."""
    plain, budget = tmp_path / "plain" / "m.pt", tmp_path / "budget" / "m.pt"
    args = ("train", "cosyn.models.zoo:cnn", "--act", "relu", "--epochs", "1", "--seed", "3")
    assert cli(*args, "--out", str(plain)).returncode == 0
    r = cli(*args, "--latency-budget", "30us", "--out", str(budget))
    assert r.returncode == 0, r.stderr
    a, b = torch.load(plain), torch.load(budget)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((budget.parent / "train.json").read_text())
    sim = report["simulation"]
    assert sim["mismatches"] == 0 and sim["completion"] <= 3000 and report["choices"] == {}


def test_help_lists_the_verbs():
    out = cli("--help").stdout
    for verb in ("demo", "train", "sweep", "build", "sim", "estimate", "synth", "schedule"):
        assert verb in out


def test_train_then_build_both_backends_then_simulate(tmp_path):
    ckpt = tmp_path / "cnn.pt"
    r = cli("train", "cosyn.models.zoo:cnn", "--out", str(ckpt), "--epochs", "1", "--act", "poly")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "b"
    r = cli(
        "build",
        "cosyn.models.zoo:cnn",
        "--checkpoint",
        str(ckpt),
        "--act",
        "poly",
        "--out",
        str(out),
        "--check",
        "4",
    )
    assert r.returncode == 0, r.stderr
    assert "RTL simulation (icarus) vs golden" in r.stdout and "mismatch" not in r.stdout
    table = (out / "graph.md").read_text()
    assert "conv2d" in table and "poly" in table and "flatten" in table
    assert "xc7z020clg400-1" in (out / "hls" / "README.md").read_text()
    assert {p.name for p in (out / "rtl").iterdir()} == {"top.v", "manifest.json"}
    r = cli("sim", str(out), "--simulator", "icarus", "--vectors", "3")
    assert r.returncode == 0, r.stderr
    assert "3 vectors: bit-exact, 0 lost, 0 duplicated" in r.stdout and "(= manifest)" in r.stdout


def test_build_reads_a_qonnx_file(tmp_path):
    from brevitas.export import export_qonnx
    from cosyn.models import zoo

    model = zoo.mlp(hidden=(8,)).eval()
    export_qonnx(model, torch.zeros(1, 64), export_path=str(tmp_path / "m.onnx"))
    r = cli("build", str(tmp_path / "m.onnx"), "--backend", "rtl", "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "rtl" / "top.v").is_file() and (tmp_path / "b" / "tb").is_dir()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "no_such_pkg:mlp"], "no_such_pkg:mlp: cannot import"),
        (["build", "cosyn.models.zoo"], "package.module:factory"),
        (["build", "cosyn.models.zoo:mlp", "--checkpoint", "missing.pt"], "missing.pt: checkpoint"),
        (["build", "cosyn.models.zoo:mlp", "--input-shape", "8,x"], "input shape"),
        (["build", "cosyn.models.zoo:mlp", "--board", "no-such-board"], "no-such-board"),
        (["build", "cosyn.models.zoo:mlp", "--backend", "vhdl"], "hls, rtl, both"),
        (["build", "cosyn.models.zoo:mlp", "--parallelism", "0"], "parallelism"),
        (["build", "cosyn.models.zoo:mlp", "--device", "ecp6"], "unknown device 'ecp6'"),
        (["build", "cosyn.models.data:digits", "--act", "poly"], "does not take act"),
        (["build", "missing.onnx"], "missing.onnx"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, message):
    r = cli(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_sim_of_a_folder_without_a_design_is_a_user_error(tmp_path):
    r = cli("sim", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "nowhere/rtl/top.v: not found" in r.stderr


def test_malformed_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = cli("build", "cosyn.models.zoo:mlp", "--checkpoint", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "bad.pt: not a state_dict" in r.stderr
    assert not (tmp_path / "o").exists()


def _net(*middle: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        qnn.QuantIdentity(return_quant_tensor=True), qnn.QuantLinear(4, 4, bias=False), *middle
    )


def test_unsupported_layer_names_path_type_and_what_is_supported():
    model = _net(nn.GELU(), qnn.QuantIdentity())
    with pytest.raises(UnsupportedLayerError, match=r"2 \(GELU\).*supported: QuantIdentity"):
        cosyn.lower(model, torch.zeros(1, 4))


def test_unquantized_input_to_a_layer_is_refused():
    model = _net(nn.ReLU(), qnn.QuantLinear(4, 2, bias=False))
    with pytest.raises(UnsupportedLayerError, match=r"3 \(QuantLinear\).*not quantized"):
        cosyn.lower(model, torch.zeros(1, 4))


def test_float_operations_after_the_last_quantized_layer_are_refused():
    with pytest.raises(UnsupportedLayerError, match="model output passes through float"):
        cosyn.lower(_net(nn.ReLU()), torch.zeros(1, 4))


def test_a_model_that_does_not_run_is_reported():
    model = nn.Sequential(
        qnn.QuantIdentity(), qnn.QuantLinear(4, 4, bias=True, bias_quant=Int32Bias)
    )
    with pytest.raises(UnsupportedLayerError, match="fails on the example input"):
        cosyn.lower(model, torch.zeros(1, 4))


SIGNAL = '''
import brevitas.nn as qnn
import torch
from torch import nn
from cosyn.models.quant import Int4WeightPow2, Int8ActPow2, Uint8ActPow2


def signal():
    """(2, 16) signal -> QuantConv1d -> QuantReLU -> flatten -> QuantLinear."""
    torch.manual_seed(0)
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=Int8ActPow2),
        qnn.QuantConv1d(2, 4, 3, padding=1, bias=False, weight_quant=Int4WeightPow2),
        qnn.QuantReLU(act_quant=Uint8ActPow2, bit_width=4),
        nn.Flatten(),
        qnn.QuantLinear(4 * 16, 3, bias=False, weight_quant=Int4WeightPow2),
    ).eval()
'''


def test_build_of_a_conv1d_model_checks_brevitas_on_its_own_shape(tmp_path, monkeypatch):
    """A 1-D model takes (batch, C, L), its graph and testbench (C, 1, L): the build's check
    feeds each its own shape. Its QONNX file declares (C, L), which --input-shape names."""
    from brevitas.export import export_qonnx

    (tmp_path / "signal1d.py").write_text(SIGNAL)
    r = cli("build", "signal1d:signal", "--input-shape", "2,16", "--check", "4", "--out", "b",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Brevitas vs golden" in r.stdout and "mismatch" not in r.stdout
    assert "RTL simulation (icarus) vs golden" in r.stdout
    assert "| quantize |  | 2x1x16 |" in (tmp_path / "b" / "graph.md").read_text()
    monkeypatch.syspath_prepend(str(tmp_path))
    from signal1d import signal

    onnx = tmp_path / "signal.onnx"
    export_qonnx(signal(), torch.zeros(1, 2, 16), export_path=str(onnx))
    r = cli("build", str(onnx), "--input-shape", "2,16", "--backend", "rtl", "--out", "q",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "| quantize |  | 2x1x16 |" in (tmp_path / "q" / "graph.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--latency-budget", "1us"), "target latency 100 is below 2[0-9][0-9] cycles"),
        (("--latency-budget", "2 parsecs"), "give a time"),
        (("--latency-budget", "8us", "--lut-budget", "9000"), "give one budget or weight"),
        (("--lut-budget", "0"), "positive number of LUTs"),
        (("--lut-weight", "1"), "--lut-weight 1.0: give a positive weight, with a --latency"),
        (("--latency-budget", "8us", "--lut-weight", "-1"), "--lut-weight -1.0: give a positive"),
    ],
)
def test_train_refuses_a_budget_before_training(tmp_path, args, message):
    ckpt = tmp_path / "m.pt"
    r = cli("train", "--act", "gate", "--out", str(ckpt), *args)
    assert r.returncode == 2 and re.search(message, r.stderr), r.stderr
    assert not ckpt.exists()


def test_train_a_transformer_on_listops(tmp_path):
    """A small transformer from a factory of the user's: ListOps, no padding, the graph
    bit-exact with it; a hardware budget is refused in one line; then built to RTL and
    simulated."""
    (tmp_path / "tiny.py").write_text(
        "from cosyn.models import zoo\n\n\ndef transformer():\n"
        "    return zoo.transformer(dim=16, ffn=32, max_len=17, pattern='window', window=2)\n"
    )
    ckpt = tmp_path / "t.pt"
    r = cli("train", "tiny:transformer", "--out", str(ckpt), "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ListOps of 4-16 tokens: test accuracy" in r.stdout and ckpt.is_file()
    assert "integer graph vs model on 32 test sequences: bit-exact" in r.stdout
    r = cli("train", "tiny:transformer", "--out", str(ckpt), "--latency-budget", "2us",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "--latency-budget needs the design's estimate" in r.stderr
    # the trained transformer in RTL, each sequence at its own length, bit-exact on Icarus
    out = tmp_path / "build"
    r = cli("build", "tiny:transformer", "--checkpoint", ckpt, "--backend", "rtl", "--out", out,
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli("sim", out, "--simulator", "icarus", "--vectors", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "icarus: 4 sequences: bit-exact, 0 lost" in r.stdout
    # and its stream scheduled from the folder alone (cosyn schedule --design)
    (tmp_path / "lengths.txt").write_text("3 9 16 17 1\n")
    r = cli("schedule", "--design", out, "--lengths", tmp_path / "lengths.txt", "--plot",
            tmp_path / "t.png")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "length-aware" in r.stdout and "sequence 3 rejected: 17 tokens" in r.stdout
    r = cli("schedule", "--design", out, "--pattern", "dense")
    assert r.returncode == 2 and "--design brings its own model" in r.stderr
