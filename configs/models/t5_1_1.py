"""T5.1.1 model presets (``lsc.models.t5.T5Config`` fields as an ``ml_collections.ConfigDict``).

Usage::

  from configs.models import t5_1_1
  config = t5_1_1.get_config("base")          # a ConfigDict
  model = T5(T5Config.from_dict(config), rngs=nnx.Rngs(0))

or on the command line ``--config=configs/models/t5_1_1.py:base``.

The public T5.1.1 sizes (google/t5-v1_1-*; flan-t5 shares them): gated-GELU feed-forward,
untied LM head, ``d_kv = 64``, vocabulary 32128, 32 relative-attention buckets up to distance
128. The paper's reward models were T5-base.

======  =======  =====  ========  ======  =====
size    d_model  heads  layers    d_ff    params
======  =======  =====  ========  ======  =====
small   512      6      8 + 8     1024    77M
base    768      12     12 + 12   2048    248M
large   1024     16     24 + 24   2816    783M
xl      2048     32     24 + 24   5120    2.85B
xxl     4096     64     24 + 24   10240   11.1B
======  =======  =====  ========  ======  =====

Every preset computes in float32 (``compute_dtype``); the paper's configs set ``bfloat16``.
Parameters are stored in float32 (``param_dtype``). The public sizes take
``attention_impl='auto'`` (cuDNN's flash attention on a GPU under bfloat16 compute, else XLA);
``tiny`` and ``mini`` take ``'xla'``.

``tiny`` and ``mini`` are small random-weight shapes for tests (same architecture; ``mini`` has an
unequal number of encoder and decoder layers and non-default relative-attention buckets).
"""

import ml_collections

_SIZES = {
    # name: (d_model, num_heads, d_kv, num_layers, num_decoder_layers, d_ff, vocab, buckets, max_dist)
    "small": (512, 6, 64, 8, 8, 1024, 32128, 32, 128),
    "base": (768, 12, 64, 12, 12, 2048, 32128, 32, 128),
    "large": (1024, 16, 64, 24, 24, 2816, 32128, 32, 128),
    "xl": (2048, 32, 64, 24, 24, 5120, 32128, 32, 128),
    "xxl": (4096, 64, 64, 24, 24, 10240, 32128, 32, 128),
    "tiny": (32, 4, 8, 2, 2, 64, 128, 32, 128),
    "mini": (64, 4, 16, 2, 3, 128, 256, 16, 32),
}

SIZES = tuple(_SIZES)
_XLA_SIZES = ("tiny", "mini")  # test shapes: attention_impl='xla'; the public sizes 'auto'


def get_config(size: str = "base") -> ml_collections.ConfigDict:
    """The T5.1.1 preset ``size`` (one of :data:`SIZES`; default ``base``)."""
    size = size or "base"
    if size not in _SIZES:
        raise ValueError(f"configs/models/t5_1_1.py: unknown size {size!r}; use one of {list(SIZES)}")
    d_model, heads, d_kv, layers, dec_layers, d_ff, vocab, buckets, max_dist = _SIZES[size]
    config = ml_collections.ConfigDict()
    config.vocab_size = vocab
    config.d_model = d_model
    config.d_kv = d_kv
    config.d_ff = d_ff
    config.num_layers = layers
    config.num_decoder_layers = dec_layers
    config.num_heads = heads
    config.relative_attention_num_buckets = buckets
    config.relative_attention_max_distance = max_dist
    config.dropout_rate = 0.0  # T5.1.1 pre-training used none; fine-tuning often uses 0.1
    config.layer_norm_epsilon = 1e-6
    config.feed_forward_proj = "gated-gelu"
    config.tie_word_embeddings = False
    config.scale_decoder_outputs = False
    config.pad_id = 0
    config.eos_id = 1
    config.decoder_start_id = 0
    config.compute_dtype = "float32"  # or "bfloat16": bf16 matmuls, float32 master weights
    config.param_dtype = "float32"
    config.attention_impl = "xla" if size in _XLA_SIZES else "auto"
    return config
