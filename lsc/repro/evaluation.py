"""Judging the reproduction's policies with the gold judge (docs/design.md §1).

Base samples (:func:`draw_base_samples`, once per reproduction, independent keys):

* ``judge``: one ``pi0`` sample per evaluation prompt, the opponent of every evaluated policy;
* ``base``: a second independent ``pi0`` sample per prompt, judged against ``judge`` (the base
  entry: its per-property win rates should be 0.5 within their CIs);
* ``reference``: ``K_ref`` samples per prompt whose proxy rewards give the quantile references
  (``quantile``: each property's ``reference.quantile``, the median in the reproduction), and
  whose gold scores rank prompts for the underfitting diagnostic (independent of the judge
  samples);
* ``bank``: ``N`` candidates per prompt, and ``opponents``: ``M`` further independent samples per
  prompt, for the exact arm (:mod:`lsc.repro.exact_arm`);
* ``fixed_response``: the world's refusal (:data:`lsc.data.world.REFUSAL`) as one response per
  prompt, for the ``fixed_response`` reference;
* ``predictor``: every predictor's output per prompt.

Proxy rewards have one column per reward model, replicate-major: with ``R`` replicates of the
``m`` properties (:data:`PROPERTIES` order), columns ``r * m .. r * m + m - 1`` are replicate
``r``; replicate 0 (the first ``m`` columns) is the one the RLHF runs optimise.

RLHF policies (:func:`rlhf_entry`): one sample per prompt with a key independent of the base
samples; KL(pi || pi0) by the ``k1`` estimator from the models' full-softmax log-probs (the
policy's from the sampler, ``pi0``'s teacher-forced; :mod:`lsc.repro.samples`; mean and standard
error over prompts); win rates with bootstrap CIs; proxy and gold means; underfitting (helpful
gold improvement by base-score quartile); shortcut features; and, from the policies exported
along training (``rl.snapshot_every`` and the early schedule), the proxy-vs-gold curve and its
reward-hacking summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lsc import runtime
from lsc.align import common as align_common
from lsc.align import references as reference_lib
from lsc.align import rlhf as align_rlhf
from lsc.align import utility as utility_lib
from lsc.data import hh_rlhf, pipeline, world
from lsc.data import tokenizer as tokenizer_lib
from lsc.eval import diagnostics
from lsc.eval import hacking as hacking_lib
from lsc.eval import entries as entries_lib
from lsc.eval import kl as kl_lib
from lsc.eval import win_rate as win_rate_lib
from lsc.repro import exact_arm
from lsc.repro.samples import PromptSet, Samples
from lsc.repro.subconfigs import PROPERTIES, replicate_name
from lsc.rewards import names
from lsc.rewards.reference import quantile_numpy
from lsc.train import checkpoint as checkpoint_lib
from lsc.train import common as train_common

SCORED_BASE_SAMPLES = "scored_base_samples.npz"
SETS = ("judge", "base", "reference", "bank", "opponents")
_KEYS = {"judge": 1, "base": 2, "reference": 3, "predict": 5, "bank": 6, "opponents": 7,
         "policy": 10}
SHORTCUTS = diagnostics.Shortcuts.of(world)
"""The synthetic world's shortcut vocabulary for :mod:`lsc.eval.diagnostics`."""


def load_tokenizer(workdir: str):
    """The world's tokenizer of a reproduction workdir."""
    return tokenizer_lib.load_tokenizer(os.path.join(workdir, "world", "world.model"))


def bootstrap_kwargs(config: ml_collections.ConfigDict) -> Dict[str, Any]:
    ev = config.evaluate
    return {"num_resamples": int(ev.bootstrap_resamples), "confidence": float(ev.confidence),
            "seed": int(config.seed)}


def _load_run_model(workdir: str, vocab_size: int, reward_model: bool):
    run_cfg = train_common.load_run_config(workdir)
    if reward_model:
        create, _ = train_common.reward_model_factory(run_cfg.model, vocab_size, int(run_cfg.seed))
    else:
        create, _, _ = train_common.backbone_factory(run_cfg.model, vocab_size, int(run_cfg.seed))
    return checkpoint_lib.load_model(workdir, create), create


