"""The command line: `cosyn demo`, `train`, `sweep`, `build`, `sim`, `estimate`, `synth`,
`schedule`."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table
from torch import nn

from cosyn import perfmodel
from cosyn import sim as rtl_sim
from cosyn.config import DEFAULT_MODEL, load_model, parse_shape
from cosyn.errors import CosynError
from cosyn.hw import fpga, hls, rtl
from cosyn.ir import Graph, from_qonnx, lower
from cosyn.ir.builder import node_name
from cosyn.ir.qonnx import input_shape as qonnx_input_shape
from cosyn.models import (
    Transformer,
    accuracy,
    data,
    fit,
    fit_sequences,
    gates,
    harden,
    majority,
    zoo,
)
from cosyn.models import sweep as sweeps
from cosyn.models.sparsity import METHODS as SPARSE
from cosyn.models.sparsity import Masks
from cosyn.models.train import BudgetPenalty, SpanWeight, predict, take_statistics
from cosyn.perfmodel.pipeline import parallelism_pair
from cosyn.report import atomic_dir, graph_table, write_text
from cosyn.scheduler import allocate, compare, plot_timeline, schedule_table, stdlib_lengths

app = typer.Typer(
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="cosyn: hardware/model co-design for FPGAs.",
)
console = Console()
BACKENDS = ("hls", "rtl", "both")
SIMULATORS = ("icarus", "verilator")
FINETUNE, FINETUNE_LR = 3, 2e-3  # `train`: a third as many epochs again after hardening


def _is_image(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _choice(value: str, known: tuple[str, ...], what: str) -> str:
    if value not in known:
        raise CosynError(f"{what} {value!r}: choose one of {', '.join(known)}")
    return value


PARALLELISM_HELP = (
    "multipliers per dense/conv layer: auto (the default: balanced to the smallest interval "
    "that fits the device, cosyn.scheduler.allocate; the rule where nothing fits), rule "
    "(every output up to 64), a number, or per node NAME=P or NAME=PxS (S inputs a lane "
    "multiplies a cycle), comma-separated"
)


def _parallelism(value: str | None) -> int | str | dict | None:
    """--parallelism: None or "auto" (`scheduler.design_parallelism`: allocated for the
    device), "rule" (the default rule), a number, or per node `name=P` or `name=PxS`,
    comma-separated (a dict: nodes not named take the default rule)."""
    if value is None or value in ("auto", "rule"):
        return value
    try:
        if "=" not in value:
            return int(value)
        per = {}
        for item in value.split(","):
            name, _, folding = item.partition("=")
            p, _, simd = folding.partition("x")
            per[name.strip()] = (int(p), int(simd)) if simd else int(p)
        return per
    except ValueError:
        raise CosynError(
            f"--parallelism {value!r}: give auto, rule, a number, or NAME=P or NAME=PxS per node, "
            "comma-separated"
        ) from None


def check_exact(model: nn.Module, g: Graph, x: torch.Tensor) -> int:
    """Number of output elements where the golden model differs from the model."""
    return int(np.count_nonzero(predict(model, x).numpy() != g.run(x.numpy())))


def reference_vectors(g: Graph, seed: int = 0) -> np.ndarray | list[np.ndarray]:
    """The digits test set when the graph takes digits; of a graph of sequences, 16
    sequences of seeded random token ids, of 1, 2 and 3 tokens, the most it takes, then
    random lengths; else 360 random float32 vectors that cover the input quantizer's
    whole range (seeded)."""
    if g.sequence:
        embed = g.nodes[1]
        start = embed.start
        most = len(embed.positions) - (start is not None)
        vocab = start if start is not None else g.input.dtype.hi + 1
        rng = np.random.default_rng(seed)
        lengths = [min(n, most) for n in (1, 2, 3)] + [most, *rng.integers(1, most + 1, 12)]
        return [rng.integers(0, vocab, n) for n in lengths]
    shape = g.input.shape
    if shape in ((64,), (1, 8, 8)):
        return data.digits(image=len(shape) == 3).x_test.numpy()
    t = g.input.thresholds
    lo, hi = (float(t[0]), float(t[-1])) if t.size else (-1.0, 1.0)
    span = max(hi - lo, 1e-3)
    rng = np.random.default_rng(seed)
    return rng.uniform(lo - 0.1 * span, hi + 0.1 * span, (360, *shape)).astype(np.float32)


def _agreement(rows: list[tuple[str, str]], vectors: int) -> Table:
    table = Table(title=f"agreement on {vectors} vectors")
    table.add_column("check")
    table.add_column("result")
    for check, result in rows:
        table.add_row(check, result)
    return table


def _mismatch(n: int) -> str:
    return "bit-exact" if n == 0 else f"{n} mismatching outputs"


def _sim_line(r: rtl_sim.SimResult, manifest: dict) -> tuple[str, bool]:
    """One line on a simulation (checks, timing against the manifest), and its success."""
    if manifest.get("sequence"):  # cycles per sequence depend on its neighbours: no one latency
        line = (
            f"{r.vectors} sequences: {_mismatch(r.mismatches)}, {r.lost} lost, "
            f"{r.duplicated} duplicated; {r.cycles} cycles in all"
        )
        return line, r.ok
    want = manifest["latency"], manifest["interval"]
    timing = (r.latency, r.interval) == want
    note = "(= manifest)" if timing else f"(manifest: {want[0]} and {want[1]})"
    line = (
        f"{r.vectors} vectors: {_mismatch(r.mismatches)}, {r.lost} lost, {r.duplicated} "
        f"duplicated; latency {r.latency} and interval {r.interval} cycles {note}; "
        f"{r.vectors_per_s:.0f} vectors/s"
    )
    return line, r.ok and timing


def _estimate_line(e: perfmodel.Estimate, r: rtl_sim.SimResult, same: bool) -> str:
    verdict = "equal" if same else f"simulated {r.latency} and {r.interval}"
    return (
        f"latency {e.latency} and interval {e.interval} cycles ({verdict}); "
        f"{e.lut} LUT, {e.ff} FF, {e.dsp} DSP, {e.bram} BRAM, {e.fmax_mhz:.0f} MHz estimated"
    )


def _synth_line(s: fpga.SynthResult, e: perfmodel.Estimate) -> str:
    """Synthesized resources and Fmax, each with the estimate's error against it."""

    def vs(got: float, est: float) -> str:
        if got == est:
            return "= estimate"
        return f"estimate {est:,.0f}" + (f", {est / got - 1:+.0%}" if got else "")

    parts = [f"{getattr(s, r):,} {r.upper()} ({vs(getattr(s, r), getattr(e, r))})"
             for r in ("lut", "ff", "dsp", "bram")]  # fmt: skip
    fmax = f"Fmax {s.fmax_mhz:.0f} MHz ({vs(s.fmax_mhz, e.fmax_mhz)})" if s.fmax_mhz else "no Fmax"
    took = "cached" if s.cached else f"yosys {s.yosys_s:.0f} s, nextpnr {s.pnr_s or 0:.0f} s"
    return f"{', '.join(parts)}; {fmax}; {took}"


