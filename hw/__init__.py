"""Hardware backends: RTL (Amaranth), HLS (hls4ml) and the open FPGA flow."""
