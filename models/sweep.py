"""`sweep`: one model trained per latency budget (and seed) as Ray tasks, and their front.

Each point is `cosyn train MODEL --act A --latency-budget B --seed S` (A `gate` by
default, with `--lut-weight W` where given: the LUTs priced within the budget; the
hardware cost in the loss, the gates hardened within the budget and fine-tuned; `relu`:
the model as it is, trained as without a budget; either way the parallelism allocated
for the budget and the design simulated on Icarus: `train.json`). A point runs as a Ray
task in its own process: on a local Ray instance by default (`workers` CPUs), or on an
existing cluster at `address` whose nodes have cosyn installed. The task sends the
checkpoint and the report back, so the driver keeps every point under
`out/points/<budget>-seed<S>/`, each written whole when it finishes
(`<budget>-<A>-seed<S>` where A is not `gate`): a sweep that is interrupted and run
again trains only the points it has not kept.

The front: the points no other point dominates (at least as accurate, at most as slow
to the whole answer, at most as many LUTs, and better in one of them).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.progress import Progress
from rich.table import Table

from cosyn.errors import CosynError
from cosyn.report import atomic_dir, save_png, write_text

__all__ = ["Point", "Sweep", "dominates", "front", "sweep"]


@dataclass(frozen=True)
class Point:
    """One trained model: its budget and seed, test accuracy (%), simulated cycles to the
    whole answer (`completion`) and interval, estimated LUTs, multipliers, gate choices,
    and the activation it was trained with (`cosyn train --act`)."""

    budget: str
    seed: int
    accuracy: float
    completion: int
    interval: int
    lut: float
    multipliers: int
    choices: dict[str, str]
    act: str = "gate"

    @property
    def key(self) -> str:
        return point_key(self.budget, self.seed, self.act)

    @property
    def activations(self) -> str:
        """The hardened gates' choices, else the activation trained with."""
        return ", ".join(self.choices.values()) or self.act

    @classmethod
    def from_report(cls, budget: str, seed: int, r: dict, act: str = "gate") -> Point:
        """The point of a `cosyn train` report (train.json)."""
        a = r["allocation"]
        return cls(budget, seed, float(r["accuracy"]), int(r["simulation"]["completion"]),
                   int(a["interval"]), float(a["estimate"]["lut"]), int(a["multipliers"]),
                   dict(r["choices"]), act)  # fmt: skip


def point_key(budget: str, seed: int, act: str = "gate") -> str:
    return f"{budget}-seed{seed}" if act == "gate" else f"{budget}-{act}-seed{seed}"


def dominates(a: Point, b: Point) -> bool:
    """`a` is at least as accurate, as fast and as small as `b`, and better in one."""
    ge = a.accuracy >= b.accuracy and a.completion <= b.completion and a.lut <= b.lut
    return ge and (a.accuracy, -a.completion, -a.lut) != (b.accuracy, -b.completion, -b.lut)


def front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates, fastest first."""
    keep = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(keep, key=lambda p: (p.completion, p.lut))


@dataclass
class Sweep:
    """The points of a sweep (kept from an earlier run or trained now) and its wall time."""

    model: str
    device: str
    points: list[Point]
    trained: int
    wall_s: float
    failed: dict[str, str] = field(default_factory=dict)

    def front(self) -> list[Point]:
        return front(self.points)

    def table(self) -> Table:
        on = {p.key for p in self.front()}
        t = Table(title=f"{self.model} on {self.device}: accuracy against latency")
        for c in ("budget", "seed", "activations", "accuracy %", "whole answer", "interval",
                  "multipliers", "LUT", "front"):  # fmt: skip
            t.add_column(c, justify="left" if c in ("budget", "activations") else "right")
        for p in sorted(self.points, key=lambda p: (p.completion, p.seed)):
            t.add_row(p.budget, str(p.seed), p.activations, f"{p.accuracy:.2f}",
                      f"{p.completion:,}", f"{p.interval:,}", str(p.multipliers),
                      f"{p.lut:,.0f}", "*" if p.key in on else "")  # fmt: skip
        t.caption = (
            f"cycles simulated on Icarus (first input to last output); LUT estimated; "
            f"{self.trained} trained, {len(self.points) - self.trained} kept, {self.wall_s:.0f} s"
        )
        return t

    def to_json(self) -> str:
        d = asdict(self)
        d["front"] = [p.key for p in self.front()]
        return json.dumps(d, indent=2) + "\n"

    def plot(self, path: str | Path, freq_mhz: float = 100.0) -> Path:
        """Accuracy against the whole answer's time at `freq_mhz`, each marker's area
        by its LUTs, the front joined and ringed (a PNG, written whole)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        most = max((p.lut for p in self.points), default=1.0) or 1.0
        xs = [p.completion / freq_mhz for p in self.points]
        ax.scatter(xs, [p.accuracy for p in self.points],
                   s=[30 + 400 * p.lut / most for p in self.points], alpha=0.5,
                   label="trained (area: LUTs)")  # fmt: skip
        f = self.front()
        ax.plot([p.completion / freq_mhz for p in f], [p.accuracy for p in f], "k--",
                marker="o", mfc="none", ms=12, label="front")  # fmt: skip
        for p in self.points:
            label = p.budget if p.act == "gate" else f"{p.budget} {p.act}"
            ax.annotate(label, (p.completion / freq_mhz, p.accuracy), fontsize=7)
        ax.set_xlabel(f"latency to the whole answer, us at {freq_mhz:g} MHz")
        ax.set_ylabel("test accuracy %")
        ax.set_title(f"{self.model} on {self.device}")
        ax.legend()
        fig.tight_layout()
        return save_png(fig, path)


