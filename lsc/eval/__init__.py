"""lsc.eval."""
