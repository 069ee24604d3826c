"""lsc.align."""