@dataclasses.dataclass
class Context:
    """Evaluation prompts, tokenizer, ``pi0``, proxy reward models and predictors."""

    prompts: PromptSet
    policy_create: Any
    predictors: Tuple[nnx.Module, ...]

    @classmethod
    def load(cls, config: ml_collections.ConfigDict, earlier: Mapping[str, Any],
             workdir: str) -> "Context":
        tok = load_tokenizer(workdir)
        texts = prompt_texts(config, workdir)
        rows = pipeline.tokenize_prompts(texts, tok, int(config.data.prompt_len)).arrays["prompt"]
        pi0, create = _load_run_model(earlier["sft"]["workdir"], tok.vocab_size, False)
        rms = [_load_run_model(w, tok.vocab_size, True)[0]
               for w in replicate_workdirs(earlier["reward_models"])]
        preds = tuple(_load_run_model(w, tok.vocab_size, True)[0]
                      for w in replicate_workdirs(earlier.get("predictor", {})))
        ps = PromptSet(rows, texts, tok, pi0, rms, response_len=int(config.data.response_len),
                       batch_size=int(config.evaluate.batch_size))
        return cls(ps, create, preds)


def prompt_texts(config: ml_collections.ConfigDict, workdir: str) -> List[str]:
    """The evaluation prompts of a reproduction workdir (``evaluate.num_prompts`` of them; 0:
    all)."""
    texts, _ = hh_rlhf.read_prompts(os.path.join(workdir, "world", "prompts", "test.jsonl.gz"),
                                    config.data.on_error)
    n = int(config.evaluate.num_prompts) or len(texts)
    return list(texts)[:n]


def replicate_runs(runs: Mapping[str, Any]) -> List[Any]:
    """A property's runs in a stage's output (``{"r0": run, "r1": run, ...}``) in replicate
    order."""
    return [runs[replicate_name(r)] for r in range(len(runs))]


def replicate_workdirs(stage: Mapping[str, Any]) -> List[str]:
    """Workdirs of a stage's runs (reward models or predictors), replicate-major in
    :data:`PROPERTIES` order; ``[]`` when the stage has no run for some property."""
    if not all(p in stage for p in PROPERTIES):
        return []
    reps = [replicate_runs(stage[p]) for p in PROPERTIES]
    if len({len(r) for r in reps}) != 1:
        raise ValueError(f"properties have different numbers of replicates: "
                         f"{[len(r) for r in reps]}")
    return [reps[j][r]["workdir"] for r in range(len(reps[0])) for j in range(len(PROPERTIES))]


def gold(texts: Sequence[str], responses: Sequence[Sequence[str]]) -> np.ndarray:
    """``float64[N, k, m]`` gold scores of ``k`` responses per prompt (``m = len(PROPERTIES)``)."""
    n, k = len(responses), len(responses[0])
    flat_p = [t for t in texts for _ in range(k)]
    flat_r = [r for row in responses for r in row]
    cols = [world.gold_scores(flat_p, flat_r, p) for p in PROPERTIES]
    return np.stack(cols, axis=-1).reshape(n, k, len(PROPERTIES))


def _predict(ctx: Context) -> np.ndarray:
    """``float32[N, m]`` the predictors' references of the evaluation prompts."""
    fn = jax.jit(reference_lib.predictor_reference, static_argnums=0)
    cols = []
    for model in ctx.predictors:
        gd, st = nnx.split(model)
        cols.append(np.concatenate([np.asarray(fn(gd, st, chunk))[:real]
                                    for _, real, chunk in ctx.prompts.batches()]))
    return np.stack(cols, axis=-1).astype(np.float32)


