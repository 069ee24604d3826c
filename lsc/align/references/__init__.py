"""Reference rewards ``r_ref(x)``: the one home of the four kinds, their estimation and the bank.

Kinds (``config.rewards.properties.<name>.reference.source``; :class:`ReferenceSpec`):

* ``quantile`` -- draw ``k`` samples per prompt from the **frozen base policy** ``pi0`` (never the
  policy being trained), score them with the property's reward model and take
  :func:`lsc.rewards.quantile_reference` per prompt. All quantile properties share one batch of
  ``K = max_i k_i`` samples (property ``i`` uses the first ``k_i`` of them), drawn with
  :func:`lsc.models.sampling.sample` on ``key`` (``B`` prompts, ``K`` samples each), or given.
* ``fixed_response`` -- the reward of one fixed response (a refusal: on the synthetic world
  :data:`lsc.data.world.REFUSAL`, "sorry i can not help with that"; on hh-rlhf
  ``configs.common.HH_REFUSAL``) paired with every prompt. Its text must be in the tokenizer's
  vocabulary: :func:`fixed_response_tokens` refuses a response with unknown (``<unk>``) tokens,
  which the reward models never saw.
* ``predictor`` -- a model trained to predict the base-policy quantile from the prompt
  (:mod:`lsc.train.predictor`): a ``RewardModel`` called with the prompt and an empty
  response. Any other traceable function ``prompts int32[B, P] -> float32[B]`` can be given instead
  (``predictor_fns``).
* ``none`` -- 0 (no subtraction).

:func:`estimate_reference` is a pure function of the models' ``(graphdef, state)`` pairs: one
device computation for the whole batch (sampling, scoring, sorting), no Python loop over prompts,
no host round trip. :class:`ReferenceEstimator` jits it. :func:`cached_reference` wraps it with a
per-prompt cache (``table float32[N, m]``, ``filled bool[N]``, indexed by a prompt's slot; the RL
state carries both, so the cache is saved with checkpoints): prompts already estimated are read
from the table, and when every prompt of the batch is cached the estimation is skipped on device
(``lax.cond``). :class:`PromptSlots` maps prompt ids to slots on the host.

Submodules:

* :mod:`lsc.align.references.pi0_samples` -- the one loop drawing ``pi0`` samples on a prompt
  table (every caller passes its key), the oracle quantile targets of the predictor,
  and the reference-samples file (``reference_samples.npz``);
* :mod:`lsc.align.references.bank` -- every alignment prompt's references computed once before
  RL (the ``rlhf`` job's table).

The quantile's host twin for numpy code (float64 kept) is
:func:`lsc.rewards.reference.quantile_numpy`.
"""

from __future__ import annotations

import json
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsc import rewards, runtime
from lsc.align.utility import UtilitySpec
from lsc.models import decoder as decoder_lib
from lsc.models import sampling

Array = jax.Array
PredictorFn = Callable[[Array], Array]


class ReferenceOutput(NamedTuple):
    """Result of :func:`estimate_reference` (``B`` prompts, ``m`` properties, ``K`` samples).

    Attributes:
      r_ref: ``float32[B, m]`` reference rewards.
      sample_rewards: ``float32[B, K, m]`` rewards of the base-policy samples (columns of
        non-quantile properties are 0; ``K = 0`` when no property uses the quantile source).
      sample_tokens: ``int32[B, K, R]`` the base-policy samples.
    """

    r_ref: Array
    sample_rewards: Array
    sample_tokens: Array


def quantile_samples(spec: UtilitySpec) -> int:
    """``K``: the number of base-policy samples per prompt the quantile properties need."""
    ks = [r.num_samples for r in spec.references if r.source == "quantile"]
    return max(ks) if ks else 0


def score_rows(rm_graphdef: nnx.GraphDef, rm_state: Any, prompts: Array,
               responses: Array) -> Array:
    """``float32[N]`` rewards of ``responses int32[N, R]`` for ``prompts int32[N, P]``."""
    return nnx.merge(rm_graphdef, rm_state)(prompts, responses).astype(jnp.float32)


def _extends(model: Any) -> bool:
    """Whether a reward model continues a prompt state (a decoder backbone with ``extend``)."""
    return callable(getattr(model, "from_prompt_state", None)) and decoder_lib.extends(
        getattr(model, "backbone", None))


def prompt_states(rm_graphdefs: Sequence[nnx.GraphDef], rm_states: Sequence[Any], prompts: Array,
                  response_len: int) -> Tuple[Any, ...]:
    """Per reward model, the prompts' state ``(h_last [B, E], cache)`` its backbone continues in
    :func:`score_samples` (``backbone.prompt_state``), or None for a model that cannot; computed
    once, it serves every set of responses to the same prompts (``prompts int32[B, P]``)."""
    out = []
    for gd, st in zip(rm_graphdefs, rm_states):
        model = nnx.merge(gd, st)
        out.append(model.backbone.prompt_state(prompts, int(response_len)) if _extends(model)
                   else None)
    return tuple(out)