def _simulate(design: rtl.Design, x: np.ndarray, simulator: str) -> tuple[str, bool]:
    """Simulate `design` on `x` with random back-pressure and input gaps; the simulator's
    build folder is removed, so rtl/ keeps only what `rtl.generate` wrote."""
    r = rtl_sim.simulate(design, x, simulator=simulator)
    shutil.rmtree(Path(design.path) / "sim_build", ignore_errors=True)
    return _sim_line(r, design.manifest)


DEMO_BUDGETS = ("400cycles", "800cycles", "1600cycles")


def _print_sweep(s: sweeps.Sweep) -> None:
    console.print(s.table())
    for k, tail in s.failed.items():
        console.print(f"[red]{k} failed:[/red]\n{tail}")


def _demo_sweep(out: Path, seed: int, epochs: int, budgets=DEMO_BUDGETS) -> tuple[str, str, bool]:
    """`cosyn demo --sweep`: the sweep's points and front printed, and its row of the
    agreement table (check, result, whether every point met its budget in simulation)."""
    s = sweeps.sweep(DEFAULT_MODEL, budgets, out, seeds=[seed], epochs=epochs, workers=2)
    _print_sweep(s)
    met = [p for p in s.points if p.completion <= _goal(p.budget, None, None, 100.0).latency]
    result = (
        f"{len(met)} of {len(budgets)} budgets met in simulation ({s.wall_s:.0f} s); "
        f"front: {', '.join(p.budget for p in s.front())}"
    )
    return f"sweep (Ray, GateActs, {epochs} epochs)", result, len(met) == len(budgets)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/demo"),
    epochs: Annotated[int, typer.Option(help="training epochs")] = 30,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    simulator: Annotated[str, typer.Option(help="icarus or verilator")] = "verilator",
    synth: Annotated[
        bool,
        typer.Option(
            help="also synthesize the RTL for ecp5-85f (yosys + nextpnr; about half an hour "
            "the first time, then cached by design hash)"
        ),
    ] = False,
    sweep: Annotated[
        bool,
        typer.Option(
            help="also a small sweep: the MLP with GateActs trained under latency budgets of "
            f"{', '.join(DEMO_BUDGETS)} as Ray tasks, and its front (about a minute more)"
        ),
    ] = False,
) -> None:
    """Train the default MLP with ReLU and with PolyAct on digits, lower the PolyAct model, and
    prove the golden model, the RTL simulation and the HLS C simulation bit-exact; the
    performance model's estimate beside the simulation (and, with --synth, beside yosys'
    and nextpnr's resources and Fmax; with --sweep, a small accuracy/latency front)."""
    _choice(simulator, SIMULATORS, "simulator")
    d = data.digits()
    models, accs = {}, {}
    for act in ("relu", "poly"):
        torch.manual_seed(seed)
        models[act] = zoo.mlp(act=act)
        t0 = time.perf_counter()
        accs[act] = fit(models[act], d, epochs=epochs, seed=seed)
        console.print(
            f"trained MLP with {act} (4-bit weights, 8-bit activations) in "
            f"{time.perf_counter() - t0:.1f} s: test accuracy {accs[act]:.2f}%"
        )
    x = d.x_test
    rows = []
    graphs = {act: lower(m, x[:1]) for act, m in models.items()}
    bad = {act: check_exact(models[act], g, x) for act, g in graphs.items()}
    for act in graphs:
        rows.append((f"golden vs Brevitas ({act})", _mismatch(bad[act])))
    g = graphs["poly"]
    ok = not any(bad.values())
    with atomic_dir(out) as tmp:
        (tmp / "graph.md").write_text(graph_table(g))
        t0 = time.perf_counter()
        h = hls.generate(g, tmp / "hls")
        hls_bad = int(np.count_nonzero(h.predict(x.numpy()) != g.run(x.numpy())))
        rows.append(
            (
                "HLS C simulation vs golden",
                f"{_mismatch(hls_bad)}; {time.perf_counter() - t0:.1f} s",
            )
        )
        design = rtl.generate(g, tmp / "rtl")
        r = rtl_sim.simulate(design, x.numpy(), simulator=simulator)
        shutil.rmtree(Path(design.path) / "sim_build", ignore_errors=True)
        line, sim_ok = _sim_line(r, design.manifest)
        rows.append((f"RTL simulation ({simulator}) vs golden", line))
        e = perfmodel.estimate(g, "ecp5-85f")
        same = (e.latency, e.interval) == (r.latency, r.interval)
        rows.append(("estimate (ecp5-85f) vs simulation", _estimate_line(e, r, same)))
        (tmp / "estimate.json").write_text(e.to_json())
        if synth:
            s = fpga.synthesize(design, e.device)
            rows.append((f"synthesis ({s.device}) vs estimate", _synth_line(s, e)))
            s.write(tmp / "synth.json")
        front = _demo_sweep(tmp / "sweep", seed, min(epochs, 10)) if sweep else None
        if front is not None:
            rows.append(front[:2])
        ok = ok and hls_bad == 0 and sim_ok and same and (front is None or front[2])
    console.print(_agreement(rows, len(x)))
    console.print(
        f"wrote {out / 'graph.md'}, the RTL {out / 'rtl'} and the hls4ml project {out / 'hls'}"
        + (f" and {out / 'synth.json'}" if synth else "")
        + (f"; the sweep in {out / 'sweep'}" if sweep else "")
    )
    if not ok:
        raise typer.Exit(1)


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="package.module:factory")] = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("out/train/model.pt"),
    epochs: Annotated[int, typer.Option(help="training epochs")] = 30,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    act: Annotated[str | None, typer.Option(help="activation: relu, poly or gate")] = None,
    device: Annotated[
        str, typer.Option(help="the device the budgets and the cost are for")
    ] = "ecp5-85f",
    latency_budget: Annotated[
        str | None,
        typer.Option(help="latency to meet: a time (2us, 500ns) at --freq, or cycles (400cycles)"),
    ] = None,
    lut_budget: Annotated[int | None, typer.Option(help="LUTs the design may use")] = None,
    cost_weight: Annotated[
        float | None,
        typer.Option(help="weight of the latency (relative to the first step's) in the loss"),
    ] = None,
    lut_weight: Annotated[
        float | None,
        typer.Option(
            help="with --latency-budget: weight of the LUTs in the loss (1: the range the "
            "gates move them in weighs one unit of the task loss)"
        ),
    ] = None,
    freq: Annotated[float, typer.Option(help="clock in MHz a latency time is read at")] = 100.0,
    secure_weight: Annotated[
        float | None,
        typer.Option(
            help="weight of two-party secure inference's online bytes in the loss (1: the "
            "range the gates move them in weighs one unit of the task loss)"
        ),
    ] = None,
    round_bytes: Annotated[
        float,
        typer.Option(
            help="with --secure-weight: bytes one online round is worth (the link's "
            "bandwidth x round trip); the cost is bytes + this x rounds"
        ),
    ] = 0.0,
    density: Annotated[
        float | None,
        typer.Option(
            help="keep this fraction of each QuantLinear's and QuantConv2d's weight blocks (P "
            "outputs by one input, P its parallelism in the design): the blocks skip the rest"
        ),
    ] = None,
    sparse: Annotated[
        str | None,
        typer.Option(help="with --density: magnitude, rigl (the default) or dst-ee"),
    ] = None,
) -> None:
    """Train a model on the digits data set (a transformer: on ListOps, see
    `_train_sequences`) and save its state_dict. With a budget, the
    hardware cost joins the loss (its GateActs learn the cheaper choice where the budget
    needs it), each layer's parallelism is allocated to meet the budget, and the design is
    estimated and simulated. With --density, the first third of the epochs train dense,
    then the smallest weight blocks are masked and the mask moves by --sparse. Hardened
    GateActs are fine-tuned for a third as many epochs again, each now one activation."""
    goal = _goal(latency_budget, lut_budget, cost_weight, freq, lut_weight)
    if secure_weight is not None and not secure_weight > 0:
        raise CosynError(f"--secure-weight {secure_weight}: give a positive weight")
    if round_bytes and (secure_weight is None or not round_bytes > 0):
        raise CosynError(
            f"--round-bytes {round_bytes}: give a positive number, with --secure-weight"
        )
    if density is not None and not 0 < density <= 1:
        raise CosynError(f"--density {density}: give the fraction of weights kept, in (0, 1]")
    if sparse is not None and (density is None or sparse not in SPARSE):
        raise CosynError(f"--sparse {sparse!r}: choose one of {', '.join(SPARSE)}, with --density")
    torch.manual_seed(seed)  # the initial weights too: a seed makes the training repeatable
    net = load_model(model, **_act_option(act))
    if isinstance(net, Transformer):
        options = {"--latency-budget": latency_budget, "--lut-budget": lut_budget,
                   "--cost-weight": cost_weight, "--secure-weight": secure_weight,
                   "--density": density}  # fmt: skip
        given = [k for k, v in options.items() if v is not None]
        if given:
            raise CosynError(
                f"{model}: {given[0]} needs the design's estimate, which a transformer does "
                "not have yet (its encoder has no RTL top level); train it without"
            )
        _train_sequences(net, out, epochs, seed)
        return
    d = data.digits(image=_is_image(net))
    x0 = d.x_test[:1]
    penalty = extra = None
    if goal is not None:
        # a copy lowers as the model will; the model itself trains as it would without
        # a budget, but for the cost in its loss
        probe = take_statistics(copy.deepcopy(net), d.x_train[:256])
        alloc = _allocate(probe, x0, device, goal)  # refuses an unreachable budget now
        if gates(net):
            penalty = extra = _penalty(probe, x0, device, goal, alloc)
            if goal.lut_weight is not None:
                # LUTs at the budget's parallelism over the gates' choices, 0 at the cheapest
                luts = SpanWeight(x0, device, "lut", goal.lut_weight, alloc.parallelism)
                extra = _plus(penalty, luts.measure(probe))
        else:
            console.print("no GateAct: nothing in the model moves its hardware cost, so "
                          "the budget sets the parallelism; the loss is the task's")  # fmt: skip
    if secure_weight is not None:
        mix = {"secure_bytes": 1.0, "secure_rounds": round_bytes}
        extra = _plus(extra, SpanWeight(x0, device, mix, secure_weight))
    masks = on_epoch = None
    if density is not None:
        budget = alloc if goal is not None else None
        masks = _masks(net, x0, density, sparse or "rigl", epochs, len(d.x_train), budget,
                       device)  # fmt: skip
        on_epoch = _pruning(masks, epochs // 3, net, x0, device, budget)
    acc = fit(net, d, epochs=epochs, seed=seed, extra_loss=extra, on_epoch=on_epoch,
              on_step=None if masks is None else masks.step)  # fmt: skip
    if masks is not None:
        console.print(f"weights zero in the masked layers: {masks.sparsity():.1%}")
    if isinstance(penalty, BudgetPenalty) and penalty.history:
        costs, lams = zip(*penalty.history, strict=True)
        console.print(
            f"{penalty.metric} in training: {costs[0]:,.1f} expected at the first step, "
            f"{costs[-1]:,.1f} at the last (limit {penalty.limit:,.0f}); Lagrange multiplier "
            f"at most {max(lams):.3g}, {lams[-1]:.3g} at the end"
        )
    within = penalty.harden if isinstance(penalty, BudgetPenalty) else harden
    if choices := within(net):  # GateActs keep the activation they learned to prefer
        acc = accuracy(net, d.x_test, d.y_test)
        console.print("activation per gate: " + ", ".join(f"{k} {v}" for k, v in choices.items()))
        if tune := epochs // FINETUNE:  # trained as a mix of both, tuned to the one it keeps
            hard = acc
            acc = fit(net, d, epochs=tune, lr=FINETUNE_LR, seed=seed,
                      on_step=None if masks is None else masks.step)  # fmt: skip
            console.print(f"test accuracy {hard:.2f}% hardened, {acc:.2f}% fine-tuned for "
                          f"{tune} epoch{'s' * (tune > 1)}")  # fmt: skip
    _save(net, out)
    console.print(f"test accuracy {acc:.2f}%; wrote {out}")
    if secure_weight is not None:
        from cosyn.perfmodel.secure import secure_metrics

        m = secure_metrics(lower(net.eval(), x0))
        console.print(
            f"two-party secure inference (perfmodel.secure): {m['secure_bytes']:,.0f} bytes "
            f"online, {m['secure_rounds']:.0f} rounds, {m['secure_offline_bytes']:,.0f} bytes "
            "preprocessing"
        )
    if goal is not None:
        _report_budget(net, d, device, goal, out, {"accuracy": acc, "choices": choices})


def _save(net: nn.Module, out: Path) -> None:
    """The state_dict at `out`, written whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.rename(out)


def _train_sequences(net: Transformer, out: Path, epochs: int, seed: int) -> None:
    """`cosyn train` of a transformer: ListOps (generated, seeded) of lengths the model
    takes, at most 64 tokens, each sequence at its own length; then its integer graph
    is checked against it on test sequences, bit for bit."""
    longest = min(64, net.max_len - 1)
    d = data.listops(min_len=max(1, longest // 4), max_len=longest, seed=seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a sequence's tensors are small: threads cost more than they save
    try:
        acc = fit_sequences(net, d, epochs=epochs, lr=1e-2, seed=seed)
    finally:
        torch.set_num_threads(threads)
    _save(net, out)
    lengths = [len(x) for x in d.x_train]
    console.print(
        f"ListOps of {min(lengths)}-{max(lengths)} tokens: test accuracy {acc:.2f}% "
        f"(majority class {majority(d):.2f}%); wrote {out}"
    )
    xs = d.x_test[:32]
    g = lower(net.eval(), xs[0])
    with torch.no_grad():
        same = np.array_equal(g.run([x.numpy() for x in xs]), net(xs).numpy())
    console.print(
        f"integer graph vs model on {len(xs)} test sequences: "
        + ("bit-exact" if same else "MISMATCH (a bug: please report it)")
    )


@dataclasses.dataclass(frozen=True)
class _Goal:
    """What `cosyn train` holds the hardware to: a latency (cycles), a LUT count, or a
    weight on the latency in the loss; `freq` MHz reads cycles as time."""

    latency: int | None
    lut: int | None
    weight: float | None
    freq: float
    lut_weight: float | None = None

    def describe(self) -> str:
        if self.latency is not None:
            luts = "" if self.lut_weight is None else f", LUTs weighted {self.lut_weight:g}"
            return f"latency {self.latency:,} cycles ({self.latency / self.freq:.2f} us){luts}"
        if self.lut is not None:
            return f"{self.lut:,} LUT"
        return f"latency weighted {self.weight}"


def _goal(
    latency: str | None,
    lut: int | None,
    weight: float | None,
    freq: float,
    lut_weight: float | None = None,
) -> _Goal | None:
    given = [o for o, v in (("--latency-budget", latency), ("--lut-budget", lut),
                            ("--cost-weight", weight)) if v is not None]  # fmt: skip
    if lut_weight is not None and (latency is None or not lut_weight > 0):
        raise CosynError(
            f"--lut-weight {lut_weight}: give a positive weight, with a --latency-budget"
        )
    if not given:
        return None
    if len(given) > 1:
        raise CosynError(f"{' and '.join(given)}: give one budget or weight")
    if not freq > 0:
        raise CosynError(f"--freq {freq}: give the clock in MHz, above 0")
    if lut is not None and lut < 1:
        raise CosynError(f"--lut-budget {lut}: give a positive number of LUTs")
    if weight is not None and not weight > 0:
        raise CosynError(f"--cost-weight {weight}: give a positive weight")
    cycles = None if latency is None else _cycles(latency, freq)
    return _Goal(cycles, lut, weight, freq, lut_weight)


_UNITS = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}  # in microseconds


def _cycles(text: str, freq: float) -> int:
    """A latency budget in cycles: `400cycles`, or a time (`2us`, `1.5ms`) at `freq` MHz."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|ms|us|ns|cycles?)\s*", text)
    if m is None:
        raise CosynError(
            f"--latency-budget {text!r}: give a time (2us, 500ns, 1ms) or cycles (400cycles)"
        )
    value, unit = float(m[1]), m[2]
    exact = value if unit.startswith("cycle") else value * _UNITS[unit] * freq
    cycles = int(exact + 1e-9)  # 2.3us at 100 MHz is 230 cycles, not 229.99999999999997
    if cycles < 1:
        raise CosynError(f"--latency-budget {text!r}: under one cycle at {freq:g} MHz")
    return cycles


