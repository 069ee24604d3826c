"""Data: hh-rlhf reading and splitting, tokenizers, input pipelines, the synthetic gold world."""