def score_samples(rm_graphdefs: Sequence[nnx.GraphDef], rm_states: Sequence[Any], prompts: Array,
                  samples: Array, which: Optional[Sequence[bool]] = None,
                  states: Optional[Sequence[Any]] = None) -> Array:
    """``float32[B, k, m]`` rewards of ``samples int32[B, k, R]`` under each of the ``m`` reward
    models (prompts ``int32[B, P]``). ``which[i] = False`` skips model ``i`` (its column is 0).

    A reward model with a decoder backbone reads each prompt once and continues its state over
    the ``k`` responses (:meth:`lsc.models.heads.RewardModel.from_prompt_state`; ``states``, from
    :func:`prompt_states`, gives those states precomputed); other models read ``concat([prompt,
    response])`` with each prompt repeated ``k`` times. The two agree up to rounding."""
    b, k, r = samples.shape
    flat = samples.reshape(b * k, r)
    rows = None
    cols = []
    for i, (gd, st) in enumerate(zip(rm_graphdefs, rm_states)):
        if which is not None and not which[i]:
            cols.append(jnp.zeros((b * k,), jnp.float32))
            continue
        model = nnx.merge(gd, st)
        if _extends(model):
            state = states[i] if states is not None and states[i] is not None else (
                model.backbone.prompt_state(prompts, r))
            state = decoder_lib.repeat_prompt_state(state, k)
            cols.append(model.from_prompt_state(state, flat).astype(jnp.float32))
        else:
            rows = jnp.repeat(prompts, k, axis=0) if rows is None else rows
            cols.append(score_rows(gd, st, rows, flat))
    return jnp.stack(cols, axis=-1).reshape(b, k, len(cols))


def predictor_reference(pred_graphdef: nnx.GraphDef, pred_state: Any, prompts: Array) -> Array:
    """``float32[B]``: a predictor (``RewardModel``) on the prompt and an empty response
    (one pad token), as trained by :mod:`lsc.train.predictor`."""
    model = nnx.merge(pred_graphdef, pred_state)
    empty = jnp.full((prompts.shape[0], 1), getattr(model, "pad_id", 0), jnp.int32)
    return model(prompts, empty).astype(jnp.float32)


