"""Fit the resource and clock model to synthesized designs, and record the sweep.

`SWEEP` lists small designs (one block kind each, over bit widths, fan-in and
parallelism); `run(devices)` builds each with `cosyn.rtl.generate`, synthesizes it
with `cosyn.fpga.synthesize` (yosys, and nextpnr where the device has it), fits the
family's LUT and FF coefficients by non-negative least squares on the designs'
features (`perfmodel.resources.FEATURES`, summed over their blocks) and the clock
coefficients on the nextpnr Fmax, on every other design (the rest are held out),
and writes `baseline.json` and `calibration.json` (each design: its configuration,
synthesized and estimated figures). `python -m cosyn.perfmodel.calibrate` re-runs it;
`--missing` synthesizes only the designs calibration.json lacks (after adding to
`SWEEP`), `--refit` none (after a change to the model, not to the RTL).
"""

from __future__ import annotations

import json
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cosyn.perfmodel.devices import device
from cosyn.perfmodel.estimate import BASELINE, coefficients, estimate_plan
from cosyn.perfmodel.pipeline import plan
from cosyn.perfmodel.resources import FEATURES, clock_features, features, primitives
from scipy.optimize import nnls

from cosyn.ir.graph import Graph
from cosyn.ir.nodes import (
    AvgPool2d,
    Conv2d,
    Dense,
    IntType,
    MaxPool2d,
    Poly,
    Quantize,
    Shift,
    Threshold,
)

__all__ = ["SWEEP", "Config", "build", "fit", "run"]

SYNTH_FIELDS = ("lut", "ff", "carry", "dsp", "bram", "fmax_mhz", "yosys_s", "pnr_s")
RECORD = Path(__file__).with_name("calibration.json")
ONE = np.ones(1, np.float32)


@dataclass(frozen=True)
class Config:
    """One design of the sweep: a Quantize input, then `kind` with these sizes."""

    kind: str
    n: int  # inputs (dense fan-in) or elements
    o: int = 1  # outputs (dense) or thresholds (threshold)
    p: int = 1  # parallelism
    x_bits: int = 8
    w_bits: int = 4
    c: int = 1  # conv2d, pooling: input channels; threshold: channels with thresholds of their own
    k: int = 3  # conv2d: kernel size (stride 1, zero padding k // 2); pooling: kernel = stride
    uniform: bool = False  # threshold: a uniform quantizer's thresholds, not random ones
    s: int = 1  # dense, conv2d: SIMD (inputs a lane multiplies a cycle)

    @property
    def name(self) -> str:
        conv = f"-c{self.c}-k{self.k}" if self.kind in ("conv2d", *POOLS) else ""
        conv = f"-c{self.c}" if self.kind == "threshold" and self.c > 1 else conv
        conv += "-u" if self.uniform else ""
        conv += f"-s{self.s}" if self.s > 1 else ""
        return f"{self.kind}-n{self.n}-o{self.o}-p{self.p}-x{self.x_bits}-w{self.w_bits}{conv}"

    @property
    def parallelism(self) -> int | tuple[int, int] | None:
        if self.kind not in ("dense", "conv2d"):
            return None
        return self.p if self.s == 1 else (self.p, self.s)


def _input(c: Config) -> Quantize:
    shape = (c.c, c.n, c.n) if c.kind in ("conv2d", *POOLS) else (c.n,)
    return Quantize("x", (), shape, IntType(c.x_bits, True), ONE)


def _dense(c: Config, rng: np.random.Generator) -> list:
    lim = 1 << (c.w_bits - 1)
    w = rng.integers(-lim, lim, (c.o, c.n))
    acc = IntType(c.x_bits + c.w_bits + int(c.n).bit_length() + 1, True)
    return [Dense("d", ("x",), (c.o,), acc, ONE, weight=w, bias=rng.integers(-99, 99, c.o))]


