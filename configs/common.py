"""Config sections shared by the experiment files (``from configs import common``).

Every experiment file in ``configs/`` builds its whole config in its own ``get_config(arg)`` and
takes from here only the sections that several files share, each written once:

* :func:`world` -- the synthetic gold world (:class:`lsc.data.world.WorldConfig`): sizes per
  experiment, the world's knobs from the dataclass defaults;
* :func:`optim` -- ``lsc.train.optim`` fields: :data:`lsc.train.optim.DEFAULTS` plus overrides;
* :func:`cpu_train` -- ``lsc.train.loop.TrainConfig`` fields for a minute on two CPU cores;
* :func:`small_decoder`, :func:`model` -- the synthetic world's small decoder, a model section;
* :func:`reference`, :func:`rewards` -- the ``rewards`` section of the alignment experiments
  (:data:`RLHF_VARIANTS`: the paper's raw vs LSC utilities); the harmlessness reference is a
  refusal in the data's own words: :data:`lsc.data.world.REFUSAL` on the synthetic world
  (the default), :data:`HH_REFUSAL` on hh-rlhf;
* :func:`mesh`, :func:`parallel` -- device mesh and multi-process start-up.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import ml_collections

from configs.models import decoder
from lsc.data import world as world_lib
from lsc.train import optim as optim_lib


def world(pairs: Tuple[int, int], sft: Tuple[int, int], prompts: Tuple[int, int]
          ) -> ml_collections.ConfigDict:
    """The synthetic world with ``(train, test)`` sizes of its preference pairs (per property),
    SFT demonstrations and prompts (alignment, evaluation); its knobs (harmful fractions, label
    temperature) are :class:`lsc.data.world.WorldConfig`'s defaults."""
    fields = dataclasses.asdict(world_lib.WorldConfig())
    fields.update(pairs_train=pairs[0], pairs_test=pairs[1], sft_train=sft[0], sft_test=sft[1],
                  prompts_train=prompts[0], prompts_test=prompts[1])
    return ml_collections.ConfigDict(fields)


def optim(**overrides) -> ml_collections.ConfigDict:
    """``lsc.train.optim`` fields: the library defaults (AdamW, constant schedule after warm-up,
    global-norm clipping at 1) with ``overrides``."""
    unknown = sorted(set(overrides) - set(optim_lib.DEFAULTS))
    if unknown:
        raise ValueError(f"configs.common.optim: unknown fields {unknown}; known: "
                         f"{sorted(optim_lib.DEFAULTS)}")
    return ml_collections.ConfigDict(dict(optim_lib.DEFAULTS, **overrides))


def cpu_train() -> ml_collections.ConfigDict:
    """``lsc.train.loop.TrainConfig`` fields for a run of about a minute on two CPU cores."""
    return ml_collections.ConfigDict(dict(
        num_steps=400, batch_size=32, grad_accum_steps=1, log_every=20, eval_every=200,
        save_every=100, keep_checkpoints=2, progress=True))


def small_decoder() -> ml_collections.ConfigDict:
    """The synthetic world's small decoder (its tokenizer has 233 pieces, 211 in world version 1;
    the vocabulary is padded to 256)."""
    arch = decoder.get_config("tiny")
    arch.update(dict(vocab_size=256, d_model=64, num_layers=2, num_heads=4, num_kv_heads=4,
                     head_dim=16, mlp_dim=128, init_std=0.02))
    return arch