def estimate_reference(
    spec: UtilitySpec,
    pi0_graphdef: Optional[nnx.GraphDef],
    pi0_state: Any,
    rm_graphdefs: Sequence[nnx.GraphDef],
    rm_states: Sequence[Any],
    prompts: Array,
    key: Array,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    fixed_tokens: Optional[Array] = None,
    predictor_graphdefs: Sequence[Optional[nnx.GraphDef]] = (),
    predictor_states: Sequence[Any] = (),
    predictor_fns: Sequence[Optional[PredictorFn]] = (),
    samples: Optional[Array] = None,
) -> ReferenceOutput:
    """Reference rewards of every property for ``prompts int32[B, P]`` (pure; jit it).

    Args:
      spec: the properties and their :class:`lsc.align.utility.ReferenceSpec`.
      pi0_graphdef, pi0_state: the frozen base policy (needed by the quantile source).
      rm_graphdefs, rm_states: one reward model per property.
      prompts: ``int32[B, P]`` left-padded prompts.
      key: PRNG key of the base-policy samples (used as is by ``sampling.sample``).
      max_new_tokens: ``R``, the length of the base-policy samples.
      temperature: sampling temperature of the base policy.
      fixed_tokens: ``int32[m, R0]`` right-padded fixed responses (row ``i`` is used by a
        fixed_response property ``i``).
      predictor_graphdefs, predictor_states: per property, a reference-predictor model (or None).
      predictor_fns: per property, a traceable ``prompts -> float32[B]`` (or None); used when no
        predictor model is given for that property.
      samples: ``int32[B, K', R]`` base-policy samples drawn beforehand (``K' >= K``; the first
        ``K`` are used) instead of sampling ``pi0`` here (``key`` is then unused), e.g. the
        shared draw of :mod:`lsc.align.references.bank`.

    Returns:
      :class:`ReferenceOutput`.
    """
    m = spec.num_properties
    b = prompts.shape[0]
    if len(rm_graphdefs) != m or len(rm_states) != m:
        raise ValueError(f"need one reward model per property ({m}), got {len(rm_graphdefs)}")
    k = quantile_samples(spec)
    sources = [r.source for r in spec.references]
    if k and samples is not None:
        if samples.ndim != 3 or samples.shape[0] != b or samples.shape[1] < k:
            raise ValueError(f"samples of shape {tuple(samples.shape)} do not give {k} samples "
                             f"for each of {b} prompts")
        tokens = jnp.asarray(samples[:, :k], jnp.int32)
    elif k:
        if pi0_graphdef is None:
            raise ValueError("the quantile reference source needs the base policy pi0")
        out = sampling.sample(pi0_graphdef, pi0_state, prompts, key,
                              max_new_tokens=int(max_new_tokens), num_samples=k,
                              temperature=float(temperature))
        tokens = out.tokens
    if k:
        scores = score_samples(rm_graphdefs, rm_states, prompts, tokens,
                               which=[s == "quantile" for s in sources])
    else:
        tokens = jnp.zeros((b, 0, int(max_new_tokens)), jnp.int32)
        scores = jnp.zeros((b, 0, m), jnp.float32)
    cols = []
    for i, ref in enumerate(spec.references):
        if ref.source == "quantile":
            valid = jnp.arange(k) < ref.num_samples
            cols.append(rewards.quantile_reference(scores[..., i], float(ref.quantile),
                                                   mask=valid[None, :]))
        elif ref.source == "fixed_response":
            if fixed_tokens is None:
                raise ValueError(f"property {spec.properties[i]!r} uses a fixed response but no "
                                 "fixed_tokens were given")
            resp = jnp.broadcast_to(fixed_tokens[i][None, :], (b, fixed_tokens.shape[1]))
            cols.append(score_rows(rm_graphdefs[i], rm_states[i], prompts, resp))
        elif ref.source == "predictor":
            gd = predictor_graphdefs[i] if i < len(predictor_graphdefs) else None
            fn = predictor_fns[i] if i < len(predictor_fns) else None
            if gd is not None:
                cols.append(predictor_reference(gd, predictor_states[i], prompts))
            elif fn is not None:
                cols.append(jnp.asarray(fn(prompts), jnp.float32).reshape(b))
            else:
                raise ValueError(f"property {spec.properties[i]!r} uses the predictor source but "
                                 "no predictor was given")
        else:
            cols.append(jnp.zeros((b,), jnp.float32))
    return ReferenceOutput(jnp.stack(cols, axis=-1), scores, tokens)


def cached_reference(estimate: Callable[[Array, Array], Array], table: Array, filled: Array,
                     slots: Array, prompts: Array, key: Array) -> Tuple[Array, Array, Array, Array]:
    """Reference rewards through the per-prompt cache (pure; jit it with the caller).

    Args:
      estimate: ``estimate(prompts, key) -> float32[B, m]`` (e.g. a closure over
        :func:`estimate_reference`).
      table: ``float32[N, m]`` cached references of the ``N`` prompt slots.
      filled: ``bool[N]`` which slots hold an estimate.
      slots: ``int32[B]`` the batch's slots (:class:`PromptSlots`).
      prompts: ``int32[B, P]``.
      key: key for the estimation.

    Returns:
      ``(r_ref float32[B, m], table, filled, new int32[])``: the references (cached ones from the
      table, the others freshly estimated), the updated cache and the number of rows estimated.
      When every row is cached the estimation does not run.
    """
    need = ~filled[slots]

    def compute(_):
        return estimate(prompts, key).astype(jnp.float32)

    def skip(_):
        return jnp.zeros((prompts.shape[0], table.shape[1]), jnp.float32)

    fresh = jax.lax.cond(jnp.any(need), compute, skip, None)
    r_ref = jnp.where(need[:, None], fresh, table[slots])
    table = table.at[slots].set(r_ref)
    filled = filled.at[slots].set(True)
    return r_ref, table, filled, jnp.sum(need).astype(jnp.int32)


class PromptSlots:
    """Host-side map from prompt ids (``int32``, :func:`lsc.data.pipeline.assign_prompt_ids`) to
    cache slots ``0 .. N - 1`` (the prompts' order in the table)."""

    def __init__(self, prompt_ids: np.ndarray):
        ids = np.asarray(prompt_ids, np.int64).reshape(-1)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("prompt ids must be distinct")
        self.ids = ids
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    def __call__(self, prompt_ids: np.ndarray) -> np.ndarray:
        """``int32[B]`` slots of ``prompt_ids``; raises ``KeyError`` for an unknown id."""
        q = np.asarray(prompt_ids, np.int64).reshape(-1)
        pos = np.clip(np.searchsorted(self._sorted, q), 0, len(self._sorted) - 1)
        bad = self._sorted[pos] != q
        if np.any(bad):
            raise KeyError(f"prompt ids not in the prompt table: {q[bad][:5].tolist()}")
        return self._order[pos].astype(np.int32)


