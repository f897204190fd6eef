"""Open synthesis flow: yosys + nextpnr for ECP5 and iCE40 boards (not yet built)."""
