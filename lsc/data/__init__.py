"""Data: hh-rlhf reading and splitting, tokenizers, input pipelines, the synthetic gold world.

* :mod:`lsc.data.hh_rlhf` -- the hh-rlhf reader (pairs, prompts, demonstrations; the half split).
* :mod:`lsc.data.world` -- the synthetic gold world's grammar, gold scorers and judge, and its
  :class:`~lsc.data.world.WorldConfig`.
* :mod:`lsc.data.world_data` -- the world's demonstrator, labelled pairs and files in the hh-rlhf
  format, and its word-level tokenizer.
* :mod:`lsc.data.tokenizer` -- SentencePiece / ``tokenizer.json`` tokenizers, truncation.
* :mod:`lsc.data.pipeline` -- tokenised tables and checkpointable Grain batch iterators.
* :mod:`lsc.data.seqio_tasks` -- optional seqio Tasks (the ``seqio`` extra).

:data:`DATA_SOURCES` are the values of ``config.data.source``, each read by every job:
``synthetic`` (the world under the workdir) and ``hh_rlhf`` (``config.data.path``: the published
``.jsonl[.gz]`` files or a Hugging Face ``datasets`` parquet / Arrow export of them,
:func:`lsc.data.hh_rlhf.subset_files`).
"""

DATA_SOURCES = ("synthetic", "hh_rlhf")
