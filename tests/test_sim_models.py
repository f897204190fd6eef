"""Generated designs in cocotb: the default MLP and CNN over the digits test set, and
hypothesis-generated MLPs and CNNs, on Icarus and Verilator with random input gaps and
back-pressure. Every output element equals the golden model; latency and interval
equal the manifest's.

Workload from the environment: COSYN_SIM_VECTORS (default 32 of the 360 test digits;
0: all of them, as `cosyn demo` simulates) and COSYN_SIM_EXAMPLES (hypothesis examples
per model kind and simulator; by default fewer CNNs, which take many cycles, and one
of each on Verilator, whose builds take 30-60 s: the default models are built there too).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cosyn.hw.rtl import Design, generate
from cosyn.models.data import digits
from cosyn.models.zoo import cnn, mlp
from cosyn.sim import SimResult, simulate
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from strategies import cnns, inputs, mlps, strided_cnn

import cosyn
from cosyn.ir.graph import Graph

pytestmark = pytest.mark.slow

VECTORS = int(os.environ.get("COSYN_SIM_VECTORS", 32)) or None
EXAMPLES = {("mlp", "icarus"): 8, ("cnn", "icarus"): 3, ("mlp", "verilator"): 1,
            ("cnn", "verilator"): 1}  # fmt: skip


def _examples(kind: str, simulator: str) -> int:
    return int(os.environ.get("COSYN_SIM_EXAMPLES") or EXAMPLES[kind, simulator])


def check(r: SimResult, d: Design, xi: np.ndarray) -> None:
    """Every vector checked and exact, nothing lost or duplicated, timing as promised."""
    assert r.protocol_errors == 0, f"X/Z on a handshake, or an offered beat changed: {r}"
    assert (r.mismatches, r.lost, r.duplicated) == (0, 0, 0), r
    assert r.vectors == len(xi)
    assert np.array_equal(r.outputs, d.graph.run_int(xi))
    timing = (d.manifest["latency"], d.manifest["interval"])
    assert (r.latency, r.interval) == timing, f"intervals {r.intervals}, manifest {timing}"


@pytest.fixture(scope="module")
def zoo() -> dict[str, tuple[Graph, np.ndarray]]:
    """The default MLP and CNN (calibrated, untrained), lowered, with the digits test set."""
    graphs = {}
    for name, factory, image in (("mlp", mlp, False), ("cnn", cnn, True)):
        data = digits(image=image)
        torch.manual_seed(0)
        model = factory().train()
        with torch.no_grad():
            model(data.x_train[:256])
        graphs[name] = cosyn.lower(model.eval(), data.x_test[:8]), data.x_test.numpy()[:VECTORS]
    return graphs


@pytest.mark.parametrize(  # the CNN on Verilator: a generated one below (and cosyn demo's MLP)
    ("model", "simulator"), [("mlp", "icarus"), ("mlp", "verilator"), ("cnn", "icarus")]
)
def test_default_model_exact_over_digits(
    zoo: dict, model: str, simulator: str, tmp_path: Path
) -> None:
    g, x = zoo[model]
    d = generate(g, tmp_path / model)
    r = simulate(d, x, simulator=simulator, backpressure=True)
    check(r, d, g.quantize(x))


def _random_design(data: st.DataObject, kind: str, simulator: str) -> None:
    """Draw a model, lower it, generate with a random parallelism, simulate 8 vectors."""
    if kind == "mlp":
        model = data.draw(mlps("short", batchnorm=None))
        shape: tuple[int, ...] = (model[1].in_features,)
    else:
        model = data.draw(cnns())
        shape = (model[1].in_channels, 8, 8)
    x = data.draw(inputs(shape, n=8))
    g = cosyn.lower(model, x[:2])
    narrowest = min(n.shape[0] for n in g if n.kind in ("dense", "conv2d"))  # p <= its outputs
    p = data.draw(st.one_of(st.none(), st.integers(1, min(narrowest, 4))))
    with tempfile.TemporaryDirectory() as tmp:
        d = generate(g, Path(tmp) / "rtl", parallelism=p)
        seed = data.draw(st.integers(0, 1000))
        r = simulate(d, x.numpy(), simulator=simulator, backpressure=True, seed=seed)
        check(r, d, g.quantize(x.numpy()))


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_generated_models_exact(kind: str, simulator: str) -> None:
    @settings(
        max_examples=_examples(kind, simulator),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same examples in every run
        phases=(Phase.explicit, Phase.generate),  # no shrinking: each example simulates
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        _random_design(data, kind, simulator)

    run()


def test_strided_cnn_timing_equals_manifest(tmp_path: Path) -> None:
    x = torch.randn(8, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    g = cosyn.lower(strided_cnn(), x)
    d = generate(g, tmp_path / "rtl", parallelism=2)
    r = simulate(d, x.numpy(), simulator="icarus", backpressure=True)
    check(r, d, g.quantize(x.numpy()))
