"""Import of Hugging Face Llama checkpoints: the names this module has always offered, now
served by :mod:`lsc.models.hf_decoder` (which also reads Mistral, Qwen 2 / 2.5 / 3, Gemma 2 and
Gemma 3 text checkpoints; see its docstring for the supported fields and the weight layout).

``load_llama(path, pad_id=None, dtype='float32', param_dtype='float32') -> (DecoderLM,
DecoderConfig)`` loads any supported decoder checkpoint; :func:`convert_llama_tensors` maps a
name -> array mapping (or a :class:`TensorReader`) to the pure-dict state of the model.
"""

from __future__ import annotations

from lsc.models.hf_decoder import (  # noqa: F401  (re-exported)
    SUPPORTED_MODEL_TYPES,
    CheckpointError,
    TensorReader,
    config_from_hf,
    convert_tensors,
    load_decoder,
    read_hf_config,
    read_safetensors,
)

load_llama = load_decoder
convert_llama_tensors = convert_tensors

__all__ = [
    "SUPPORTED_MODEL_TYPES", "CheckpointError", "TensorReader", "config_from_hf",
    "convert_llama_tensors", "convert_tensors", "load_decoder", "load_llama", "read_hf_config",
    "read_safetensors",
]