def _train_point(model: str, args: list[str]) -> tuple[int, str, str | None, bytes | None]:
    """Run `cosyn train MODEL ARGS` in a fresh process in a temporary folder, one torch
    thread; (exit status, the last lines it wrote, train.json's text, the checkpoint)."""
    with tempfile.TemporaryDirectory(prefix="cosyn-sweep-") as tmp:
        ckpt = Path(tmp) / "model.pt"
        cmd = [sys.executable, "-c", "from cosyn.cli import main; main()", "train", model,
               *args, "--out", str(ckpt)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
        report = ckpt.with_name("train.json")
        if r.returncode or not report.is_file():
            return r.returncode or 1, tail, None, None
        return 0, tail, report.read_text(), ckpt.read_bytes()


def _start_ray(address: str | None, workers: int | None):
    """ray, initialized: a local instance of `workers` CPUs, or the cluster at `address`
    (a host:port that does not answer is refused at once; Ray itself retries for minutes)."""
    import ray

    if address is None:
        ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)  # fmt: skip
        return ray
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if address != "auto":
        if not sep or not port.isdigit():
            raise CosynError(f"--address {address!r}: give the Ray cluster as host:port")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise CosynError(
                f"--address {address}: no Ray cluster answers there ({e.strerror or e}); "
                "start one with `ray start --head` or leave --address out for a local one"
            ) from None
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as e:  # ray raises ConnectionError, RuntimeError, ... by version
        raise CosynError(f"--address {address}: cannot join the Ray cluster ({e})") from None
    return ray


def sweep(
    model: str,
    budgets: Sequence[str],
    out: str | Path,
    device: str = "ecp5-85f",
    seeds: Sequence[int] = (0,),
    epochs: int = 30,
    freq: float = 100.0,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    lut_weight: float | None = None,
    acts: Sequence[str] = ("gate",),
) -> Sweep:
    """Train `model` (package.module:factory) with each activation of `acts` (GateActs by
    default) under each latency budget (as `cosyn train --latency-budget`: `4us`,
    `400cycles`) and seed as Ray tasks; points already kept under `out/points/` are
    not trained again. Writes `out/sweep.json` and `out/front.png`. A point whose
    training fails is reported in `Sweep.failed` (its last lines) and the others are
    kept; CosynError if none is left. Keep one `out` per model, device, epochs and
    LUT weight: a point is known by its budget, seed and activation."""
    out = Path(out)
    t0 = time.perf_counter()
    todo, points = {}, []
    for b, s, a in itertools.product(budgets, seeds, acts):
        report = out / "points" / point_key(b, s, a) / "train.json"
        if report.is_file():
            points.append(Point.from_report(b, s, json.loads(report.read_text()), a))
        else:
            todo[point_key(b, s, a)] = (b, s, a)
    failed: dict[str, str] = {}
    if todo:
        ray = _start_ray(address, workers)
        try:
            task = ray.remote(num_cpus=1)(_train_point)
            args = {k: ["--act", a, "--latency-budget", b, "--seed", str(s), "--epochs",
                        str(epochs), "--device", device, "--freq", str(freq)]
                    for k, (b, s, a) in todo.items()}  # fmt: skip
            if lut_weight is not None:
                args = {k: [*a, "--lut-weight", str(lut_weight)] for k, a in args.items()}
            running = {task.remote(model, a): k for k, a in args.items()}
            with Progress(disable=not progress, transient=True) as bar:
                job = bar.add_task(f"training {len(todo)} points", total=len(todo))
                while running:
                    done, _ = ray.wait(list(running), num_returns=1)
                    k = running.pop(done[0])
                    status, tail, report, ckpt = ray.get(done[0])
                    if status:
                        failed[k] = tail
                    else:
                        with atomic_dir(out / "points" / k) as tmp:  # kept whole
                            (tmp / "model.pt").write_bytes(ckpt)
                            (tmp / "train.json").write_text(report)
                        b, s, a = todo[k]
                        points.append(Point.from_report(b, s, json.loads(report), a))
                    bar.advance(job)
        except KeyboardInterrupt:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.shutdown()
    if not points:
        raise CosynError(
            "sweep: no point trained; "
            + "; ".join(f"{k}: {v.splitlines()[-1] if v else 'failed'}" for k, v in failed.items())
        )
    s = Sweep(model, device, points, len(todo) - len(failed), time.perf_counter() - t0, failed)
    write_text(out / "sweep.json", s.to_json())
    s.plot(out / "front.png", freq)
    return s
