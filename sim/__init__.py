"""Verification of generated RTL in cocotb, on Icarus Verilog and Verilator.

    r = cosyn.sim.simulate(design, x, simulator="verilator")   # every output checked
    tb = cosyn.sim.write_testbench(design, "out/tb", x)        # standalone tb/ folder
    r = cosyn.sim.run_testbench("out/tb", "out/rtl", "icarus")

`bench` is the cocotb testbench library (driver, back-pressure, monitor, scoreboard);
`runner` builds a design and runs a testbench folder with the cocotb runner.
"""

from cosyn.sim._simulate import (
    SimResult,
    SimulationError,
    run_testbench,
    simulate,
    write_testbench,
)

__all__ = ["SimResult", "SimulationError", "run_testbench", "simulate", "write_testbench"]
