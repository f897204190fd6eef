"""`cosyn.perfmodel.estimate`: cycles equal the RTL plan (and, in test_rtl_models, the
simulation), resources follow the built blocks, bad input gets a clear answer."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
import torch
from cosyn.hw.rtl import generate
from cosyn.models.zoo import cnn, mlp
from cosyn.perfmodel import (
    DEVICES,
    Estimate,
    UnknownDeviceError,
    device,
    estimate,
    estimate_hls,
)
from cosyn.perfmodel.pipeline import plan
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import cli

import cosyn
from cosyn.ir.graph import Graph
from cosyn.ir.nodes import Dense, IntType, Quantize


@pytest.fixture(scope="module")
def graphs() -> dict[str, Graph]:
    torch.manual_seed(0)
    return {
        "mlp": cosyn.lower(mlp(act="poly").eval(), torch.zeros(1, 64)),
        "cnn": cosyn.lower(cnn().eval(), torch.zeros(1, 1, 8, 8)),
    }


def _wide_dense(outputs: int, inputs: int = 16) -> Graph:
    """A dense layer with 8-bit weights: one multiplier per output at full parallelism."""
    rng = np.random.default_rng(0)
    q = Quantize("x", (), (inputs,), IntType(8, True), np.ones(1, np.float32))
    w = rng.integers(-128, 128, (outputs, inputs))
    d = Dense("d", ("x",), (outputs,), IntType(24, True), np.ones(1, np.float32),
              weight=w, bias=np.zeros(outputs, np.int64))  # fmt: skip
    return Graph([q, d])


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_cycles_are_the_manifests(graphs, name, tmp_path) -> None:
    g = graphs[name]
    for p in (None, 2):
        e = estimate(g, "ecp5-85f", p)
        m = generate(g, tmp_path / f"{name}{p}", p).manifest
        assert (e.latency, e.interval) == (m["latency"], m["interval"])
        assert [(n.name, n.latency, n.interval) for n in e.nodes] == [
            (n["name"], n["latency"], n["interval"]) for n in m["nodes"]
        ]


def test_dsps_follow_the_multipliers_and_operand_widths(graphs) -> None:
    """A lane whose weights are wider than `NARROW` bits multiplies in one DSP block (its
    operands fit one); narrower weights, and PolyAct's 8-bit elements, multiply in LUTs."""
    for p in (1, 4, 8):
        e = estimate(_wide_dense(8), "ecp5-85f", p)
        assert e.dsp == p
    g = graphs["mlp"]
    assert max(int(np.abs(n.weight).max()).bit_length() + 1 for n in g if n.kind == "dense") <= 4
    assert estimate(g, "xc7z020").dsp == 0 and plan(g).multipliers > 100


def test_resources_grow_with_parallelism(graphs) -> None:
    g = graphs["cnn"]
    small, big = estimate(g, "ecp5-85f", 1), estimate(g, "ecp5-85f", 8)
    assert big.lut > small.lut and big.ff > small.ff and big.interval < small.interval


def test_a_design_larger_than_the_device_says_by_how_much() -> None:
    e = estimate(_wide_dense(64), "ice40-up5k", 64)
    assert not e.fits and e.over()["dsp"] == (64, 8)
    assert e.fit_message().startswith("does not fit ice40-up5k: ")
    assert "DSP 64 of 8 (800%)" in e.fit_message()
    assert estimate(_wide_dense(64), "xcu250", 64).fits


def test_unknown_device_lists_the_known_ones(graphs) -> None:
    with pytest.raises(UnknownDeviceError, match=r"known devices: ecp5-25f, .*xcu250"):
        estimate(graphs["mlp"], "ecp5-12f")
    assert device("ECP5-85F") is DEVICES["ecp5-85f"]
    for d in DEVICES.values():
        assert d.sources.get("counts") and d.luts > 0 and d.brams > 0


