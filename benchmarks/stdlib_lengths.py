"""Token counts of the docstrings of the installed Python standard library, as a histogram.

A real distribution of sequence lengths, available without downloads, for the
length-aware scheduler. Every module, class, function and method docstring
(`ast.get_docstring`, cleaned as `inspect.cleandoc` does) of the standard library's
.py files is tokenized with the regular expression `\\w+|[^\\w\\s]` (a run of word
characters, or one other non-space character: "floor(sqrt(n))" is 7 tokens). Left
out: site-packages, the test suites (folders test, tests, idle_test and files
test_*.py) and the packages that are not library modules (idlelib, tkinter,
turtledemo, lib2to3, ensurepip, __phello__).

    python benchmarks/stdlib_lengths.py                 # print the figures
    python benchmarks/stdlib_lengths.py --write scheduler/stdlib_lengths.json
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np

TOKEN = re.compile(r"\w+|[^\w\s]")
SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
SKIP |= {"idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "__phello__"}


def library_files(root: Path) -> list[Path]:
    """The standard library's .py files, test suites and non-library packages left out."""
    files = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if SKIP.isdisjoint(parts) and not parts[-1].startswith("test_"):
            files.append(path)
    return files


def docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = (ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, kinds))
    return [d for d in found if d]


def lengths(root: Path) -> list[int]:
    return [len(TOKEN.findall(d)) for f in library_files(root) for d in docstrings(f)]


def summary(counts: list[int]) -> dict:
    a = np.array(counts)
    return {
        "python": sys.version.split()[0],
        "tokenizer": TOKEN.pattern,
        "docstrings": len(a),
        "median": int(np.sort(a)[len(a) // 2]),
        "p90": round(float(np.percentile(a, 90)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": int(a.max()),
        "histogram": {str(k): v for k, v in sorted(Counter(counts).items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the histogram fixture (JSON) here")
    args = parser.parse_args()
    s = summary(lengths(Path(sysconfig.get_paths()["stdlib"])))
    print(
        f"Python {s['python']}: {s['docstrings']} docstrings, median {s['median']} tokens, "
        f"90th percentile {s['p90']:.0f}, 99th {s['p99']:.0f}, maximum {s['max']}"
    )
    if args.write:
        args.write.write_text(json.dumps(s, indent=1) + "\n")
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