def write_cache(path: str, slots: PromptSlots, table: np.ndarray, filled: np.ndarray,
                properties: Sequence[str]) -> None:
    """Writes ``{prompt_id: {property: r_ref}}`` of the filled slots as JSON (atomically)."""
    table, filled = np.asarray(table), np.asarray(filled)
    payload = {str(int(pid)): {p: float(table[i, j]) for j, p in enumerate(properties)}
               for i, pid in enumerate(slots.ids) if filled[i]}
    with runtime.atomic_open(path) as f:
        json.dump(payload, f, sort_keys=True)


def fixed_response_tokens(spec: UtilitySpec, tokenizer, length: int, *,
                          field: str = "config.rewards") -> np.ndarray:
    """``int32[m, length]`` right-padded token ids (EOS included when it fits) of every
    property's fixed response (rows of other sources are padding).

    Raises ``ValueError`` naming ``<field>.properties.<name>.reference.response`` when a fixed
    response has tokens the tokenizer does not know (``<unk>``): the reward models never saw
    them, so the reference reward would mean nothing (e.g. the hh-rlhf refusal "I'm sorry, but
    I can't help with that." under the synthetic world's case-sensitive word-level tokenizer).
    A tokenizer without an unknown token (:func:`lsc.data.tokenizer.unknown_pieces` is None:
    byte-level BPE, which has no unknown text) is not checked.
    """
    from lsc.data import tokenizer as tokenizer_lib

    out = np.full((spec.num_properties, length), tokenizer.pad_id, np.int32)
    for i, ref in enumerate(spec.references):
        if ref.source == "fixed_response":
            check_in_vocabulary(tokenizer, ref.response,
                                f"{field}.properties.{spec.properties[i]}.reference.response")
            ids, _ = tokenizer_lib.encode_response(tokenizer, ref.response, length)
            out[i, :len(ids)] = ids
    return out


def check_in_vocabulary(tokenizer, text: str, field: str) -> None:
    """Raises ``ValueError`` naming ``field`` when ``tokenizer`` encodes part of ``text`` as its
    unknown token."""
    from lsc.data import tokenizer as tokenizer_lib
    from lsc.data import world

    unknown = tokenizer_lib.unknown_pieces(tokenizer, text)
    if not unknown:
        return
    where = getattr(tokenizer, "path", None) or type(tokenizer).__name__
    plural = "s" if len(unknown) > 1 else ""
    pieces = ", ".join(repr(p) for p in unknown)
    raise ValueError(
        f"{field}: {text!r} has {len(unknown)} unknown token{plural} (<unk> id "
        f"{getattr(tokenizer, 'unk_id', '?')}: {pieces}) under the tokenizer {where}; the reward "
        "models never saw them, so the reference reward would be "
        "meaningless. Use text in the tokenizer's vocabulary (the synthetic world's refusal is "
        f"{world.REFUSAL!r}, lsc.data.world.REFUSAL)")


class ReferenceEstimator:
    """:func:`estimate_reference` under ``jax.jit`` (models static, compiled once per shape).

    ``estimator(pi0_state, rm_states, prompts, key, predictor_states=()) -> ReferenceOutput``;
    the shardings follow those of the states and inputs (place them with
    ``lsc.parallel.partitioning``).
    """

    def __init__(self, spec: UtilitySpec, pi0_graphdef: Optional[nnx.GraphDef],
                 rm_graphdefs: Sequence[nnx.GraphDef], *, max_new_tokens: int,
                 temperature: float = 1.0, fixed_tokens: Optional[np.ndarray] = None,
                 predictor_graphdefs: Sequence[Optional[nnx.GraphDef]] = (),
                 predictor_fns: Sequence[Optional[PredictorFn]] = ()):
        self.spec = spec
        self.traces = 0
        fixed = None if fixed_tokens is None else jnp.asarray(fixed_tokens, jnp.int32)

        def reference_step(pi0_state, rm_states, prompts, key, predictor_states):
            self.traces += 1
            return estimate_reference(
                spec, pi0_graphdef, pi0_state, tuple(rm_graphdefs), rm_states, prompts, key,
                max_new_tokens=max_new_tokens, temperature=temperature, fixed_tokens=fixed,
                predictor_graphdefs=tuple(predictor_graphdefs),
                predictor_states=predictor_states, predictor_fns=tuple(predictor_fns))

        self._jitted = jax.jit(reference_step)

    def __call__(self, pi0_state, rm_states, prompts, key, predictor_states=()) -> ReferenceOutput:
        return self._jitted(pi0_state, tuple(rm_states), jnp.asarray(prompts, jnp.int32), key,
                            tuple(predictor_states))