def _relu_graph(net: nn.Module, x0: torch.Tensor) -> Graph:
    """The graph of `net` with every undecided GateAct as ReLU (only hardened gates lower)."""
    hard = copy.deepcopy(net).eval()
    for g in gates(hard).values():
        if g.choice is None:
            g.harden("relu")
    return lower(hard, x0)


def _masks(net: nn.Module, x0: torch.Tensor, density: float, method: str, epochs: int,
           n_train: int, alloc, device: str) -> Masks:  # fmt: skip
    """Block masks for `cosyn train --density`: each masked layer's blocks span its node's
    parallelism (the allocation's for a budget, else the default design's on `device`);
    drop and grow (`method`) from the pruning, a third into training, to three quarters."""
    if alloc is not None:
        par = alloc.parallelism
    else:
        e = perfmodel.estimate(lower(net.eval(), x0), device)
        par = {n.name: n.parallelism for n in e.nodes}
    block = {}
    for name, m in Masks.masked(net).items():
        kind = "conv2d" if isinstance(m, nn.Conv2d) else "dense"
        node = node_name(name, kind)
        if node not in par:
            raise CosynError(f"layer {name}: no {kind} node {node} in the graph to mask for")
        block[name] = parallelism_pair(par[node])[0]  # its lanes (a SIMD block skips none)
    steps = epochs * -(-n_train // 64)
    return Masks(net, density, block, stop=steps * 3 // 4, **SPARSE[method])


def _pruning(masks: Masks, epoch: int, net: nn.Module, x0: torch.Tensor, device: str, alloc):
    """`fit`'s on_epoch for `cosyn train --density`: prune at `epoch`; under a budget, the
    cost's table estimated again, as a dense block's cycles follow its zero weights."""

    def on_epoch(e: int) -> None:
        if e == epoch:
            masks.prune()
            if alloc is not None and gates(net):
                perfmodel.cost(net, x0, device, "latency", alloc.parallelism, refresh=True)

    return on_epoch


def _allocate(net: nn.Module, x0: torch.Tensor, device: str, goal: _Goal):
    """Each layer's parallelism for the goal, for `net` as it is (undecided gates as ReLU):
    the fewest resources within the latency, the fastest within the LUTs, or the fastest
    on the device for a weight. CosynError where the goal cannot be reached."""
    g = _relu_graph(net, x0)
    if goal.latency is not None:
        return allocate(g, device, target_latency=goal.latency)
    return allocate(g, device, budget={"lut": goal.lut} if goal.lut is not None else None)


def _penalty(net: nn.Module, x0: torch.Tensor, device: str, goal: _Goal, a) -> object:
    """The loss term: a budget held by its Lagrange multiplier, or the weighted latency
    (a sample's first input to its last output: the estimate's `completion`)."""
    if goal.weight is None:
        metric, limit = ("completion", goal.latency) if goal.latency else ("lut", goal.lut)
        return BudgetPenalty(x0, device, metric, limit, a.parallelism)
    first = float(perfmodel.cost(net, x0, device, "completion", a.parallelism))
    weight, par = goal.weight, a.parallelism
    return lambda m: weight * perfmodel.cost(m, x0, device, "completion", par) / first


def _plus(term, more) -> object:
    """The loss term `term` (None: none) plus `more`."""
    if term is None:
        return more
    return lambda m: term(m) + more(m)


def _report_budget(
    net: nn.Module, d: data.Dataset, device: str, goal: _Goal, out: Path, trained: dict
) -> None:
    """Allocate the trained model for the goal, estimate it, simulate 8 test vectors on
    Icarus, print the figures and write them (with `trained`: its accuracy and gates) to
    train.json beside the checkpoint."""
    x0 = d.x_test[:1]
    try:
        a = _allocate(net, x0, device, goal)
    except CosynError as e:
        raise CosynError(f"{out}: the trained model misses the budget: {e}") from None
    g = lower(net.eval(), x0)
    with tempfile.TemporaryDirectory() as tmp:
        design = rtl.generate(g, Path(tmp) / "rtl", parallelism=a.parallelism)
        r = rtl_sim.simulate(design, d.x_test[:8].numpy(), simulator="icarus")
    e = a.estimate
    t = Table(title=f"{Path(out).name} on {e.device}, budget: {goal.describe()}")
    for c in ("", "latency", "whole answer", "interval", "LUT", "FF", "DSP", "BRAM", "Fmax MHz"):
        t.add_column(c, justify="left" if not c else "right")
    t.add_row("estimate", f"{e.latency:,}", f"{e.completion:,}", f"{e.interval:,}",
              f"{e.lut:,.0f}", f"{e.ff:,.0f}", str(e.dsp), str(e.bram),
              f"{e.fmax_mhz:.0f}")  # fmt: skip
    t.add_row("simulation (icarus, 8 vectors)", f"{r.latency:,}", f"{r.completion:,}",
              f"{r.interval:,}", "", "", "", "", "")  # fmt: skip
    t.caption = "cycles; latency: to a sample's first output, whole answer: to its last"
    console.print(t)
    console.print(a.table())
    timing = ("latency", "completion", "interval")
    exact = r.mismatches == 0 and all(getattr(r, k) == getattr(e, k) for k in timing)
    sim = {"simulator": "icarus", "vectors": r.vectors, **{k: getattr(r, k) for k in timing},
           "mismatches": r.mismatches}  # fmt: skip
    report = {**trained, "budget": dataclasses.asdict(goal), "device": e.device,
              "allocation": json.loads(a.to_json()), "simulation": sim}  # fmt: skip
    path = write_text(out.parent / "train.json", json.dumps(report, indent=2) + "\n")
    console.print(
        f"{'bit-exact' if r.mismatches == 0 else f'{r.mismatches} MISMATCHES'}, simulated "
        f"whole answer in {r.completion:,} cycles = {r.completion / goal.freq:.2f} us at "
        f"{goal.freq:g} MHz; wrote {path}"
    )
    if not exact:
        raise typer.Exit(1)


@app.command()
def sweep(
    budgets: Annotated[
        str, typer.Option(help="latency budgets, comma-separated: 4us,8us or 400cycles,...")
    ],
    model: Annotated[str, typer.Argument(help="package.module:factory")] = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option(help="folder of the points, table and plot")] = Path(
        "out/sweep"
    ),
    device: Annotated[str, typer.Option(help="the device the budgets are for")] = "ecp5-85f",
    seeds: Annotated[str, typer.Option(help="seeds, comma-separated")] = "0",
    epochs: Annotated[int, typer.Option(help="training epochs per point")] = 30,
    freq: Annotated[float, typer.Option(help="clock in MHz a latency time is read at")] = 100.0,
    address: Annotated[
        str | None, typer.Option(help="an existing Ray cluster (host:port); default: a local one")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="CPUs of the local Ray instance (default: all)")
    ] = None,
    lut_weight: Annotated[
        float | None, typer.Option(help="weight of the LUTs in each training's loss")
    ] = None,
    acts: Annotated[
        str,
        typer.Option(
            help="activations to train each point with, comma-separated: gate, relu, poly"
        ),
    ] = "gate",
) -> None:
    """Train MODEL (with GateActs, or each activation of --acts) under each latency budget
    and seed (`cosyn train --latency-budget`) as Ray tasks; print the points with their
    accuracy/latency front and write OUT/sweep.json and OUT/front.png. Points kept in
    OUT/points from an earlier run are not trained again."""
    names = [b.strip() for b in budgets.split(",") if b.strip()]
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        raise CosynError(f"--seeds {seeds!r}: give whole numbers, comma-separated") from None
    if not names:
        raise CosynError("--budgets: give at least one latency budget (4us, 400cycles)")
    if workers is not None and workers < 1:
        raise CosynError(f"--workers {workers}: give 1 or more")
    act_list = [_choice(a.strip(), zoo.ACTS, "--acts") for a in acts.split(",")]
    net = load_model(model, act="gate")
    d = data.digits(image=_is_image(net))
    take_statistics(net, d.x_train[:256])  # as `cosyn train` does for its allocation
    for b in names:  # refused now, not in a task minutes later
        try:
            _allocate(net, d.x_test[:1], device, _goal(b, None, None, freq, lut_weight))
        except CosynError as e:
            raise CosynError(f"--budgets {b}: {e}") from None
    s = sweeps.sweep(model, names, out, device, seed_list, epochs, freq, address, workers,
                     lut_weight=lut_weight, acts=act_list)  # fmt: skip
    _print_sweep(s)
    console.print(f"wrote {out / 'sweep.json'} and {out / 'front.png'}")
    if s.failed:
        raise typer.Exit(1)