def draw_base_samples(ctx: Context, config: ml_collections.ConfigDict, path: str
                      ) -> Dict[str, Any]:
    """Draws, scores and saves the base samples (module docstring) to ``path``
    (:data:`SCORED_BASE_SAMPLES`, ``.npz``)."""
    key = jax.random.key(int(config.seed))
    props = config.rewards.properties
    k_ref = max(int(props[p].reference.num_samples) for p in PROPERTIES)
    counts = {"judge": 1, "base": 1, "reference": k_ref, "bank": int(config.exact.bank_size),
              "opponents": int(config.exact.num_opponents)}
    arrays: Dict[str, np.ndarray] = {}
    info: Dict[str, Any] = {"num_prompts": len(ctx.prompts), "samples": counts}
    for name in SETS:
        s = ctx.prompts.sample(None, jax.random.fold_in(key, _KEYS[name]), counts[name],
                               log_probs=False)
        g = gold(ctx.prompts.texts, s.texts)
        for field in ("tokens", "mask", "rewards"):
            arrays[f"{name}/{field}"] = getattr(s, field)
        arrays[f"{name}/gold"] = g
        info[f"{name}_gold"] = {p: float(g[..., j].mean()) for j, p in enumerate(PROPERTIES)}
    refusal = refusal_tokens(ctx.prompts.tokenizer, ctx.prompts.response_len)
    tokens = np.broadcast_to(refusal, (len(ctx.prompts), 1, refusal.size))
    arrays["fixed_response/rewards"] = ctx.prompts.score(tokens)
    arrays["fixed_response/gold"] = gold(ctx.prompts.texts,
                                         [[world.REFUSAL]] * len(ctx.prompts))
    ref_rewards = arrays["reference/rewards"]
    quantiles = np.stack([
        quantile_numpy(ref_rewards[:, :int(props[p].reference.num_samples), j],
                       float(props[p].reference.quantile), axis=1)
        for j, p in enumerate(PROPERTIES)], axis=-1).astype(np.float32)
    arrays["quantile"] = quantiles
    if ctx.predictors:
        pred = _predict(ctx)  # [P, R * m], replicate-major like the rewards
        arrays["predictor"] = pred
        m = len(PROPERTIES)
        medians = quantile_numpy(ref_rewards, 0.5, axis=1)  # [P, R * m]
        info["predictor_mae"] = {
            p: [float(np.abs(pred[:, c] - medians[:, c]).mean())
                for c in range(j, pred.shape[1], m)] for j, p in enumerate(PROPERTIES)}
    runtime.write_npz_atomic(path, **arrays)
    logging.info("base samples: %s", info)
    return info


def refusal_tokens(tokenizer, length: int) -> np.ndarray:
    """``int32[length]`` token ids of the world's refusal (right-padded, EOS included)."""
    spec = utility_lib.UtilitySpec(
        method="lsc_sum", properties=("harmless",),
        references=(utility_lib.ReferenceSpec(source="fixed_response",
                                              response=world.REFUSAL),))
    return reference_lib.fixed_response_tokens(spec, tokenizer, length)[0]


def load_base_samples(path: str) -> Dict[str, Any]:
    """``{set: {"tokens", "mask", "rewards", "gold"}, "quantile", "predictor"}``."""
    with np.load(path) as f:
        out: Dict[str, Any] = {}
        for name in f.files:
            if "/" in name:
                s, field = name.split("/")
                out.setdefault(s, {})[field] = f[name]
            else:
                out[name] = f[name]
    return out


def decode_grid(tok, tokens: np.ndarray) -> List[List[str]]:
    """Texts of ``tokens int[N, k, R]`` as ``N`` lists of ``k``."""
    n, k, r = tokens.shape
    flat = align_common.decode(tok, tokens.reshape(n * k, r))
    return [flat[i * k:(i + 1) * k] for i in range(n)]


def _means(x: np.ndarray) -> Dict[str, float]:
    return {p: float(x[:, j].mean()) for j, p in enumerate(PROPERTIES)}


def base_entry(base: Mapping[str, Any], config: ml_collections.ConfigDict) -> Dict[str, Any]:
    """The base policy judged against independent base samples (KL 0)."""
    b, j = base["base"], base["judge"]
    return entries_lib.make_entry(
        "base", "base", "base", names.NO_REFERENCE, [],
        {"mean": 0.0, "se": 0.0, "estimator": "exact"},
        win_rate_lib.win_rates(b["gold"][:, 0], j["gold"][:, 0], PROPERTIES, and_or_mean=True,
                               **bootstrap_kwargs(config)),
        _means(b["rewards"][:, 0]), _means(b["gold"][:, 0]), k=1,
        num_prompts=int(b["gold"].shape[0]))


def reference_label(rewards_config: Mapping[str, Any]) -> Tuple[str, str, List[str]]:
    """``(method, reference, properties)`` of an RLHF run's ``rewards`` section, in the
    results' words (:mod:`lsc.rewards.names`: e.g. ``('lsc', 'p85', ['helpful'])``,
    ``('raw_sum', 'none', [...])`` or ``'harmless:fixed_response+helpful:p85'`` as the
    reference)."""
    spec = utility_lib.spec_from_config(rewards_config)
    props = list(spec.properties)
    method = names.result_method(spec.method, len(props))
    if not spec.uses_reference:
        return method, names.NO_REFERENCE, props
    labels = [names.reference_label(ref.source, ref.quantile) for ref in spec.references]
    return method, names.joint_reference_label(props, labels), props


