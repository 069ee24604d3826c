"""Models: T5.1.1 encoder-decoder, decoder-only LMs, reward/value heads, sampling, weight import."""
