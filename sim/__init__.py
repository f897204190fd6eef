"""cocotb testbenches and the simulation runner (issue 4)."""