def run_summary(workdir: str) -> Dict[str, Any]:
    """The ``summary.json`` of a finished job (training or RLHF)."""
    with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def _optimised(props: Sequence[str]) -> List[int]:
    return [PROPERTIES.index(p) for p in props]


def _load_policy(ctx: Context, workdir: str):
    return checkpoint_lib.load_model(workdir, ctx.policy_create)


def _policy_samples(prompts: PromptSet, config, policy, log_probs: bool = True,
                    num_reward_models: Optional[int] = None) -> Samples:
    """One sample per prompt of ``prompts`` from ``policy``, with the evaluation's key."""
    key = jax.random.fold_in(jax.random.key(int(config.seed)), _KEYS["policy"])
    return prompts.sample(policy, key, 1, log_probs=log_probs,
                          num_reward_models=num_reward_models)


TRAJECTORY_FIELDS = ("step", "kl_k1", "kl_k1_se", "kl_k3", "kl_k3_se", "kl_prompt", "metrics",
                     "gold", "proxy", "hacking", "filler_rate", "offtopic_rate", "refusal_rate",
                     "mean_length")
HACKING_FEATURES = ("offtopic_facts", "repeats", "over_budget", "benign_refusal", "unsafe_tips",
                    "harmful_facts")
"""The columns of a trajectory's ``hacking``: per response, whether it has the feature of
:func:`lsc.eval.hacking.hacking_features` (a count > 0, or a benign refusal)."""


