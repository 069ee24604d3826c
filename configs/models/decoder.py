"""Decoder-only LM presets: ``get_config(name)`` -> ``ml_collections.ConfigDict``.

The fields are exactly those of ``lsc.models.decoder.DecoderConfig`` (build the model config with
``DecoderConfig.from_mapping(get_config(name))``). Families:

* Llama (SwiGLU, RMSNorm eps 1e-5, untied unless noted): ``llama2_7b``, ``llama2_13b``,
  ``llama3_8b`` (GQA 8 kv heads, theta 5e5), ``llama3_2_1b`` (tied, llama3 rotary scaling),
  ``tinyllama_1_1b`` (GQA 4 kv heads);
* Gemma 1 (GeGLU with tanh GELU, ``1 + w`` norms, embeddings scaled by sqrt(d_model), tied):
  ``gemma_2b`` (MQA), ``gemma_7b``;
* Gemma 2 (Gemma 1 plus post-norms, attention / final logit soft-capping 50 / 30,
  ``query_pre_attn_scalar`` 256, alternating 4096-token sliding-window layers): ``gemma2_2b``;
* Gemma 3 text (Gemma 2 without attention soft-capping, plus QK-norm, five 512-token local
  layers per global one, local / global RoPE bases 1e4 / 1e6): ``gemma3_1b``;
* PaLM (parallel attention + MLP, MQA, SwiGLU, tied, 256k vocabulary): ``palm_8b``,
  ``palm_62b``, ``palm_540b``;
* small sizes for tests and CPU runs: ``tiny`` (GQA), ``tiny_mha``, ``tiny_mqa``,
  ``tiny_parallel`` (PaLM-style), ``tiny_gemma``, ``tiny_gemma2``, ``tiny_gemma3``,
  ``tiny_qwen3`` (QK-norm, sliding window on the second layer), ``tiny_qwen2`` (QKV biases
  without an output bias), ``tiny_mistral`` (sliding window on every layer), ``small``
  (benchmarks, ~8M parameters).

The published families' presets compute in bfloat16 (``compute_dtype``) with
``attention_impl='auto'`` (cuDNN's flash attention on a GPU where it can run, else XLA; Gemma 2's
attention soft-capping keeps it on XLA), the small sizes in float32 with ``attention_impl='xla'``;
every preset stores its parameters in float32 (``param_dtype``; master weights).

Published weights are imported, with their own config, by ``lsc.models.hf_decoder`` (or turned
into a run directory by ``python -m lsc.models.hf_convert``); these presets give the shapes for
randomly initialised runs and benchmarks.

Usage: ``--config=configs/models/decoder.py:llama3_8b``.
"""

import ml_collections

_BASE = dict(
    activation="silu",
    norm_eps=1e-6,
    norm_zero_centered=False,
    embed_scale=False,
    rope_theta=10_000.0,
    rope_scaling_type="default",
    rope_scaling_factor=1.0,
    rope_low_freq_factor=1.0,
    rope_high_freq_factor=4.0,
    rope_original_max_len=8192,
    tie_embeddings=False,
    parallel_block=False,
    attention_bias=False,
    mlp_bias=False,
    attention_out_bias=None,
    qk_norm=False,
    query_scale=0.0,
    attn_logit_softcap=0.0,
    final_logit_softcap=0.0,
    post_norms=False,
    sliding_window=0,
    layer_types=(),
    rope_local_theta=0.0,
    pad_id=0,
    eos_id=1,
    bos_id=-1,
    compute_dtype="float32",
    param_dtype="float32",
    init_std=None,
    attention_impl="xla",
)


def _shape(vocab, d, layers, heads, kv, head_dim, mlp):
    return dict(vocab_size=vocab, d_model=d, num_layers=layers, num_heads=heads, num_kv_heads=kv,
                head_dim=head_dim, mlp_dim=mlp)


_LLAMA = dict(norm_eps=1e-5, compute_dtype="bfloat16", attention_impl="auto", bos_id=1, eos_id=2)
_LLAMA3 = dict(_LLAMA, rope_theta=500_000.0, bos_id=128000, eos_id=128001)
_GEMMA = dict(activation="gelu_tanh", norm_zero_centered=True, embed_scale=True,
              tie_embeddings=True, bos_id=2, eos_id=1, pad_id=0, compute_dtype="bfloat16",
              attention_impl="auto")
_GEMMA2 = dict(_GEMMA, post_norms=True, query_scale=256**-0.5, attn_logit_softcap=50.0,
               final_logit_softcap=30.0, sliding_window=4096)
_GEMMA3 = dict(_GEMMA, post_norms=True, qk_norm=True, query_scale=256**-0.5, sliding_window=512,
               rope_theta=1_000_000.0, rope_local_theta=10_000.0)