def test_json_table_and_plot(graphs, tmp_path) -> None:
    e = estimate(graphs["cnn"], "xc7z020")
    again = Estimate.from_json(e.to_json())
    assert again == e and json.loads(e.to_json())["inferences_per_s"] == e.inferences_per_s
    assert e.inferences_per_s == pytest.approx(e.fmax_mhz * 1e6 / e.interval)
    assert e.table().row_count == len(e.nodes) + 1
    png = e.plot(tmp_path / "e.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["e.png"]


def test_cli_estimate(tmp_path) -> None:
    out = tmp_path / "e.json"
    r = cli("estimate", "cosyn.models.zoo:mlp", "--device", "xc7z020", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "estimate on xc7z020" in r.stdout and json.loads(out.read_text())["interval"] > 0
    bad = cli("estimate", "cosyn.models.zoo:mlp", "--device", "xc9")
    assert bad.returncode == 2 and "known devices" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_estimate_takes_parallelism_per_node(tmp_path) -> None:
    """`--parallelism NAME=P,NAME=PxS`: those nodes at P lanes (of S terms), the others at
    the default rule, as `estimate` with the same dict; a malformed value or an unknown
    node is one line, exit 2."""
    out = tmp_path / "e.json"
    r = cli("estimate", "cosyn.models.zoo:cnn", "--parallelism", "conv2d_3=16x2,dense_6=5",
            "--json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = {n["name"]: n["parallelism"] for n in json.loads(out.read_text())["nodes"]}
    g = cosyn.lower(cnn(), torch.zeros(1, 1, 8, 8))
    want = estimate(g, "ecp5-85f", {"conv2d_3": (16, 2), "dense_6": 5})
    assert got["conv2d_3"] == [16, 2] and got["dense_6"] == 5
    assert json.loads(out.read_text())["interval"] == want.interval
    for bad, says in (("conv2d_3=16y2", "NAME=PxS"), ("conv9=4", "conv9: no such node")):
        r = cli("estimate", "cosyn.models.zoo:cnn", "--parallelism", bad)
        assert r.returncode == 2 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_dsp_and_bram_exact_on_every_recorded_design() -> None:
    """Every design the calibration synthesized, both devices: the estimate's DSP and
    block RAM counts are yosys's (a ROM part constant in every word is no memory)."""
    from cosyn.perfmodel import calibrate

    for dev, d in json.loads(calibrate.RECORD.read_text())["devices"].items():
        for r in d["rows"]:
            c = calibrate.Config(**{k: v for k, v in r["config"].items() if k != "name"})
            e = calibrate.estimate_of(c, dev)
            assert (e["dsp"], e["bram"]) == (r["synth"]["dsp"], r["synth"]["bram"]), (dev, c.name)


@pytest.mark.slow
def test_estimate_within_the_baselines_error_of_a_fresh_synthesis() -> None:
    """Two sweep designs synthesized again (yosys, ecp5-85f): DSP and BRAM exact, LUT and
    FF within the worst held-out error recorded by the calibration, plus 10 points."""
    from cosyn.hw.fpga import synthesize
    from cosyn.perfmodel import calibrate

    record = json.loads(calibrate.RECORD.read_text())["devices"]["ecp5-85f"]["rows"]
    worst = {m: max(abs(r["estimate"][m] - r["synth"][m]) / max(r["synth"][m], 1)
                    for r in record) for m in ("lut", "ff")}  # fmt: skip
    for c in (calibrate.SWEEP[1], calibrate.SWEEP[17]):
        with tempfile.TemporaryDirectory() as tmp:
            d = generate(calibrate.build(c), f"{tmp}/rtl", c.parallelism)
            s = synthesize(d, "ecp5-85f", progress=False, cache=False)
        e = calibrate.estimate_of(c, "ecp5-85f")
        assert (e["dsp"], e["bram"]) == (s.dsp, s.bram), c.name
        for m in ("lut", "ff"):
            assert abs(e[m] - getattr(s, m)) <= (worst[m] + 0.10) * max(getattr(s, m), 1), c.name


def test_hls_reuse_factor_divides_the_multipliers(graphs) -> None:
    g = graphs["mlp"]
    one, four = estimate_hls(g, 1), estimate_hls(g, 4)
    dense = [n for n in g if n.kind == "dense"]
    assert [x.multipliers for x in one] == [n.weight.size for n in dense]
    assert [x.multipliers for x in four] == [-(-n.weight.size // 4) for n in dense]
    assert {x.interval for x in four} == {4} and not any(x.verified for x in four)
    conv = estimate_hls(graphs["cnn"], 3, "io_stream")[0]  # a 3x3 conv of 1 channel, 8 out
    assert (conv.reuse_factor, conv.multipliers, conv.interval) == (3, 24, 3 * 8 * 8)
    # hls4ml takes R < 9 only where it divides 9; of 1 and 3, as close to 2, the smaller
    assert estimate_hls(graphs["cnn"], 2, "io_stream")[0].reuse_factor == 1
    with pytest.raises(cosyn.CosynError, match="reuse factor 100000 exceeds"):
        estimate_hls(g, 100000)


def test_hls_reuse_factors_are_hls4mls_own() -> None:
    """The reuse factors hls4ml accepts, and the one it applies for any other request,
    are hls4ml's own (its backend's rule, called here)."""
    from cosyn.perfmodel.hls import applied_reuse, valid_reuse_factors
    from hls4ml.backends import get_backend

    backend = get_backend("Vitis")
    for n_in, n_out in [(64, 64), (64, 32), (32, 10), (9, 16), (72, 8), (7, 3)]:
        valid = backend.get_valid_reuse_factors(n_in, n_out)
        assert list(valid_reuse_factors(n_in, n_out)) == valid
        node = Dense("d", ("x",), (n_out,), IntType(8, True), np.ones(1, np.float32),
                     weight=np.ones((n_out, n_in), np.int64))  # fmt: skip
        for r in range(2, n_in * n_out + 1, 3):
            assert applied_reuse(node, r) == backend.get_closest_reuse_factor(valid, r), r


def test_hls_generate_allocates_reuse_factors_to_the_dsps(graphs, tmp_path) -> None:
    """By default each dense/conv layer's reuse factor is the least interval whose
    multipliers fit the part's DSP slices; hls4ml applies exactly the estimated ones,
    and a layer of R > 1 takes the Resource strategy."""
    from cosyn.scheduler import allocate_reuse

    g = graphs["mlp"]
    h = cosyn.hls.generate(g, tmp_path / "p")
    layers = estimate_hls(g, h.reuse_factors)
    assert h.reuse_factors == allocate_reuse(g, 220) == {x.name: 32 for x in layers}
    assert sum(x.multipliers for x in layers) <= 220
    assert sum(x.multipliers for x in estimate_hls(g, 16)) > 220
    for x in layers:
        layer = h.hls_model.graph[x.name]
        assert layer.get_attr("reuse_factor") == x.reuse_factor
        assert layer.get_attr("strategy") == "resource"
    big = cosyn.hls.generate(g, tmp_path / "u250", board="alveo-u250")
    assert set(big.reuse_factors.values()) == {1}  # 6,464 multipliers of 12,288 DSPs
    assert cosyn.hls.generate(g, tmp_path / "one", reuse_factor=1).reuse_factors == dict.fromkeys(
        h.reuse_factors, 1
    )


def test_baseline_has_a_coefficient_per_feature() -> None:
    from cosyn.perfmodel.estimate import _baseline
    from cosyn.perfmodel.resources import CLOCK_FEATURES, FEATURES

    base = _baseline()
    assert tuple(base["features"]) == FEATURES
    for fam in base["families"].values():
        assert len(fam["lut"]) == len(fam["ff"]) == len(FEATURES)
        assert len(fam["fmax"]) == len(CLOCK_FEATURES)


def test_block_rams_split_a_wide_memory_into_the_cheapest_columns() -> None:
    """yosys maps a 4096 x 46 ROM to ten 2048 x 9 blocks and one 4096 x 4 for the last
    bit (11, where any one shape needs 12): the 64-channel threshold bank of the sweep
    synthesizes to 17 DP16KD, its 2048- and 4096-word levels."""
    from cosyn.perfmodel.resources import _brams

    shapes = device("ecp5-85f").bram_shapes
    assert (_brams(4096, 46, shapes), _brams(2048, 46, shapes)) == (11, 6)
    assert _brams(512, 36, shapes) == 1 and _brams(1024, 36, shapes) == 2
    assert _brams(16, 0, shapes) == 0


def test_a_lut_rom_costs_its_logic_not_its_size() -> None:
    """Bits that never change are constants, equal bits are built once, and a bit that
    follows one address bit is one LUT; unknown words cost every piece."""
    from cosyn.perfmodel.resources import _rom_bits, _rom_luts

    addr = np.arange(64)
    words = np.stack([addr & 1, addr & 1, np.full(64, 3)], axis=1)  # fields of 2 bits
    bits = _rom_bits(words, 2)
    assert bits.shape == (64, 2)  # bit 0 of fields 0 and 1 (the same); field 2 constant
    assert _rom_luts(64, 2, bits, 4) == (1, 0)
    rng = np.random.default_rng(0)
    rand = _rom_bits(rng.integers(0, 4, (64, 3)), 2)
    assert _rom_luts(64, 6, rand, 4) <= _rom_luts(64, 6, None, 4) == (6 * 4, 6 * 3)
    assert _rom_luts(64, 6, rand, 6)[1] == 0  # a 6-input LUT holds 64 words


def _rom_luts_by_rows(depth: int, bits: np.ndarray, k: int) -> tuple[int, int]:
    """`_rom_luts` of known words as first written: each bit's truth table a boolean row,
    leaves and nodes cut from the rows and the distinct ones counted with np.unique."""
    a = (depth - 1).bit_length()
    pieces = 1 << max(a - k, 0)
    t = np.concatenate([bits, np.repeat(bits[-1:], (1 << a) - len(bits), axis=0)]).T
    t = np.unique(t, axis=0)
    leaves = t.reshape(-1, len(t[0]) // pieces)
    muxes = 0
    for j in range(max(a - k, 0)):
        nodes = t.reshape(-1, 2, 1 << (k + j))
        nodes = nodes[(nodes[:, 0] != nodes[:, 1]).any(axis=1)]
        muxes += len(np.unique(nodes.reshape(len(nodes), 2 << (k + j)), axis=0))
    leaves = leaves[leaves.any(axis=1) & ~leaves.all(axis=1)]
    return len(np.unique(leaves, axis=0)), muxes


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 1100), st.integers(1, 4), st.integers(0, 6), st.sampled_from([4, 6]),
       st.integers(0, 2**32 - 1))  # fmt: skip
def test_lut_rom_logic_counted_on_integers_equals_the_rows(depth, fields, field_bits, k, seed):
    """`_rom_luts` (each bit's truth table one integer, its leaves and nodes cut by shifts)
    counts the leaves and multiplexers that the boolean rows give, on ROMs of random
    words: few distinct values (shared and constant bits), or any."""
    from cosyn.perfmodel.resources import _rom_bits, _rom_luts

    rng = np.random.default_rng(seed)
    values = rng.integers(-9, 9, rng.integers(1, 5)) if seed % 2 else np.arange(-64, 64)
    words = rng.choice(values, (depth, fields))
    if seed % 3 == 0:
        words[: depth // 2] = words[0]  # long runs of one word
    bits = _rom_bits(words, max(field_bits, 1))
    want = _rom_luts_by_rows(depth, bits, k) if bits.shape[1] else (0, 0)
    assert _rom_luts(depth, fields, bits, k) == want