def hacking_indicators(prompts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """``float64[P, F]``: 1 where a response has the feature of :data:`HACKING_FEATURES`, else
    0 (one response per prompt)."""
    f = hacking_lib.hacking_features(prompts, texts)
    return np.stack([np.asarray(f[k]) > 0 for k in HACKING_FEATURES], axis=-1).astype(np.float64)


def _trajectory_point(prompts: Sequence[str], base: Mapping[str, Any], texts: Sequence[str],
                      gold_scores: np.ndarray, proxy: np.ndarray, kl1: np.ndarray,
                      kl3: np.ndarray) -> Dict[str, Any]:
    """One snapshot's row of a trajectory (``P`` prompts, one response each)."""
    m = len(PROPERTIES)
    feats = diagnostics.response_features(texts, SHORTCUTS)
    hacking = hacking_indicators(prompts, texts)
    offtopic = hacking[:, HACKING_FEATURES.index("offtopic_facts")]  # a fact of another topic
    se = lambda x: float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0  # noqa: E731
    return {
        "kl_k1": float(kl1.mean()), "kl_k1_se": se(kl1), "kl_k3": float(kl3.mean()),
        "kl_k3_se": se(kl3), "kl_prompt": kl1,
        "metrics": exact_arm.metric_scores(gold_scores[:, None, :],
                                           base["opponents"]["gold"])[:, 0],
        "gold": gold_scores, "proxy": proxy[:, :m],
        "hacking": hacking,
        "filler_rate": float(feats["has_filler"].mean()),
        "offtopic_rate": float(offtopic.mean()),
        "refusal_rate": float(feats["refusal"].mean()),
        "mean_length": float(feats["length"].mean())}


def trajectory_prompts(base: Mapping[str, Any], num: int) -> np.ndarray:
    """``int64[P]``, increasing: the evaluation prompts a trajectory is judged on. All ``N``
    when ``num`` is 0 or at least ``N``; else a subset stratified by ``pi0``'s helpfulness, the
    same for every run: the prompts sorted by their mean gold helpfulness over the exact arm's
    bank, ``num`` of them at evenly spaced ranks."""
    helpful = np.asarray(base["bank"]["gold"], np.float64)[..., PROPERTIES.index("helpful")]
    n = helpful.shape[0]
    if num <= 0 or num >= n:
        return np.arange(n, dtype=np.int64)
    order = np.argsort(helpful.mean(axis=1), kind="stable")
    return np.sort(order[np.round(np.linspace(0, n - 1, num)).astype(np.int64)])


def base_subset(base: Mapping[str, Any], index: np.ndarray) -> Dict[str, Any]:
    """``base`` (:func:`load_base_samples`) restricted to the prompts ``index``: every array of
    the sample sets (:data:`SETS`) indexed on its leading prompt axis, the rest as is."""
    return {k: ({f: np.asarray(a)[index] for f, a in v.items()} if k in SETS else v)
            for k, v in base.items()}


def trajectory(ctx: Context, config: ml_collections.ConfigDict, base: Mapping[str, Any],
               workdir: str) -> Tuple[Dict[str, np.ndarray], Samples, np.ndarray]:
    """An RLHF run judged along training on the prompts of :func:`trajectory_prompts`
    (``evaluate.trajectory_prompts`` of the ``N`` evaluation prompts): ``pi0`` (step 0, KL 0:
    per-prompt values are the means over the exact arm's bank of base samples, shortcut rates
    and hacking indicators those of the ``base`` samples) and every policy exported along
    training (``rl.snapshot_every`` and the early schedule,
    :func:`lsc.align.rlhf.snapshots.scheduled`; and the final one), each sampled once per prompt
    with the same key (common random numbers across snapshots, runs and seeds) and scored by
    replicate 0's reward models. The final policy is also sampled on all ``N`` prompts (its
    results entry, :func:`rlhf_entry`).

    Returns ``(arrays, final samples on all N prompts, their gold float64[N, m])`` with
    ``arrays`` (``T`` points, ``P`` prompts, ``C`` = :data:`lsc.repro.exact_arm.GOLD_JUDGED`):
    ``prompt_index int64[P]`` (the prompts' rows among the ``N``); ``step int64[T]``;
    ``kl_k1``, ``kl_k3`` and their standard errors over prompts ``float64[T]``;
    ``kl_prompt float64[T, P]`` (``k1`` per prompt); ``metrics float64[T, P, C]`` (win rates
    against the ``M`` base opponents per prompt, as the exact arm scores a candidate); ``gold``
    and ``proxy float64[T, P, m]`` (proxy: replicate 0, the reward models the runs optimised);
    ``hacking float64[T, P, F]`` (:func:`hacking_indicators`, ``F`` =
    :data:`HACKING_FEATURES`); ``filler_rate``, ``offtopic_rate`` (responses with a fact of
    another topic), ``refusal_rate``, ``mean_length float64[T]``.
    """
    m = len(PROPERTIES)
    index = trajectory_prompts(base, int(config.evaluate.get("trajectory_prompts", 0)))
    full = index.size == len(ctx.prompts)
    prompts = ctx.prompts if full else ctx.prompts.subset(index)
    sub = base_subset(base, index)
    b, bank = sub["base"], sub["bank"]
    zero = np.zeros(index.size)
    base_texts = [row[0] for row in decode_grid(prompts.tokenizer, b["tokens"])]
    row0 = _trajectory_point(prompts.texts, sub, base_texts, b["gold"][:, 0],
                             b["rewards"][:, 0], zero, zero)
    # pi0's per-prompt values: the means over the bank's N samples (much less noisy than one
    # sample); its shortcut rates and hacking indicators: the base samples'.
    row0["metrics"] = exact_arm.metric_scores(bank["gold"], sub["opponents"]["gold"]).mean(1)
    row0["gold"] = np.asarray(bank["gold"], np.float64).mean(axis=1)
    row0["proxy"] = np.asarray(bank["rewards"][..., :m], np.float64).mean(axis=1)
    rows = [dict(step=0, **row0)]
    final_step = int(run_summary(workdir)["step"])
    steps = [s for s in align_rlhf.snapshot_steps(workdir) if s != final_step] + [final_step]
    final = None
    for step in steps:
        where = workdir if step == final_step else align_rlhf.snapshot_dir(workdir, step)
        policy = _load_policy(ctx, where)
        s = _policy_samples(prompts, config, policy, num_reward_models=m)
        g = gold(prompts.texts, s.texts)[:, 0]
        kl1 = kl_lib.sequence_kl(s.logp[:, 0], s.logp0[:, 0], s.mask[:, 0], "k1")
        kl3 = kl_lib.sequence_kl(s.logp[:, 0], s.logp0[:, 0], s.mask[:, 0], "k3")
        rows.append(dict(step=int(step), **_trajectory_point(
            prompts.texts, sub, s.column(0), g, s.rewards[:, 0, :m], kl1, kl3)))
        if step == final_step:
            if not full:
                s = _policy_samples(ctx.prompts, config, policy, num_reward_models=m)
                g = gold(ctx.prompts.texts, s.texts)[:, 0]
            final = (s, g)
    arrays = {f: np.asarray([r[f] for r in rows]) for f in TRAJECTORY_FIELDS}
    arrays["step"] = arrays["step"].astype(np.int64)
    arrays["prompt_index"] = index
    return arrays, final[0], final[1]


def run_key(name: str, seed: int, gamma: float, gammas: Sequence[float]) -> str:
    """``<name>/seed_<seed>[/kl_<gamma>]``: the results' key of the run of method ``name``
    (``rlhf.runs``) with RL seed ``seed`` and KL coefficient ``gamma`` of the method's
    ``gammas`` (the ``kl_`` level only for several), spelled as its directories
    (:func:`lsc.align.rlhf.run_workdir`)."""
    key = f"{name}/{align_rlhf.seed_dir(seed)}"
    return key if len(gammas) == 1 else f"{key}/{align_rlhf.kl_dir(gamma)}"


def split_run_key(key: str) -> Tuple[str, int]:
    """``(run, seed)`` of a :func:`run_key`: ``run`` is ``<name>[/kl_<gamma>]``."""
    name, seed, *kl = key.split("/")
    if not seed.startswith(align_rlhf.SEED_PREFIX):
        raise ValueError(f"not a run key (<name>/seed_<s>[/kl_<gamma>]): {key!r}")
    return "/".join([name, *kl]), int(seed[len(align_rlhf.SEED_PREFIX):])


def rlhf_entry(ctx: Context, config: ml_collections.ConfigDict, base: Mapping[str, Any],
               key: str, run_cfg: ml_collections.ConfigDict, gamma: float, seed: int,
               traj: Mapping[str, np.ndarray], s: Samples, g: np.ndarray
               ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(results entry, curves)`` of the final policy of the RLHF run ``key``
    (:func:`run_key`; the entry is ``rlhf/<key>``, its ``run`` ``<name>[/kl_<gamma>]``) from its
    :func:`trajectory` (``traj``, final samples ``s`` and their gold scores ``g``)."""
    method, reference, props = reference_label(run_cfg.rewards)
    opt = _optimised(props)
    boot = bootstrap_kwargs(config)
    judge_gold = base["judge"]["gold"][:, 0]
    kl = kl_lib.estimate_kl(s.logp[:, 0], s.logp0[:, 0], s.mask[:, 0], "k1")
    helpful = PROPERTIES.index("helpful")
    strata = base["reference"]["gold"][:, :, helpful].mean(axis=1)
    under = diagnostics.underfitting(g[:, helpful], judge_gold[:, helpful], strata, **boot)
    by_group = {str(k): v.tolist() for k, v in diagnostics.gold_improvement_by_group(
        g[:, helpful], judge_gold[:, helpful], strata).items()}
    del under["per_prompt"]
    texts = s.column(0)
    steps = [int(x) for x in traj["step"]]
    proxy = [float(x) for x in traj["proxy"][:, :, opt].sum(axis=-1).mean(axis=1)]
    gold_curve = [float(x) for x in traj["gold"][:, :, opt].sum(axis=-1).mean(axis=1)]
    hacking = (diagnostics.reward_hacking(steps, proxy, gold_curve) if len(steps) > 1 else None)
    extra: Dict[str, Any] = {"underfitting": under,
                             "shortcuts": diagnostics.shortcut_features(texts, SHORTCUTS),
                             "num_prompts": len(texts), "run": split_run_key(key)[0],
                             "rl_seed": int(seed)}
    if hacking is not None:
        extra["reward_hacking"] = hacking
    entry = entries_lib.make_entry(
        f"rlhf/{key}", "rlhf", method, reference, props, kl.to_dict(),
        win_rate_lib.win_rates(g, judge_gold, PROPERTIES, **boot),
        _means(s.rewards[:, 0]), _means(g), kl_coef=float(gamma), **extra)
    curves = {"step": steps, "kl": [float(x) for x in traj["kl_k1"]], "proxy": proxy,
              "gold": gold_curve, "underfitting": by_group,
              "examples": [{"prompt": p, "response": r}
                           for p, r in list(zip(ctx.prompts.texts, texts))[:5]]}
    return entry, curves