def model(kind: str, arch: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A model section: ``kind`` ('decoder' or 't5'), ``arch`` (its config fields) and
    ``init_from`` (a checkpoint directory; empty: random initialisation)."""
    return ml_collections.ConfigDict(dict(kind=kind, init_from="", arch=arch))


def mesh() -> ml_collections.ConfigDict:
    """Every device on the ``data`` axis."""
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})


def parallel() -> ml_collections.ConfigDict:
    """``lsc.parallel.distributed`` fields (strings, so any value can be given on the command
    line). All empty: a single process, unless the launch scripts' ``LSC_*`` environment says
    otherwise; ``distributed='auto'``: JAX's own cluster detection (TPU pods, SLURM)."""
    p = ml_collections.ConfigDict()
    p.coordinator_address = ""  # host:port of process 0
    p.num_processes = ""
    p.process_id = ""
    p.local_device_ids = ""  # e.g. "0,1"; empty: every local device
    p.distributed = ""  # "auto" or empty
    return p


# The paper's alignment utilities (Wang et al. 2024, section 5):
#   helpful_raw  helpfulness reward as is ('raw')
#   helpful_lsc  log sigma(r - r_ref), r_ref the 85th percentile of base-policy samples
#   hh_raw_sum   helpful + harmless raw rewards summed ('raw')
#   hh_lsc_sum   sum of LSC rewards (logical AND): helpfulness against its 85th percentile,
#                harmlessness against the reward of a refusal (the ``refusal`` of rewards():
#                lsc.data.world.REFUSAL on the synthetic world, HH_REFUSAL on hh-rlhf)
RLHF_VARIANTS = ("helpful_raw", "helpful_lsc", "hh_raw_sum", "hh_lsc_sum")
# The refusal of the configs on real hh-rlhf data (configs/rlhf/paper.py, configs/best_of_k/
# paper.py). The synthetic world's case-sensitive word-level tokenizer does not know its words
# (they tokenise to <unk>, which lsc.align.references.fixed_response_tokens refuses), so the
# synthetic configs use the world's own refusal, lsc.data.world.REFUSAL.
HH_REFUSAL = "I'm sorry, but I can't help with that."


def reference(source: str, quantile: float = 0.85, num_samples: int = 16,
              response: str = world_lib.REFUSAL) -> ml_collections.ConfigDict:
    """``rewards.properties.<p>.reference`` (``lsc.align.utility.ReferenceSpec`` fields);
    ``response`` is the text of the ``fixed_response`` source (default: the synthetic world's
    refusal; :data:`HH_REFUSAL` on hh-rlhf)."""
    ref = ml_collections.ConfigDict()
    ref.source = source  # quantile | predictor | fixed_response | none
    ref.quantile = quantile
    ref.num_samples = num_samples
    ref.response = response
    ref.predictor_workdir = ""
    return ref


def rewards(variant: str, num_samples: int, refusal: str = world_lib.REFUSAL
            ) -> ml_collections.ConfigDict:
    """The ``rewards`` section of RLHF variant ``variant`` (one of :data:`RLHF_VARIANTS`), with
    ``num_samples`` base-policy samples per prompt for the quantile references and ``refusal``
    the fixed response of the harmlessness reference: text in the data's tokenizer's vocabulary,
    :data:`lsc.data.world.REFUSAL` (the default) on the synthetic world, :data:`HH_REFUSAL`
    on hh-rlhf."""
    if variant not in RLHF_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {RLHF_VARIANTS}")
    out = ml_collections.ConfigDict()
    out.weights = ()
    # Base-policy samples of the quantile references (a reference_samples.npz of the reference
    # predictors, lsc.train.predictor); empty: drawn from pi0 before RL.
    out.reference_samples = ""
    out.properties = ml_collections.ConfigDict()
    lsc = variant.endswith("lsc") or variant.endswith("lsc_sum")
    out.method = "lsc_sum" if lsc else "raw"
    helpful = ml_collections.ConfigDict()
    helpful.rm_workdir = ""  # a finished train_rm run for "helpful"
    helpful.reference = reference("quantile" if lsc else "none", 0.85, num_samples, refusal)
    out.properties.helpful = helpful
    if variant.startswith("hh"):
        harmless = ml_collections.ConfigDict()
        harmless.rm_workdir = ""  # a finished train_rm run for "harmless"
        harmless.reference = reference("fixed_response" if lsc else "none", 0.5, num_samples,
                                       refusal)
        out.properties.harmless = harmless
    return out
