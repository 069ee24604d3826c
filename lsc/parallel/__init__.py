"""lsc.parallel."""
