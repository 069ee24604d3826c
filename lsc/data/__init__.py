"""Data: hh-rlhf reading and splitting, tokenizers, input pipelines, the synthetic gold world.

* :mod:`lsc.data.hh_rlhf` -- the hh-rlhf reader (pairs, prompts, demonstrations; the half split).
* :mod:`lsc.data.synthetic` -- the synthetic gold world written in the hh-rlhf format, and its
  gold judge.
* :mod:`lsc.data.tokenizer` -- SentencePiece / ``tokenizer.json`` tokenizers, truncation.
* :mod:`lsc.data.pipeline` -- tokenised tables and checkpointable Grain batch iterators.
* :mod:`lsc.data.seqio_tasks` -- optional seqio Tasks (the ``seqio`` extra).

:data:`DATA_SOURCES` are the values of ``config.data.source`` (the jobs read ``synthetic`` and
``hh_rlhf``).
"""

DATA_SOURCES = ("synthetic", "hh_rlhf", "hf_parquet")
