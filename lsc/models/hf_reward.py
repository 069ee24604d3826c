"""Reward models from Hugging Face sequence-classification checkpoints.

A published reward model is usually a ``<Family>ForSequenceClassification`` checkpoint with one
label: the decoder backbone (``model.*`` tensors, as in the causal LM) and a bias-free score head
``score.weight [1, E]``. transformers reads the score of the **rightmost token that is not
``pad_token_id``** (``(arange(L) * (ids != pad)).argmax(-1)``; position 0 for a row of pads).

Here the checkpoint becomes a :class:`lsc.models.heads.RewardModel` over a
:class:`lsc.models.decoder.DecoderLM` with ``pooling='last'``: its backbone's
``reward_features`` reads the final-normed hidden state at the last token ``!= pad_id`` of
``concat([prompt, response])``, the same token, and the head's kernel is ``score.weight.T`` with
a zero bias. The backbone has no LM head (``tie_embeddings=True``; the tied head is never used).
Rewards agree with transformers run on the same text with ``attention_mask = ids != pad`` (a
left-padded prompt followed by a right-padded response, or the text right-padded; rotary
positions skip the pads).

Supported architectures: :data:`ARCHITECTURES` (the decoder families of
:mod:`lsc.models.hf_decoder`) and ``T5ForSequenceClassification``
(:data:`T5_ARCHITECTURE`: a :class:`lsc.models.t5_classifier.T5ClassifierBackbone`, whose
features are ``tanh(dense(h))`` at the last EOS of the text, and ``out_proj`` as the head; see
that module). Anything else, more than one label, or a decoder checkpoint without a
``pad_token_id`` (transformers cannot batch it either; pass ``pad_id``) raises
:class:`lsc.models.hf_io.CheckpointError` naming the field.

Use in the alignment jobs: :func:`lsc.models.hf_convert.convert_reward_model` (or ``python -m
lsc.models.hf_convert --checkpoint=DIR --workdir=DIR``) writes a directory laid out like a
finished ``train_rm`` run, which ``rewards.properties.<name>.rm_workdir`` accepts as is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Tuple

import numpy as np
from flax import nnx

from lsc.models import heads, hf_io
from lsc.models.decoder import DecoderConfig, DecoderLM
from lsc.models.hf_decoder import config_from_hf, convert_tensors, expected_tensors
from lsc.models.hf_io import CheckpointError

T5_ARCHITECTURE = "T5ForSequenceClassification"
T5_HEAD_TENSORS = ("classification_head.dense.weight", "classification_head.dense.bias",
                   "classification_head.out_proj.weight", "classification_head.out_proj.bias")

# Sequence-classification architectures of decoders and the model_type each must have.
ARCHITECTURES = {
    "LlamaForSequenceClassification": "llama",
    "MistralForSequenceClassification": "mistral",
    "Qwen2ForSequenceClassification": "qwen2",
    "Qwen3ForSequenceClassification": "qwen3",
    "Gemma2ForSequenceClassification": "gemma2",
    "Gemma3TextForSequenceClassification": "gemma3_text",
}


def architecture(hf: Mapping[str, Any]) -> str:
    """The one supported sequence-classification architecture of a ``config.json`` dict."""
    archs = hf.get("architectures") or []
    if len(archs) != 1 or (archs[0] not in ARCHITECTURES and archs[0] != T5_ARCHITECTURE):
        raise CheckpointError(
            f"config.json: architectures={archs!r} is not a supported sequence-classification "
            f"checkpoint (supported: {sorted(ARCHITECTURES) + [T5_ARCHITECTURE]})"
        )
    return archs[0]


def _check_one_label(hf: Mapping[str, Any]) -> None:
    labels = _num_labels(hf)
    if labels != 1:
        raise CheckpointError(f"config.json: id2label/num_labels gives {labels} labels; a reward "
                              "model has exactly 1")


def _num_labels(hf: Mapping[str, Any]) -> int:
    if hf.get("id2label"):
        return len(hf["id2label"])
    return int(hf.get("num_labels", 2))


def reward_config_from_hf(
    hf: Mapping[str, Any],
    *,
    pad_id: Optional[int] = None,
    dtype: str = "float32",
    param_dtype: str = "float32",
) -> Tuple[DecoderConfig, str]:
    """``(backbone config, architecture)`` of a sequence-classification ``config.json`` dict."""
    arch = architecture(hf)
    if arch == T5_ARCHITECTURE:
        raise CheckpointError(f"config.json: {arch} has no decoder config; use "
                              "load_reward_model or load_t5_classifier")
    if hf.get("model_type") != ARCHITECTURES[arch]:
        raise CheckpointError(f"config.json: model_type={hf.get('model_type')!r} does not match "
                              f"architectures=[{arch!r}] (expected {ARCHITECTURES[arch]!r})")
    _check_one_label(hf)
    if pad_id is None and hf.get("pad_token_id") is None:
        raise CheckpointError("config.json: pad_token_id is null; the reward is read at the last "
                              "token that is not padding, so give pad_id explicitly")
    cfg = config_from_hf(hf, pad_id=pad_id, dtype=dtype, param_dtype=param_dtype)
    # No LM head: the backbone ties it to the embedding and never uses it.
    return dataclasses.replace(cfg, tie_embeddings=True, final_logit_softcap=0.0), arch


def create_reward_model(cfg: DecoderConfig) -> heads.RewardModel:
    """An (untrained) reward model of backbone ``cfg`` with the last-token head."""
    return heads.RewardModel(DecoderLM(cfg, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1), pooling="last")


def load_reward_model(
    path: str,
    *,
    pad_id: Optional[int] = None,
    dtype: str = "float32",
    param_dtype: str = "float32",
) -> Tuple[heads.RewardModel, DecoderConfig]:
    """Loads sequence-classification checkpoint directory ``path``; returns ``(reward model,
    backbone config)`` (a :class:`DecoderConfig`, or a :class:`lsc.models.t5.T5Config` for
    T5). ``model(prompt int32[B, P], response int32[B, R]) -> float32[B]``. ``pad_id`` is
    ignored for T5 (its ``pad_token_id`` is used)."""
    hf = hf_io.read_hf_config(path)
    if architecture(hf) == T5_ARCHITECTURE:
        return load_t5_classifier(path, dtype=dtype, param_dtype=param_dtype)
    cfg, _ = reward_config_from_hf(hf, pad_id=pad_id, dtype=dtype, param_dtype=param_dtype)
    reader = hf_io.TensorReader(path)
    expected = expected_tensors(cfg, lm_head=False)
    expected["score.weight"] = (1, cfg.d_model)
    hf_io.check_tensors(reader, expected, ignorable=lambda n: n.endswith("rotary_emb.inv_freq"),
                        source=path)
    backbone = convert_tensors(reader, cfg, lm_head=False, check=False)
    score = np.asarray(reader.get("score.weight"), np.float32)
    head = {"proj": {"kernel": score.T, "bias": np.zeros((1,), np.float32)}}
    model = hf_io.fill_module(lambda: create_reward_model(cfg),
                              {"backbone": backbone, "head": head}, source=path)
    return model, cfg


class _Prefixed:
    """The tensors of ``reader`` whose names start with ``prefix``, named without it."""

    def __init__(self, reader, prefix: str):
        self.reader = reader
        self.full = {n[len(prefix):]: n for n in reader.names() if n.startswith(prefix)}

    def names(self):
        return sorted(self.full)

    def shape(self, name: str):
        return self.reader.shape(self.full[name])

    def get(self, name: str):
        return self.reader.get(self.full[name])


def create_t5_classifier(cfg):
    """An (untrained) reward model on a :class:`T5ClassifierBackbone` of T5 config ``cfg``."""
    from lsc.models import t5_classifier

    return heads.RewardModel(t5_classifier.T5ClassifierBackbone(cfg, rngs=nnx.Rngs(0)),
                             rngs=nnx.Rngs(1), pooling="last")


def load_t5_classifier(path: str, *, dtype: str = "float32", param_dtype: str = "float32"):
    """``(reward model, T5Config)`` of a one-label ``T5ForSequenceClassification`` checkpoint:
    ``transformer.*`` is the T5 (no LM head), ``classification_head.dense`` the backbone's
    ``dense`` layer and ``classification_head.out_proj`` the reward head."""
    from lsc.models import hf_t5

    arch = (T5_ARCHITECTURE,)
    _check_one_label(hf_t5.read_t5_config(path, arch))
    cfg = hf_t5.load_t5_config(path, architectures=arch, compute_dtype=dtype,
                               param_dtype=param_dtype)
    reader = hf_io.TensorReader(path)
    rest = sorted(n for n in reader.names() if not n.startswith("transformer."))
    missing = sorted(set(T5_HEAD_TENSORS) - set(rest))
    extra = sorted(set(rest) - set(T5_HEAD_TENSORS))
    if missing or extra:
        raise CheckpointError(f"{path}: classification head tensors do not match: "
                              f"missing {missing}, unexpected {extra}")
    params = hf_t5.convert_tensors(_Prefixed(reader, "transformer."), cfg, source=path)
    d = cfg.d_model
    t = lambda n: np.asarray(reader.get(n), np.float32)  # noqa: E731
    for name, shape in zip(T5_HEAD_TENSORS, ((d, d), (d,), (1, d), (1,))):
        if tuple(reader.shape(name)) != shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {reader.shape(name)}, "
                                  f"expected {shape}")
    flat = {("backbone", "t5") + tuple(k): v for k, v in params.items()}
    flat.update({
        ("backbone", "dense", "kernel"): t("classification_head.dense.weight").T,
        ("backbone", "dense", "bias"): t("classification_head.dense.bias"),
        ("head", "proj", "kernel"): t("classification_head.out_proj.weight").T,
        ("head", "proj", "bias"): t("classification_head.out_proj.bias"),
    })
    return hf_io.fill_module(lambda: create_t5_classifier(cfg), flat, source=path), cfg
