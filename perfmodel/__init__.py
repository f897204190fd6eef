"""Performance model: cycles and resources per node (not yet built)."""
