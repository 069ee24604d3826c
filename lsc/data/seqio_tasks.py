"""hh-rlhf as seqio Tasks, for t5x-style pipelines (the ``seqio`` extra; imports TensorFlow).

Nothing in the core imports this module. Records are parsed by :mod:`lsc.data.hh_rlhf` (same
splitting, same errors), then handed to TensorFlow as strings.

:func:`register_hh_rlhf_tasks` adds, for each property (``helpful``, ``harmless``):

* ``{prefix}_{property}_pairwise`` with features ``inputs`` (the prompt), ``chosen`` and
  ``rejected`` (responses);
* ``{prefix}_{property}_prompts`` with the feature ``inputs`` only.

Splits: ``train`` and ``test`` (the published files), and the paper's halves of ``train``:
``train_rm`` (reward-model training) and ``train_align`` (alignment prompts), by the same prompt
hash as :func:`lsc.data.hh_rlhf.split_in_half`.

Truncation follows the project's policy at token level: ``inputs`` get no EOS and keep their
last tokens (``seqio.preprocessors.truncate_inputs_left``); responses get EOS appended before
seqio's right trim, so a response longer than its length loses the EOS. (The turn-aware prompt
truncation of :func:`lsc.data.tokenizer.encode_prompt` is not reproduced in TensorFlow.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import seqio
import tensorflow as tf

from lsc.data import hh_rlhf

SPLITS = ("train", "test", "train_rm", "train_align")


def _load(data_dir: str, subsets: Sequence[str], split: str, on_error: hh_rlhf.OnError
          ) -> list[hh_rlhf.Pair]:
    file_split = "test" if split == "test" else "train"
    pairs, _ = hh_rlhf.read_pairs(hh_rlhf.subset_files(data_dir, subsets, file_split),
                                  on_error=on_error)
    if split in ("train_rm", "train_align"):
        rm_half, align_half = hh_rlhf.split_in_half(pairs)
        pairs = rm_half if split == "train_rm" else align_half
    return pairs


def _pairwise_fn(split: str, shuffle_files: bool, seed: int | None = None, *, data_dir: str,
                 subsets: Sequence[str], on_error: hh_rlhf.OnError) -> tf.data.Dataset:
    del shuffle_files, seed  # a handful of files; the Task shuffles examples
    pairs = _load(data_dir, subsets, split, on_error)
    return tf.data.Dataset.from_tensor_slices({
        "inputs": tf.constant([p.prompt for p in pairs], tf.string),
        "chosen": tf.constant([p.chosen for p in pairs], tf.string),
        "rejected": tf.constant([p.rejected for p in pairs], tf.string)})


def _prompts_fn(split: str, shuffle_files: bool, seed: int | None = None, *, data_dir: str,
                subsets: Sequence[str], on_error: hh_rlhf.OnError) -> tf.data.Dataset:
    del shuffle_files, seed
    prompts = list(dict.fromkeys(p.prompt for p in _load(data_dir, subsets, split, on_error)))
    return tf.data.Dataset.from_tensor_slices({"inputs": tf.constant(prompts, tf.string)})


def register_hh_rlhf_tasks(data_dir: str, vocabulary: seqio.Vocabulary, *,
                           prefix: str = "hh_rlhf", on_error: hh_rlhf.OnError = "raise",
                           properties: Sequence[str] = ("helpful", "harmless")) -> list[str]:
    """Registers the pairwise and prompt Tasks (module docstring); returns their names.

    ``data_dir`` holds the subset directories (``helpful-base/train.jsonl.gz``, ...);
    ``vocabulary`` is e.g. ``seqio.SentencePieceVocabulary(t5_vocab_path)``. Tasks already
    registered under the same names are replaced.
    """
    names = []
    prompt_feature = seqio.Feature(vocabulary, add_eos=False)
    response_feature = seqio.Feature(vocabulary, add_eos=True)
    for prop in properties:
        kwargs = dict(data_dir=data_dir, subsets=(prop,), on_error=on_error)
        for kind, fn, features in (
                ("pairwise", _pairwise_fn, {"inputs": prompt_feature, "chosen": response_feature,
                                            "rejected": response_feature}),
                ("prompts", _prompts_fn, {"inputs": prompt_feature})):
            name = f"{prefix}_{prop}_{kind}"
            seqio.TaskRegistry.remove(name)
            seqio.TaskRegistry.add(
                name,
                source=seqio.FunctionDataSource(functools.partial(fn, **kwargs), splits=SPLITS),
                output_features=features,
                preprocessors=[seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                               seqio.preprocessors.append_eos,
                               seqio.preprocessors.truncate_inputs_left])
            names.append(name)
    return names