def _act_option(act: str | None) -> dict[str, str]:
    return {"act": _choice(act, zoo.ACTS, "activation")} if act is not None else {}


def _load_graph(
    model: str, checkpoint: Path | None, input_shape: str | None, act: str | None
) -> tuple[Graph, nn.Module | None, tuple[int, ...]]:
    """The graph of a factory (with its Brevitas model) or of a QONNX file (no model), and
    the model's own per-sample input shape: (C, L) for a 1-D model, whose graph takes
    (C, 1, L)."""
    if model.endswith(".onnx"):
        shape = qonnx_input_shape(model)
        if input_shape and parse_shape(input_shape) != shape:
            raise CosynError(f"{model}: the file's input shape is {shape}, not {input_shape}")
        return from_qonnx(model), None, shape
    net = load_model(model, checkpoint, **_act_option(act))
    shape = parse_shape(input_shape) if input_shape else (1, 8, 8) if _is_image(net) else (64,)
    return lower(net, torch.zeros((1, *shape))), net, shape


@app.command()
def build(
    model: Annotated[str, typer.Argument(help="package.module:factory or a QONNX .onnx file")],
    checkpoint: Annotated[Path | None, typer.Option(help="state_dict to load")] = None,
    act: Annotated[str | None, typer.Option(help="activation: relu, poly or gate")] = None,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out/build"),
    input_shape: Annotated[
        str | None, typer.Option(help="shape of one sample, e.g. 64 or 1,8,8 (default: digits)")
    ] = None,
    backend: Annotated[str, typer.Option(help="hardware to write: hls, rtl or both")] = "both",
    board: Annotated[str | None, typer.Option(help="board preset, e.g. pynq-z2")] = None,
    part: Annotated[str | None, typer.Option(help="FPGA part (default xc7z020clg400-1)")] = None,
    parallelism: Annotated[str | None, typer.Option(help=PARALLELISM_HELP)] = None,
    device: Annotated[
        str, typer.Option(help="the device the RTL's parallelism is allocated for")
    ] = "ecp5-85f",
    check: Annotated[
        int, typer.Option(help="with both backends: vectors to check across all four models")
    ] = 32,
) -> None:
    """Lower a model to the integer graph and write the hardware: `hls/` (an hls4ml project),
    `rtl/` (Verilog and manifest) and `tb/` (a standalone cocotb testbench on the test set),
    with `build.json` (the model it was built from, for `cosyn schedule --design`)."""
    _choice(backend, BACKENDS, "backend")
    par = _parallelism(parallelism)
    perfmodel.device(device)  # an unknown one lists the known ones
    g, net, shape = _load_graph(model, checkpoint, input_shape, act)
    x = reference_vectors(g)
    with atomic_dir(out) as tmp:
        (tmp / "graph.md").write_text(graph_table(g))
        built = {"model": model, "checkpoint": str(checkpoint.resolve()) if checkpoint else None,
                 "act": act, "input_shape": input_shape}  # fmt: skip
        (tmp / "build.json").write_text(json.dumps(built, indent=1) + "\n")
        h = design = None
        if backend in ("hls", "both"):
            h = hls.generate(g, tmp / "hls", part=part, board=board)
        if backend in ("rtl", "both"):
            design = rtl.generate(g, tmp / "rtl", par, device)
            rtl_sim.write_testbench(design, tmp / "tb", x)
        if h is not None and design is not None and check > 0:
            _check_all(g, (net, shape), h, design, x[:check])
    wrote = {"hls": "the hls4ml project hls/", "rtl": "rtl/ and tb/", "both": "hls/, rtl/ and tb/"}
    console.print(
        f"lowered {model}: {len(g)} nodes, {g.macs} MACs per sample; wrote graph.md and "
        f"{wrote[backend]} in {out}"
    )


