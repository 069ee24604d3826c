"""Hugging Face checkpoints as run directories that the alignment jobs accept as they are.

The alignment and evaluation jobs read a finished run's ``config.json`` (``model.kind``,
``model.arch``, ``model.pooling``, ``seed``) and its exported ``model/`` (see
:func:`lsc.train.checkpoint.load_model`). A converted directory has exactly these, so

* a causal LM (``<Family>ForCausalLM``, :mod:`lsc.models.hf_decoder`) converted with
  :func:`convert_causal_lm` stands in for a ``train_sft`` run: ``policy.workdir``;
* a one-label sequence classifier (:data:`lsc.models.hf_reward.ARCHITECTURES`, or
  ``T5ForSequenceClassification`` as ``model.kind='t5_classifier'``) converted with
  :func:`convert_reward_model` stands in for a ``train_rm`` run:
  ``rewards.properties.<name>.rm_workdir`` (and ``reference.rm_workdir``), so LSC and
  sigma_AND / sigma_OR run on a published reward model with no training.

``config.json`` also records ``source`` (the checkpoint directory and its architecture). Those
of the tokenizer files :data:`TOKENIZER_FILES` that the checkpoint has are copied to
``<workdir>/tokenizer`` (:func:`copy_tokenizer_files`). An alignment job whose ``policy.workdir``
is such a directory tokenizes with that tokenizer unless ``data.tokenizer`` names another, which
must then give the same ids.

Command line (the kind is read from ``config.json``'s ``architectures``)::

  python -m lsc.models.hf_convert --checkpoint=/ckpt/gemma-2-2b-it --workdir=runs/policy_gemma2
  python -m lsc.models.hf_convert --checkpoint=/ckpt/some-rm --workdir=runs/rm_helpful_hf
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from typing import List, Optional

from flax import nnx

from lsc.models import hf_decoder, hf_io, hf_reward
from lsc.models.decoder import DecoderConfig

# Seed recorded in a converted workdir's config.json (nothing random is drawn from it).
CONVERTED_SEED = 0
# The tokenizer files copied from a checkpoint (those it has) into <workdir>/TOKENIZER_DIR.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model",
                   "added_tokens.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "chat_template.jinja")
TOKENIZER_DIR = "tokenizer"


def copy_tokenizer_files(checkpoint: str, workdir: str) -> List[str]:
    """Copies those of :data:`TOKENIZER_FILES` that directory ``checkpoint`` has into
    ``<workdir>/tokenizer`` (created only when there is one); returns their names."""
    found = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(checkpoint, f))]
    if found:
        os.makedirs(os.path.join(workdir, TOKENIZER_DIR), exist_ok=True)
        for f in found:
            shutil.copyfile(os.path.join(checkpoint, f), os.path.join(workdir, TOKENIZER_DIR, f))
    return found


def _write_run_dir(model: nnx.Module, cfg, checkpoint: str, workdir: str, architecture: str,
                   reward: bool) -> str:
    from lsc.train import checkpoint as checkpoint_lib

    os.makedirs(workdir, exist_ok=True)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    checkpoint_lib.export_model(workdir, params, rest)
    copy_tokenizer_files(checkpoint, workdir)
    kind = "decoder" if isinstance(cfg, DecoderConfig) else "t5_classifier"
    model_section = {"kind": kind, "init_from": "", "arch": dataclasses.asdict(cfg)}
    if reward:
        model_section["pooling"] = "last"
    run_cfg = {
        "seed": CONVERTED_SEED,
        "model": model_section,
        "source": {"hf_checkpoint": os.path.abspath(checkpoint), "architecture": architecture},
    }
    tmp = os.path.join(workdir, "config.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(run_cfg, f, indent=2)
    os.replace(tmp, os.path.join(workdir, "config.json"))
    return workdir


def _architecture(hf: dict) -> str:
    archs = hf.get("architectures") or []
    if len(archs) != 1:
        raise hf_io.CheckpointError(
            f"config.json: architectures={archs!r}; one architecture is needed to tell a causal "
            "LM from a sequence classifier")
    return archs[0]


def convert_causal_lm(checkpoint: str, workdir: str, *, pad_id: Optional[int] = None,
                      dtype: str = "float32", param_dtype: str = "float32") -> str:
    """Writes ``workdir`` as a ``train_sft``-like run of causal-LM ``checkpoint``."""
    hf = hf_io.read_hf_config(checkpoint)
    arch = _architecture(hf)
    if not arch.endswith("ForCausalLM"):
        raise hf_io.CheckpointError(f"config.json: architectures=[{arch!r}] is not a causal "
                                         "LM (...ForCausalLM)")
    model, cfg = hf_decoder.load_decoder(checkpoint, pad_id=pad_id, dtype=dtype,
                                         param_dtype=param_dtype)
    return _write_run_dir(model, cfg, checkpoint, workdir, arch, reward=False)


def convert_reward_model(checkpoint: str, workdir: str, *, pad_id: Optional[int] = None,
                         dtype: str = "float32", param_dtype: str = "float32") -> str:
    """Writes ``workdir`` as a ``train_rm``-like run of sequence-classification ``checkpoint``
    (``model.pooling='last'``: the reward at the last non-pad token, as transformers)."""
    arch = hf_reward.architecture(hf_io.read_hf_config(checkpoint))
    model, cfg = hf_reward.load_reward_model(checkpoint, pad_id=pad_id, dtype=dtype,
                                             param_dtype=param_dtype)
    return _write_run_dir(model, cfg, checkpoint, workdir, arch, reward=True)


def convert(checkpoint: str, workdir: str, **kwargs) -> str:
    """:func:`convert_causal_lm` or :func:`convert_reward_model`, by ``architectures``."""
    arch = _architecture(hf_io.read_hf_config(checkpoint))
    if arch.endswith("ForCausalLM"):
        return convert_causal_lm(checkpoint, workdir, **kwargs)
    if arch.endswith("ForSequenceClassification"):
        return convert_reward_model(checkpoint, workdir, **kwargs)
    raise hf_io.CheckpointError(
        f"config.json: architectures=[{arch!r}] is neither a causal LM (...ForCausalLM; model "
        f"types {hf_decoder.SUPPORTED_MODEL_TYPES}) nor a supported reward model "
        f"({sorted(hf_reward.ARCHITECTURES) + [hf_reward.T5_ARCHITECTURE]})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lsc.models.hf_convert",
        description=__doc__.split("\n\n")[0],
        epilog=(f"Besides the model, copies into WORKDIR/{TOKENIZER_DIR}/ those of the tokenizer "
                f"files {', '.join(TOKENIZER_FILES)} that CHECKPOINT has (no other file). An "
                "alignment job whose policy.workdir is WORKDIR tokenizes with it unless "
                "data.tokenizer names another tokenizer, which must give the same ids."))
    parser.add_argument("--checkpoint", required=True,
                        help="a save_pretrained directory (config.json, safetensors weights)")
    parser.add_argument("--workdir", required=True,
                        help=f"the run directory to write (config.json, model/, {TOKENIZER_DIR}/)")
    parser.add_argument("--pad_id", type=int, default=None,
                        help="padding id (default: the checkpoint's pad_token_id)")
    parser.add_argument("--dtype", default="float32", help="compute dtype")
    parser.add_argument("--param_dtype", default="float32", help="parameter storage dtype")
    args = parser.parse_args(argv)
    print(convert(args.checkpoint, args.workdir, pad_id=args.pad_id, dtype=args.dtype,
                  param_dtype=args.param_dtype))


if __name__ == "__main__":
    main()
