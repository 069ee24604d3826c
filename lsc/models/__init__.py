"""Models: T5.1.1 encoder-decoder, decoder-only LMs, reward/value heads, sampling, weight import.

* :mod:`lsc.models.layers` -- building blocks shared by both families (norms, attention, MLPs,
  dropout, masks).
* :mod:`lsc.models.t5` (T5.1.1) and :mod:`lsc.models.decoder` (Llama / Gemma / PaLM-style), their
  presets in ``configs/models/``.
* :mod:`lsc.models.heads` -- scalar reward and value heads on either backbone.
* :mod:`lsc.models.protocol` and :mod:`lsc.models.sampling` -- the autoregressive interface and
  the jitted KV-cache sampler.
* :mod:`lsc.models.hf_io` -- reading Hugging Face checkpoint directories (``config.json``,
  safetensors, the checks and :class:`~lsc.models.hf_io.CheckpointError`);
  :mod:`lsc.models.hf_t5`, :mod:`lsc.models.hf_decoder` (Llama, Mistral, Qwen 2 / 3, Gemma 2 / 3)
  -- Hugging Face checkpoint import;
  :mod:`lsc.models.hf_reward` -- reward models from sequence-classification checkpoints (with
  :mod:`lsc.models.t5_classifier` for T5); :mod:`lsc.models.hf_convert` -- converted checkpoints
  as run directories for ``policy.workdir`` / ``rewards.properties.<name>.rm_workdir``.
"""