def _check_all(
    g: Graph,
    model: tuple[nn.Module | None, tuple[int, ...]],
    h: hls.HLSProject,
    design: rtl.Design,
    x: np.ndarray,
) -> None:
    """Brevitas (the model and its per-sample input shape: `x`, in the graph's shape, is
    reshaped to it), the golden model, the RTL simulation (Icarus) and the HLS C simulation
    on the same vectors; raises CosynError when any of them disagrees."""
    golden = g.run(x)
    bad = {"HLS C simulation vs golden": int(np.count_nonzero(h.predict(x) != golden))}
    net, shape = model
    if net is not None:
        brevitas = predict(net, torch.from_numpy(x.reshape(len(x), *shape))).numpy()
        brevitas = brevitas.reshape(golden.shape)
        bad["Brevitas vs golden"] = int(np.count_nonzero(brevitas != golden))
    rows = [(check, _mismatch(n)) for check, n in bad.items()]
    line, sim_ok = _simulate(design, x, "icarus")
    rows.append(("RTL simulation (icarus) vs golden", line))
    console.print(_agreement(rows, len(x)))
    if not sim_ok or any(bad.values()):
        raise CosynError("the backends disagree with the golden model; see the table above")


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="package.module:factory or a QONNX .onnx file")],
    device: Annotated[str, typer.Option(help="target device, e.g. ecp5-85f or xc7z020")] = (
        "ecp5-85f"
    ),
    checkpoint: Annotated[Path | None, typer.Option(help="state_dict to load")] = None,
    act: Annotated[str | None, typer.Option(help="activation: relu, poly or gate")] = None,
    input_shape: Annotated[
        str | None, typer.Option(help="shape of one sample, e.g. 64 or 1,8,8 (default: digits)")
    ] = None,
    parallelism: Annotated[str | None, typer.Option(help=PARALLELISM_HELP)] = None,
    target_interval: Annotated[
        int | None, typer.Option(help="allocate for the fewest resources at this interval")
    ] = None,
    budget: Annotated[
        float | None, typer.Option(help="allocate within this fraction of the device")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the estimate")] = None,
    plot: Annotated[Path | None, typer.Option(help="write a per-node bar chart (PNG)")] = None,
) -> None:
    """Estimate the RTL of a model on a device without building it: latency and interval in
    cycles (exact), LUT, FF, DSP, BRAM and Fmax, per node and for the design."""
    dev = perfmodel.device(device)
    par = _parallelism(parallelism)
    goal = target_interval is not None or budget is not None
    if goal and par not in (None, "auto"):
        raise CosynError("--target-interval and --budget go with --parallelism auto")
    g, _, _ = _load_graph(model, checkpoint, input_shape, act)
    t0 = time.perf_counter()
    if goal:
        a = allocate(g, dev, target_interval, budget)
        e, what = a.estimate, "allocated and estimated"
        console.print(a.table())
    else:
        e, what = perfmodel.estimate(g, dev, par), "estimated"
    ms = (time.perf_counter() - t0) * 1e3
    console.print(e.table())
    console.print(f"{what} in {ms:.0f} ms")
    if json_out is not None:
        write_text(json_out, e.to_json())
        console.print(f"wrote {json_out}")
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"wrote {e.plot(plot)}")


