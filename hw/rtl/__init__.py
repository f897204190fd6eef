"""RTL backend: Amaranth components per node kind and the streaming pipeline (issue 4)."""
