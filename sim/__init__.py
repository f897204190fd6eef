"""sim/__init__.py (not yet built)."""
