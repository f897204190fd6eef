"""What cosyn writes for people: the graph table, and output folders that appear whole."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cosyn.ir import Graph

__all__ = ["atomic_dir", "graph_table", "save_png", "write_text"]


def graph_table(g: Graph) -> str:
    """A Markdown table: node, kind, inputs, shape, input and output bit widths, accumulator
    width, MACs per sample."""
    rows = [
        "| node | kind | inputs | shape | in | out | accumulator | MACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in g:
        ins = " ".join(str(g[i].dtype) for i in n.inputs) or "f32"
        acc = str(n.dtype) if n.multiplies and not n.elementwise else ""
        out = "" if acc else str(n.dtype)
        shape = "x".join(map(str, n.shape))
        rows.append(
            f"| {n.name} | {n.kind} | {', '.join(n.inputs)} | {shape} | {ins} | {out} "
            f"| {acc} | {n.macs} |"
        )
    rows.append(f"\nTotal MACs per sample: {g.macs}\n")
    return "\n".join(rows)


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, else vanishes."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def save_png(fig, path: str | Path) -> Path:
    """Write a matplotlib figure to `path` as a PNG, whole or not at all (a hidden
    temporary file beside it, then renamed), and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` whole or not at all (a temporary file moved into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