@app.command()
def schedule(
    model: Annotated[
        str | None,
        typer.Argument(
            help="package.module:factory of a transformer (cosyn.models.zoo:transformer)"
        ),
    ] = None,
    design: Annotated[
        Path | None,
        typer.Option(help="a folder `cosyn build` wrote: its model at its rtl/'s parallelism"),
    ] = None,
    lengths: Annotated[
        str,
        typer.Option(
            help="the stream: 'stdlib' (the standard library's docstrings, shuffled by "
            "--seed) or a text file of token counts, one a sequence"
        ),
    ] = "stdlib",
    checkpoint: Annotated[Path | None, typer.Option(help="state_dict to load")] = None,
    pattern: Annotated[
        str | None, typer.Option(help="the factory's attention: dense, window or topk")
    ] = None,
    max_len: Annotated[
        int | None, typer.Option(help="the factory's max_len: tokens a sequence, CLS included")
    ] = None,
    batch: Annotated[int, typer.Option(help="padded batching: sequences a batch")] = 8,
    window: Annotated[int, typer.Option(help="length-aware: sequences it chooses among")] = 32,
    seed: Annotated[int, typer.Option(help="order of the stdlib stream")] = 0,
    freq: Annotated[float, typer.Option(help="clock in MHz for sequences/s")] = 100.0,
    plot: Annotated[Path, typer.Option(help="timeline of the stages (PNG)")] = Path(
        "out/schedule/timeline.png"
    ),
) -> None:
    """Schedule a stream of variable-length sequences through a transformer's layer
    pipeline: padded batches, first come first served, and the length-aware order side by
    side (throughput, latency, utilization), and a timeline of the stages."""
    stream = stdlib_lengths(seed) if lengths == "stdlib" else _read_lengths(Path(lengths))
    options = {k: v for k, v in (("pattern", pattern), ("max_len", max_len)) if v is not None}
    if design is not None:
        if model is not None or checkpoint is not None or options:
            raise CosynError(f"{design}: --design brings its own model; give no MODEL, "
                             "--checkpoint, --pattern or --max-len with it")  # fmt: skip
        target = _built_design(design)
    else:
        model = model or "cosyn.models.zoo:transformer"
        net = load_model(model, checkpoint, **options)
        if not isinstance(net, Transformer):
            raise CosynError(f"{model}: it makes a {type(net).__name__}; the scheduler takes a "
                             "transformer (cosyn.models.zoo:transformer)")  # fmt: skip
        target = lower(net, None)
    runs = compare(stream, target, batch, window)
    console.print(schedule_table(runs, freq))
    for i, _, why in runs["fcfs"].rejected[:10]:
        console.print(f"sequence {i} rejected: {why}")
    if len(runs["fcfs"].rejected) > 10:
        console.print(f"... {len(runs['fcfs'].rejected)} sequences rejected in all")
    plot.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"wrote {plot_timeline(runs, plot)}")