def _conv(c: Config, rng: np.random.Generator) -> list:
    lim = 1 << (c.w_bits - 1)
    w = rng.integers(-lim, lim, (c.o, c.c, c.k, c.k))
    acc = IntType(c.x_bits + c.w_bits + int(c.c * c.k * c.k).bit_length() + 1, True)
    return [Conv2d("v", ("x",), (c.o, c.n, c.n), acc, ONE, weight=w,
                   bias=rng.integers(-99, 99, c.o), padding=(c.k // 2, c.k // 2))]  # fmt: skip


def _threshold(c: Config, rng: np.random.Generator) -> list:
    lo, hi = -(1 << (c.x_bits - 1)), 1 << (c.x_bits - 1)
    t = np.sort(rng.integers(lo, hi, (c.c, c.o)), axis=1)  # a row per channel (element)
    if c.uniform:  # as a requantizer by a float scale: evenly spaced, the top ones clipped
        step = rng.uniform(0.5, 1.5, (c.c, 1)) * (hi - lo) / (c.o + 1)
        start = lo + rng.uniform(0, 0.5, (c.c, 1)) * (hi - lo)
        t = np.minimum(np.round(start + step * (np.arange(c.o) + 0.5)), hi).astype(np.int64)
    out = IntType(max(int(c.o).bit_length() + 1, 2), True)
    return [Threshold("t", ("x",), (c.n,), out, ONE, thresholds=t, base=np.zeros(1, np.int64),
                      sign=np.ones(1, np.int64))]  # fmt: skip


def _shift(c: Config, rng: np.random.Generator) -> list:
    out = IntType(c.w_bits, True)
    return [Shift("s", ("x",), (c.n,), out, ONE, shift=np.array([c.o]),
                  lo=np.array([out.lo]), hi=np.array([out.hi]))]  # fmt: skip


def _poly(c: Config, rng: np.random.Generator) -> list:
    coeffs = rng.integers(-(1 << (c.w_bits - 1)), 1 << (c.w_bits - 1), (1, c.o + 1))
    x = 1 << (c.x_bits - 1)
    bound, stages = abs(int(coeffs[0, 0])), []
    for k in range(1, c.o + 1):
        bound = bound * x + abs(int(coeffs[0, k]))
        stages.append(IntType(bound.bit_length() + 1, True))
    return [Poly("q", ("x",), (c.n,), stages[-1], ONE, coeffs=coeffs, stages=tuple(stages))]


def _pool(kind: type[MaxPool2d] | type[AvgPool2d]) -> Callable[[Config, np.random.Generator], list]:
    def build(c: Config, rng: np.random.Generator) -> list:
        x = IntType(c.x_bits, True)  # `_input`'s
        fields = dict(name="m", inputs=("x",), shape=(c.c, c.n // c.k, c.n // c.k), scale=ONE,
                      kernel=(c.k, c.k), stride=(c.k, c.k))  # fmt: skip
        return [kind.sized([(x.lo, x.hi)], **fields)]

    return build


# pooling kinds: an input of (c, n, n), windows of k x k
POOLS = {MaxPool2d.kind: _pool(MaxPool2d), AvgPool2d.kind: _pool(AvgPool2d)}

BUILDERS: dict[str, Callable[[Config, np.random.Generator], list]] = {
    "dense": _dense,
    "conv2d": _conv,
    "threshold": _threshold,
    "shift": _shift,
    "poly": _poly,
    **POOLS,
}

SWEEP: tuple[Config, ...] = (
    *(Config("dense", n, o, p, x, w)
      for n, o, p, x, w in [(8, 4, 1, 8, 4), (8, 4, 4, 8, 4), (16, 8, 2, 8, 4), (16, 8, 8, 8, 4),
                            (32, 16, 4, 8, 4), (32, 16, 16, 8, 4), (64, 16, 8, 8, 4),
                            (16, 8, 4, 4, 2), (16, 8, 4, 8, 8), (64, 32, 32, 8, 4),
                            (24, 12, 6, 6, 3), (48, 8, 8, 8, 6), (12, 6, 3, 8, 4),
                            (64, 10, 10, 8, 4), (128, 16, 16, 8, 4), (32, 32, 8, 8, 4),
                            (10, 20, 5, 8, 4), (40, 10, 2, 8, 4), (96, 24, 12, 8, 4),
                            (20, 4, 4, 6, 6), (56, 14, 7, 8, 2), (8, 64, 16, 8, 4),
                            (64, 64, 64, 8, 4), (30, 6, 6, 4, 4), (100, 10, 5, 8, 4),
                            (16, 16, 1, 8, 4)]),
    *(Config("conv2d", n, o, p, x, w, c, k)
      for n, o, p, x, w, c, k in [(8, 4, 1, 8, 4, 1, 3), (8, 4, 4, 8, 4, 1, 3),
                                  (6, 8, 8, 8, 4, 2, 3), (6, 8, 2, 8, 4, 4, 3),
                                  (8, 8, 4, 8, 4, 1, 1), (8, 16, 16, 8, 4, 4, 1),
                                  (10, 4, 2, 6, 3, 2, 3), (6, 6, 3, 8, 6, 3, 3),
                                  (12, 8, 8, 8, 4, 1, 5), (8, 12, 6, 4, 4, 8, 3),
                                  (6, 16, 8, 8, 4, 8, 3), (8, 2, 2, 8, 8, 2, 3)]),
    *(Config("threshold", n, o, 1, x)
      for n, o, x in [(16, 3, 8), (16, 7, 8), (16, 15, 8), (16, 31, 12), (16, 63, 16),
                      (16, 15, 16), (16, 255, 20), (16, 127, 12), (16, 1, 8), (16, 3, 24),
                      (16, 15, 24), (16, 63, 10)]),
    *(Config("shift", n, o, 1, x, w)
      for n, o, x, w in [(16, 2, 12, 4), (16, 4, 16, 8), (16, 8, 24, 8), (16, 6, 20, 6),
                         (16, 10, 32, 8), (16, 3, 10, 4), (16, 0, 8, 8), (16, 12, 28, 4)]),
    *(Config("poly", n, o, 1, x, w)
      for n, o, x, w in [(16, 2, 4, 4), (16, 2, 8, 6), (16, 3, 6, 4), (16, 2, 8, 8),
                         (16, 1, 8, 8), (16, 3, 8, 6), (16, 2, 6, 3), (16, 3, 4, 8)]),
    *(Config("threshold", n, o, 1, x, c=n)  # per-channel thresholds, as after PolyAct
      for n, o, x in [(8, 7, 8), (16, 15, 12), (32, 63, 16), (64, 255, 22)]),
    *(Config("threshold", n, o, 1, x, c=n, uniform=True)  # as a trained model's
      for n, o, x in [(8, 15, 10), (16, 63, 16), (32, 127, 20), (64, 143, 28)]),
    *(Config(kind, n, 1, 1, x, c=c, k=k)  # line buffers in LUT RAM banks and block RAM
      for kind in POOLS
      for n, c, k, x in [(8, 8, 2, 8), (28, 64, 2, 2), (16, 16, 2, 4), (8, 32, 4, 8),
                         (12, 4, 3, 6), (10, 128, 2, 8), (8, 256, 2, 4), (8, 16, 8, 8),
                         (16, 256, 2, 8)]),
    *(Config("dense", n, o, p, x, w, s=s)  # SIMD: s inputs a lane a cycle (added last)
      for n, o, p, x, w, s in [(16, 8, 4, 8, 4, 2), (32, 8, 2, 8, 4, 4), (24, 12, 6, 6, 3, 3),
                               (64, 16, 8, 8, 2, 8), (48, 8, 4, 8, 6, 2), (64, 10, 5, 8, 4, 4)]),
    *(Config("conv2d", n, o, p, x, w, c, k, s=s)
      for n, o, p, x, w, c, k, s in [(8, 16, 4, 8, 4, 8, 3, 2), (6, 16, 2, 8, 4, 8, 3, 4),
                                     (6, 8, 4, 6, 3, 6, 3, 3), (8, 8, 8, 8, 2, 8, 1, 8),
                                     (6, 8, 2, 8, 6, 4, 3, 2), (8, 12, 3, 8, 4, 4, 3, 4)]),
)  # fmt: skip


def build(c: Config) -> Graph:
    """The design of one configuration (seeded by its name)."""
    rng = np.random.default_rng(zlib.crc32(c.name.encode()))
    return Graph([_input(c), *BUILDERS[c.kind](c, rng)])


def _features(c: Config, dev_name: str) -> tuple[list[float], list[float]]:
    """The configuration's resource features (`perfmodel.resources.FEATURES`, summed over
    its blocks) and the clock features of its block under test."""
    p = plan(build(c), c.parallelism)
    dev = device(dev_name)
    co = coefficients(dev.family, fitted=False)
    feats = np.zeros(len(FEATURES))
    for s in p.stages:
        feats += features(primitives(s), dev, co)[0]
    return feats.tolist(), clock_features(primitives(p.stages[-1]), dev, co)


def _row(c: Config, dev_name: str, synth: Callable[..., Any]) -> dict[str, Any]:
    """Synthesize one configuration; its features, and what synthesis measured."""
    from cosyn.hw.rtl import generate

    feats, clock = _features(c, dev_name)
    with tempfile.TemporaryDirectory() as tmp:
        r = synth(generate(build(c), Path(tmp) / "rtl", c.parallelism), dev_name)
    return {"config": c.__dict__ | {"name": c.name}, "device": dev_name,
            "features": feats, "clock": clock,
            "synth": {k: getattr(r, k) for k in SYNTH_FIELDS}}  # fmt: skip


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """LUT and FF coefficients (non-negative least squares on the relative error, the
    error the model is judged by: each row divided by its count) and clock coefficients
    from the rows given (one family)."""
    a = np.array([r["features"] for r in rows])
    out = {}
    for m in ("lut", "ff"):
        y = np.array([r["synth"][m] for r in rows], float)
        w = 1 / np.maximum(y, 1)
        out[m] = nnls(a * w[:, None], y * w)[0].tolist()
    timed = [r for r in rows if r["synth"]["fmax_mhz"]]
    if len(timed) >= 3:
        b = np.array([r["clock"] for r in timed])
        out["fmax"] = nnls(b, np.array([1e3 / r["synth"]["fmax_mhz"] for r in timed]))[0].tolist()
    return out


def _mape(est: list[float], real: list[float]) -> float:
    e, r = np.array(est, float), np.array(real, float)
    return float(np.mean(np.abs(e - r) / np.maximum(r, 1)) * 100)


def run(
    devices: tuple[str, ...] = ("ecp5-85f", "xc7z020"),
    configs=SWEEP,
    placed: int = 3,
    missing: bool = False,
) -> dict[str, Any]:
    """Synthesize the sweep on each device, fit on even rows, report held-out error on odd
    rows, and update baseline.json and calibration.json for these devices' families.
    Every `placed`-th design is also placed and routed (Fmax; minutes each on 2 cores),
    the others stop after yosys (counts). With `missing`, only the configurations
    calibration.json does not record are synthesized; the others keep their recorded
    synthesis, their features recomputed by the model as it is now."""
    from cosyn.hw.fpga import synthesize

    record = json.loads(RECORD.read_text()) if missing and RECORD.exists() else {"devices": {}}
    fitted, results = {}, {}
    for name in devices:
        dev = device(name)
        known = {r["config"]["name"]: r for r in record["devices"].get(name, {}).get("rows", [])}
        rows = []
        for k, c in enumerate(configs):
            if c.name in known:
                rows.append(_recorded(known[c.name], c, name))
                continue
            place = k % placed == 0
            rows.append(
                _row(
                    c, name, lambda d, n, place=place: synthesize(d, n, progress=False, place=place)
                )
            )
            print(f"{name} {k + 1}/{len(configs)} {c.name}: {rows[-1]['synth']}", file=sys.stderr)
        fitted[dev.family], results[name] = _fitted(name, rows)
    return _write(fitted, results, len(configs))


def refit(devices: tuple[str, ...] = ("ecp5-85f", "xc7z020")) -> dict[str, Any]:
    """Fit again on the designs calibration.json records, their features recomputed by
    the model as it is now (no synthesis: for a change to the model, not to the RTL)."""
    record = json.loads(RECORD.read_text())
    fitted, results = {}, {}
    for name in devices:
        rows = [
            _recorded(r, Config(**{k: v for k, v in r["config"].items() if k != "name"}), name)
            for r in record["devices"][name]["rows"]
        ]
        fitted[device(name).family], results[name] = _fitted(name, rows)
    return _write(fitted, results, record["configs"])


def _recorded(row: dict[str, Any], c: Config, dev_name: str) -> dict[str, Any]:
    """A recorded row with its features recomputed by the model as it is now."""
    row["features"], row["clock"] = _features(c, dev_name)
    return row


def _fitted(name: str, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The family's coefficients fitted on the even rows, and the rows with their
    estimates and the held-out (odd rows') error."""
    dev = device(name)
    train, held = rows[0::2], rows[1::2]
    fam = {**coefficients(dev.family, fitted=False), **fit(train)}
    fam["fitted"] = f"perfmodel/calibration.json ({name}, {len(train)} designs)"
    for r in rows:
        f = np.array(r["features"])
        r["estimate"] = {"lut": float(f @ fam["lut"]), "ff": float(f @ fam["ff"])}
    return fam, {
        "rows": rows,
        "held_out_mape": {m: _mape([r["estimate"][m] for r in held],
                                   [r["synth"][m] for r in held]) for m in ("lut", "ff")},
    }  # fmt: skip


def _write(fitted: dict[str, Any], results: dict[str, Any], configs: int) -> dict[str, Any]:
    def update(baseline: dict[str, Any]) -> None:
        baseline["features"] = list(FEATURES)
        baseline["families"].update(fitted)

    _merge(BASELINE, update, {})
    _merge(RECORD, lambda r: r["devices"].update(results), {"configs": configs, "devices": {}})
    return {"devices": results}


def _merge(path: Path, update: Callable[[dict], None], empty: dict) -> None:
    """Read `path` (or `empty`), apply `update`, write it back whole: runs for other
    devices, before or at the same time, keep theirs."""
    data = json.loads(path.read_text()) if path.exists() else empty
    update(data)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1 if path == RECORD else 2) + "\n")
    tmp.replace(path)


def estimate_of(c: Config, dev: str) -> dict[str, Any]:
    """The model's estimate of one configuration (for tests and the benchmark)."""
    e = estimate_plan(plan(build(c), c.parallelism), dev)
    return {"lut": e.lut, "ff": e.ff, "dsp": e.dsp, "bram": e.bram, "fmax_mhz": e.fmax_mhz}


def main(argv: list[str] | None = None) -> int:
    """`python -m cosyn.perfmodel.calibrate [--missing | --refit] [DEVICE ...]`."""
    import argparse

    from cosyn.perfmodel.devices import DEVICES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("devices", nargs="*", default=["ecp5-85f", "xc7z020"], help="device names")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--missing", action="store_true", help="synthesize unrecorded designs only")
    how.add_argument("--refit", action="store_true", help="synthesize nothing: fit again")
    args = p.parse_args(argv)
    if unknown := [d for d in args.devices if d not in DEVICES]:
        print(f"error: unknown device {unknown[0]!r}; known: {', '.join(DEVICES)}", file=sys.stderr)
        return 2
    names = tuple(args.devices)
    out = refit(names) if args.refit else run(names, missing=args.missing)
    for name, d in out["devices"].items():
        print(name, "held-out MAPE", d["held_out_mape"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
