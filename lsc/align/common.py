"""What the alignment jobs share: the base policy, the reward models, predictors,
the tokenizer and the prompt tables, built from a config.

Config fields read here (see ``configs/rlhf/synthetic.py`` for a complete example):

* ``data.source`` ('synthetic' | 'hh_rlhf'), ``data.path``, ``data.on_error``, ``data.tokenizer``
  (empty: the policy's own, ``<policy.workdir>/tokenizer`` of a converted checkpoint, when it holds
  one, else the synthetic world's; see :func:`default_tokenizer`), ``data.prompt_len``, ``data.response_len`` (the response budget ``R`` of every sample),
  ``data.chat_template`` (``'auto'``, the default: the policy's own template when
  ``policy.workdir`` is a converted checkpoint whose ``tokenizer/`` holds one, else none;
  ``'none'`` or empty: prompts are tokenized as hh-rlhf transcripts; a checkpoint directory:
  prompts are rendered through its chat template first; see :func:`chat_template_dir` and
  :mod:`lsc.data.chat_template`), and ``world.*`` for the synthetic world;
* ``policy.workdir`` -- a finished ``train_sft`` run whose exported model is the base policy
  ``pi0`` (and the initial RL policy); empty: a randomly initialised ``policy.model`` (``kind``,
  ``arch``; only for smoke tests and benchmarks, with a logged warning);
* ``rewards.properties.<name>.rm_workdir`` -- a finished ``train_rm`` run per property; empty: a
  randomly initialised reward model of ``rm_model`` (``kind``, ``arch``; seed ``seed + 100 + i``
  for property ``i``), again with a warning;
* ``rewards.properties.<name>.reference.predictor_workdir`` -- a finished ``train_predictor`` run
  for the predictor source.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple, Optional, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lsc.align import utility as utility_lib
from lsc.data import chat_template as chat_template_lib
from lsc.data import hh_rlhf, pipeline
from lsc.train import common as train_common
from lsc.train import run_models

RANDOM_RM_SEED_OFFSET = 100
PROMPT_SPLITS = ("train", "test")  # the ``split`` of tokenizer_and_prompts
POLICY_TOKENIZER_DIR = "tokenizer"  # where lsc.models.hf_convert copies a checkpoint's tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model")  # what load_tokenizer reads


def policy_tokenizer_dir(config: ml_collections.ConfigDict) -> str:
    """``<policy.workdir>/tokenizer`` when it exists (empty otherwise)."""
    policy = config.get("policy")
    workdir = (policy.get("workdir", "") if policy is not None else "") or ""
    candidate = os.path.join(workdir, POLICY_TOKENIZER_DIR) if workdir else ""
    return candidate if candidate and os.path.isdir(candidate) else ""


def default_tokenizer(config: ml_collections.ConfigDict, source_default: str) -> str:
    """The tokenizer used when ``data.tokenizer`` is empty: the policy's
    (:func:`policy_tokenizer_dir`, when it holds one of :data:`TOKENIZER_FILES`), else
    ``source_default`` (the data source's: the synthetic world's model, or empty)."""
    directory = policy_tokenizer_dir(config)
    if directory and any(os.path.isfile(os.path.join(directory, f)) for f in TOKENIZER_FILES):
        return directory
    return source_default


def tokenizer_and_prompts(config: ml_collections.ConfigDict, workdir: str, split: str):
    """``(tokenizer, prompt table, prompt texts)`` of ``split`` ('train': the alignment prompts;
    'test': the evaluation prompts); the table is a :class:`lsc.data.pipeline.TokenizedData` of
    kind 'prompts'. With ``config.data.chat_template`` set the table holds the prompts rendered
    through that chat template (:func:`render_chat_prompts`) and its prompt ids are those of the
    rendered texts; the returned texts stay the transcripts."""
    source = config.data.source
    stats = hh_rlhf.ReadStats()
    if source == "synthetic":
        files, tok_path = train_common.world_files(config, workdir)
        prompts, _ = hh_rlhf.read_prompts(files.prompts[split], config.data.on_error, stats)
    elif source == "hh_rlhf":
        tok_path = ""
        subsets = config.data.get("subsets", ("helpful", "harmless"))
        prompts, _ = hh_rlhf.read_prompts(hh_rlhf.subset_files(config.data.path, subsets, split),
                                          config.data.on_error, stats)
        if split == "train":
            _, prompts = hh_rlhf.split_in_half(prompts, key=lambda p: p)  # the alignment half
    else:
        raise ValueError(f"config.data.source={source!r} is not supported by the alignment jobs; "
                         "use 'synthetic' or 'hh_rlhf'")
    hh_rlhf.finish_read(stats, workdir, hh_rlhf.max_skip_fraction(config.data),
                        write=jax.process_index() == 0)
    if not prompts:
        raise ValueError(f"no {split} prompts for data.source={source!r}")
    tok_path = default_tokenizer(config, tok_path)
    tok = train_common.load_tokenizer(config, tok_path)
    logging.log_first_n(logging.INFO, "tokenizer %s (vocabulary %d)", 1,
                        config.data.get("tokenizer", "") or tok_path, tok.vocab_size)
    table = pipeline.tokenize_prompts(render_chat_prompts(config, prompts, tok), tok,
                                      int(config.data.prompt_len))
    return tok, table, list(prompts)


CHAT_TEMPLATE_AUTO = "auto"
CHAT_TEMPLATE_NONE = ("", "none")


def chat_template_dir(config: ml_collections.ConfigDict) -> str:
    """The directory whose chat template renders the alignment prompts; empty for none.

    ``config.data.chat_template``: ``'auto'`` (also when the field is absent) is
    ``<policy.workdir>/tokenizer`` when that directory holds a chat template (a checkpoint
    converted by :mod:`lsc.models.hf_convert` from a chat model) and none otherwise (a
    ``train_sft`` run, a base model without a template, a random policy); ``'none'`` or empty is
    none; anything else is the directory itself (checked when the prompts are rendered).
    """
    value = str(config.data.get("chat_template", CHAT_TEMPLATE_AUTO) or "")
    if value.lower() in CHAT_TEMPLATE_NONE:
        return ""
    if value.lower() != CHAT_TEMPLATE_AUTO:
        return value
    candidate = policy_tokenizer_dir(config)
    if not candidate:
        return ""
    try:
        chat_template_lib.load_chat_template(candidate)
    except chat_template_lib.ChatTemplateError:
        return ""
    return candidate


def render_chat_prompts(config: ml_collections.ConfigDict, prompts, tok) -> List[str]:
    """``prompts`` rendered through the chat template of :func:`chat_template_dir` (with the
    generation prompt); the prompts unchanged when it is empty.

    The template's leading BOS text is dropped when ``tok`` puts the BOS id first itself, so a
    prompt starts with one BOS, as ``transformers``' ``apply_chat_template`` tokenizes it.
    Left-truncation to ``data.prompt_len`` drops leading tokens (rendered prompts have no
    ``\\n\\nHuman:`` turn boundaries).
    """
    path = chat_template_dir(config)
    if not path:
        return list(prompts)
    logging.log_first_n(logging.INFO, "alignment prompts rendered through the chat template "
                        "of %s (data.chat_template=%r)", 1, path,
                        config.data.get("chat_template", CHAT_TEMPLATE_AUTO))
    try:
        template = chat_template_lib.load_chat_template(path)
        return chat_template_lib.render_prompts(template, prompts,
                                                strip_bos=tok.bos_id is not None)
    except chat_template_lib.ChatTemplateError as e:
        raise ValueError(f"config.data.chat_template={path!r}: {e}") from e


class JobModels(NamedTuple):
    """The models of an alignment job and their records (:mod:`lsc.train.run_models`, in the
    order policy, reward models, predictors). Without loading, the models are None."""

    pi0: Optional[nnx.Module]
    reward_models: List[Optional[nnx.Module]]
    predictors: List[Optional[nnx.Module]]
    records: List[run_models.ModelRecord]


def job_models(config: ml_collections.ConfigDict, spec: utility_lib.UtilitySpec,
               vocab_size: int, *, load: bool = True, abstract: bool = False,
               shardings=None) -> JobModels:
    """The base policy ``pi0`` (``policy.workdir``, else a random ``policy.model``), one reward
    model per property (``rm_workdir``, else a random ``rm_model`` with seed
    ``seed + RANDOM_RM_SEED_OFFSET + i`` and a non-zero head, so rewards vary) and per property
    the predictor of ``reference.predictor_workdir`` or None; each logged once.

    ``load=False`` reads no weights and builds nothing (only the run directories'
    ``config.json`` and abstract models, for the records); ``abstract=True`` returns the
    abstract models (``nnx.eval_shape``: shapes and dtypes, no weights read or initialised).
    Errors name the config field and the run directory at fault; ``vocab_size`` is the
    tokenizer's (0: not checked). ``shardings`` places the loaded models
    (:func:`lsc.train.run_models.load_run_model`; None: each whole on one device)."""
    records: List[run_models.ModelRecord] = []

    def run_dir(role, source, workdir, reward):
        if abstract:
            create, rec = run_models.describe_run_model(role, source, workdir, vocab_size,
                                                        reward=reward)
            records.append(rec)
            return nnx.eval_shape(create)
        if load:
            built = run_models.load_run_model(role, source, workdir, vocab_size, reward=reward,
                                              shardings=shardings)
            records.append(built.record)
            return built.model
        records.append(run_models.describe_run_model(role, source, workdir, vocab_size,
                                                     reward=reward)[1])
        return None

    def random(role, source, model_config, seed, **kwargs):
        create, _, rec = run_models.describe_config_model(role, source, model_config, vocab_size,
                                                          seed, **kwargs)
        records.append(rec)
        if abstract:
            return nnx.eval_shape(create)
        if not load:
            return None
        logging.info("built %s", rec.summary())
        return create()

    policy_dir = config.policy.get("workdir", "") or ""
    if policy_dir:
        pi0 = run_dir("policy", "policy.workdir", policy_dir, False)
    else:
        if load and not abstract:
            logging.warning("policy.workdir is empty: the base policy is a RANDOMLY INITIALISED "
                            "%s (smoke tests and benchmarks only)", config.policy.model.kind)
        pi0 = random("policy", "policy.model", config.policy.model, int(config.seed))
    rms: List[Optional[nnx.Module]] = []
    for i, (name, workdir) in enumerate(zip(spec.properties, spec.rm_workdirs)):
        role = f"reward_model/{name}"
        if workdir:
            rms.append(run_dir(role, f"rewards.properties.{name}.rm_workdir", workdir, True))
            continue
        if load and not abstract:
            logging.warning("rewards.properties.%s.rm_workdir is empty: a RANDOMLY INITIALISED "
                            "reward model scores %r (smoke tests and benchmarks only)", name, name)
        rms.append(random(role, "rm_model", config.rm_model,
                          int(config.seed) + RANDOM_RM_SEED_OFFSET + i, reward=True,
                          head_init=nnx.initializers.normal(1.0)))
    preds: List[Optional[nnx.Module]] = []
    for name, ref in zip(spec.properties, spec.references):
        if ref.source != "predictor":
            preds.append(None)
            continue
        source = f"rewards.properties.{name}.reference.predictor_workdir"
        if not ref.predictor_workdir:
            raise ValueError(f"config.{source} is empty; give a finished train_predictor run")
        preds.append(run_dir(f"predictor/{name}", source, ref.predictor_workdir, True))
    return JobModels(pi0, rms, preds, records)


def split_models(models) -> Tuple[tuple, tuple]:
    """``(graphdefs, states)`` of a list of modules (None stays None)."""
    gds, sts = [], []
    for m in models:
        if m is None:
            gds.append(None)
            sts.append(None)
        else:
            gd, st = nnx.split(m)
            gds.append(gd)
            sts.append(st)
    return tuple(gds), tuple(sts)


def decode(tok, tokens: np.ndarray) -> List[str]:
    """Texts of right-padded token rows (everything from the first EOS or pad on is dropped).

    Ids outside the tokenizer's vocabulary (a model's embedding table may be larger) are dropped
    and counted in the log."""
    out = []
    dropped = 0
    for row in np.asarray(tokens):
        ids = []
        for t in row.tolist():
            if t in (tok.eos_id, tok.pad_id):
                break
            if not 0 <= t < tok.vocab_size:
                dropped += 1
                continue
            ids.append(int(t))
        out.append(tok.decode(ids))
    if dropped:
        logging.warning("decode: dropped %d token ids outside the tokenizer's vocabulary (%d)",
                        dropped, tok.vocab_size)
    return out


def host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))