def _require(folder: Path, *files: str) -> None:
    """Refuse a folder that lacks one of the `files` `cosyn build` writes."""
    for sub in files:
        if not (folder / sub).is_file():
            raise CosynError(f"{folder / sub}: not found; write the folder with `cosyn build`")


def _built_design(folder: Path) -> rtl.Design:
    """The sequence design `cosyn build` wrote in `folder`, with the graph of the model it
    was built from (build.json)."""
    _require(folder, "build.json", "rtl/manifest.json")
    b = json.loads((folder / "build.json").read_text())
    manifest = json.loads((folder / "rtl/manifest.json").read_text())
    if not manifest.get("sequence"):
        raise CosynError(f"{folder}: not a transformer's design; the scheduler takes one")
    ckpt = Path(b["checkpoint"]) if b.get("checkpoint") else None
    g, _, _ = _load_graph(b["model"], ckpt, b.get("input_shape"), b.get("act"))
    return rtl.Design(folder / "rtl", manifest, g)


def _read_lengths(path: Path) -> np.ndarray:
    try:
        words = path.read_text().split()
    except OSError as e:
        raise CosynError(f"{path}: cannot read the lengths ({e.strerror})") from e
    try:
        return np.asarray([int(w) for w in words], dtype=np.int64)
    except ValueError as e:
        raise CosynError(f"{path}: {e}; give one integer token count a sequence") from e


