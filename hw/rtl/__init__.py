"""hw/rtl/__init__.py (not yet built)."""
