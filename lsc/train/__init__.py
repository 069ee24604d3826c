"""lsc.train."""