@app.command("sim")
def sim_cmd(
    folder: Annotated[Path, typer.Argument(help="a folder written by `cosyn build` (rtl/, tb/)")],
    simulator: Annotated[str, typer.Option(help="icarus or verilator")] = "verilator",
    vectors: Annotated[int | None, typer.Option(help="vectors to run (default: all)")] = None,
) -> None:
    """Run the testbench in FOLDER/tb on FOLDER/rtl: every output checked against the golden
    model, with random back-pressure; prints vectors, mismatches, latency and interval."""
    _choice(simulator, SIMULATORS, "simulator")
    _require(folder, "rtl/top.v", "rtl/manifest.json", "tb/tb.json")
    manifest = json.loads((folder / "rtl/manifest.json").read_text())
    r = rtl_sim.run_testbench(folder / "tb", folder / "rtl", simulator, vectors=vectors)
    line, ok = _sim_line(r, manifest)
    console.print(f"{simulator}: {line}")
    if not ok:
        raise typer.Exit(1)


@app.command()
def synth(
    folder: Annotated[
        Path, typer.Argument(help="a folder written by `cosyn build` (rtl/top.v), or top.v's")
    ],
    device: Annotated[
        str | None, typer.Option(help="device, e.g. ecp5-85f (default), ice40-up5k, xc7z020")
    ] = None,
    board: Annotated[
        str | None, typer.Option(help=f"also write a bitstream for: {', '.join(fpga.BOARDS)}")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="JSON report (default: FOLDER/synth_DEVICE.json)")
    ] = None,
    freq: Annotated[
        float | None,
        typer.Option(help="MHz: nextpnr's target; with --board, the design's clock (PLL)"),
    ] = None,
    baud: Annotated[int, typer.Option(help="with --board: the UART's baud rate")] = (
        fpga.DEFAULT_BAUD
    ),
    self_check: Annotated[
        bool, typer.Option(help="with --board: test vectors from a ROM instead of the UART")
    ] = False,
    cache: Annotated[bool, typer.Option(help="reuse the result of the same design")] = True,
) -> None:
    """Synthesize FOLDER's Verilog with yosys and, on ECP5 and iCE40, place and route it with
    nextpnr: LUT, FF, DSP and BRAM against the device, Fmax, the critical path and the
    throughput at Fmax; writes the JSON report. A design that does not fit exits 2.

    With --board, the design runs behind a UART stream bridge (samples in and results out
    over the board's USB serial port; see the README for the byte framing) at the clock a
    PLL makes from the board's oscillator; writes the bitstream (.bit for ECP5, .bin for
    iCE40) beside the report. --self-check builds, instead, a wrapper that streams
    FOLDER/tb's vectors through the design and lights LED 0 when every output is right."""
    if board is not None:
        _synth_board(folder, board, device, out, freq, baud, self_check)
        return
    r = fpga.synthesize(folder, device or "ecp5-85f", cache=cache, freq_mhz=freq)
    console.print(r.table())
    if r.inferences_per_s is not None:
        console.print(
            f"throughput at Fmax: {r.fmax_mhz:.1f} MHz / interval {r.interval} cycles = "
            f"{r.inferences_per_s:,.0f} inferences/s"
        )
    console.print(f"wrote {r.write(out or _synth_report_path(folder, r.device))}")
    r.check_fits()


def _synth_report_path(folder: Path, name: str) -> Path:
    """FOLDER/synth_NAME.json, or beside the file when FOLDER is a Verilog file."""
    return (folder if folder.is_dir() else folder.parent) / f"synth_{name}.json"


def _synth_board(
    folder: Path,
    board: str,
    device: str | None,
    out: Path | None,
    freq: float | None,
    baud: int,
    self_check: bool,
) -> None:
    """`cosyn synth --board`: the bitstream beside the report (same name, .bit or .bin)."""
    b = fpga.board(board)
    if device is not None and device.lower() != b.device:
        raise CosynError(f"--device {device} is not the {b.device} on {b.name}; give one of them")
    report = out or _synth_report_path(folder, b.name)
    bit = report.with_suffix(fpga.bitstream_suffix(b))
    try:
        built = fpga.bitstream(folder, b, bit, freq_mhz=freq, baud=baud, self_check=self_check)
    except fpga.TimingError as e:  # what the long run found, before the one-line error
        console.print(e.result.table())
        raise
    console.print(built.synth.table())
    rate = f"{built.inferences_per_s or 0:,.0f} inferences/s (interval {built.synth.interval})"
    if built.baud is not None:
        how = f"UART at {built.baud:,.0f} baud (asked {baud:,})"
    else:
        how = f"self-check with {built.vectors} test vectors in the ROM"
    console.print(f"on {b.name} at {built.clock_mhz:g} MHz (PLL): {rate}; {how}")
    console.print(f"wrote {built.path} and {built.write(report)}")


def main() -> None:
    """Entry point: a CosynError becomes one line on stderr and exit status 2."""
    try:
        app()
    except CosynError as e:
        print(f"cosyn: error: {e}", file=sys.stderr)
        sys.exit(2)
