"""hw/hls/__init__.py (not yet built)."""