_F32 = dict(compute_dtype="float32", attention_impl="xla")


def _alternating(layers, period):
    """Layer types with a full-attention layer every ``period`` layers, the rest sliding."""
    return tuple("full_attention" if (i + 1) % period == 0 else "sliding_attention"
                 for i in range(layers))


_PALM = dict(parallel_block=True, tie_embeddings=True, compute_dtype="bfloat16",
             attention_impl="auto")
_TINY = dict(init_std=1.0)

PRESETS = {
    # Llama family.
    "llama2_7b": dict(_shape(32000, 4096, 32, 32, 32, 128, 11008), **_LLAMA),
    "llama2_13b": dict(_shape(32000, 5120, 40, 40, 40, 128, 13824), **_LLAMA),
    "llama3_8b": dict(_shape(128256, 4096, 32, 32, 8, 128, 14336), **_LLAMA3),
    "llama3_2_1b": dict(
        _shape(128256, 2048, 16, 32, 8, 64, 8192), **_LLAMA3, tie_embeddings=True,
        rope_scaling_type="llama3", rope_scaling_factor=32.0, rope_low_freq_factor=1.0,
        rope_high_freq_factor=4.0, rope_original_max_len=8192,
    ),
    "tinyllama_1_1b": dict(_shape(32000, 2048, 22, 32, 4, 64, 5632), **_LLAMA),
    # Gemma 1 family.
    "gemma_2b": dict(_shape(256000, 2048, 18, 8, 1, 256, 16384), **_GEMMA),
    "gemma_7b": dict(_shape(256000, 3072, 28, 16, 16, 256, 24576), **_GEMMA),
    "gemma2_2b": dict(_shape(256000, 2304, 26, 8, 4, 256, 9216), **_GEMMA2,
                      layer_types=_alternating(26, 2)),
    "gemma3_1b": dict(_shape(262144, 1152, 26, 4, 1, 256, 6912), **_GEMMA3,
                      layer_types=_alternating(26, 6)),
    # PaLM shapes (Chowdhery et al. 2022, table 1): d_ff = 4 d_model, head_dim 256.
    "palm_8b": dict(_shape(256000, 4096, 32, 16, 1, 256, 16384), **_PALM),
    "palm_62b": dict(_shape(256000, 8192, 64, 32, 1, 256, 32768), **_PALM),
    "palm_540b": dict(_shape(256000, 18432, 118, 48, 1, 256, 73728), **_PALM),
    # Small sizes.
    "tiny": dict(_shape(128, 32, 2, 4, 2, 8, 64), **_TINY),
    "tiny_mha": dict(_shape(128, 32, 2, 4, 4, 8, 64), **_TINY),
    "tiny_mqa": dict(_shape(128, 32, 2, 4, 1, 8, 64), **_TINY),
    "tiny_parallel": dict(_shape(128, 32, 2, 4, 1, 8, 64), parallel_block=True,
                          tie_embeddings=True, **_TINY),
    "tiny_gemma": dict(_shape(128, 32, 2, 4, 1, 8, 64), **dict(_GEMMA, **_F32)),
    "tiny_gemma2": dict(_shape(128, 32, 2, 4, 2, 8, 64), **dict(_GEMMA2, **_F32, sliding_window=4),
                        layer_types=_alternating(2, 2)),
    "tiny_gemma3": dict(_shape(128, 32, 2, 4, 2, 8, 64), **dict(_GEMMA3, **_F32, sliding_window=4),
                        layer_types=_alternating(2, 2)),
    "tiny_qwen3": dict(_shape(128, 32, 2, 4, 2, 8, 64), qk_norm=True, tie_embeddings=True,
                       sliding_window=4, layer_types=("full_attention", "sliding_attention"),
                       **_TINY),
    "tiny_qwen2": dict(_shape(128, 32, 2, 4, 2, 8, 64), attention_bias=True,
                       attention_out_bias=False, tie_embeddings=True, **_TINY),
    "tiny_mistral": dict(_shape(128, 32, 2, 4, 2, 8, 64), sliding_window=4, **_TINY),
    "small": dict(_shape(8192, 256, 4, 8, 4, 32, 1024)),
}


def get_config(name: str = "tiny") -> ml_collections.ConfigDict:
    """The preset called ``name`` (see the module docstring) as a ConfigDict."""
    if name not in PRESETS:
        raise ValueError(f"unknown decoder preset {name!r}; known: {sorted(PRESETS)}")
    fields = dict(_BASE)
    fields.update(PRESETS[name])
    return ml_collections.ConfigDict(fields)
