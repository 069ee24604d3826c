"""KV-cache sampling for any model implementing :class:`lsc.models.protocol.Autoregressive`.

Two jitted pure functions of ``(graphdef, state)`` do the work:

* ``_prefill`` runs ``model.prefill`` on the (repeated) prompts and picks the first response
  token; the fresh cache is donated to it;
* ``_decode`` runs ``model.decode_step`` in a ``lax.while_loop`` until ``max_new_tokens`` tokens
  are produced or every row has emitted EOS; the whole loop state (cache included) is donated.

``graphdef``, ``max_new_tokens`` and ``top_k`` are static; ``temperature``, ``top_p``, the
EOS / pad ids and the vocabulary limit are traced, so changing them does not recompile.
Each function therefore compiles once per (batch, prompt length, max new tokens) for given static
options. The sampler asks the model for a cache with ``max_decode_length = max_new_tokens``
(the decoder prepends the prompt's ``P`` slots in ``prefill``; T5 adds its start token).

Sharding: pass a sharded ``state`` (``lsc.parallel.partitioning``) and the computation follows
it; with ``mesh=`` the sampler also places the repeated prompts and the KV cache on the mesh
(rows over the batch axes, key/value heads by the logical-axis rules) before prefill.

Only ids below the *vocabulary limit* are ever drawn: a model's embedding table is often padded
past its tokenizer's vocabulary (T5's 32,128 rows for 32,000 SentencePiece pieces and 100
pre-training sentinels; the synthetic world's 256 rows for 233 pieces), and those ids have no
text. The limit is the model's ``sample_vocab_size`` attribute when it has one
(``lsc.train.common.backbone_factory`` sets it to the tokenizer's size), else the full
vocabulary; ``vocab_limit=`` overrides it.

Token selection at step ``t`` uses ``jax.random.fold_in(key, t)``; rows draw independently, so
the ``k`` copies of a prompt give ``k`` independent samples and the same key gives the same
samples.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


class SampleOutput(NamedTuple):
    """Result of :func:`sample` (``B`` prompts, ``k`` samples each, ``R = max_new_tokens``).

    Attributes:
      tokens: ``int32[B, k, R]`` response tokens, right-padded with ``pad_id`` after EOS.
      logprobs: ``float32[B, k, R]`` log-probability of each token under the distribution it was
        drawn from (temperature, top-k and top-p applied); for greedy decoding (temperature 0),
        under the model's own distribution. 0 where ``mask`` is False. Both exclude the mass of
        the banned pad id and of ids past the vocabulary limit (renormalised over the ids that may
        be drawn), so at temperature 1 they exceed a teacher-forced pass's log-probs
        (``lsc.models.decoder.response_log_probs``) by ``-log(1 - that mass)``.
      mask: ``bool[B, k, R]`` True for generated tokens up to and including the first EOS.
      model_logprobs: ``float32[B, k, R]`` log-probability of each token under the model's own
        distribution over its whole vocabulary (no temperature, filtering or banned ids): what a
        teacher-forced pass gives, up to rounding, without running one. 0 where ``mask`` is False.
    """

    tokens: Array
    logprobs: Array
    mask: Array
    model_logprobs: Array


def filter_logits(logits: Array, temperature: Array, top_k: int = 0, top_p: Array = 1.0) -> Array:
    """Sampling logits ``float32[N, V]``: ``logits / temperature`` with everything outside the
    ``top_k`` most likely tokens (``top_k = 0``: no limit) and outside the smallest set of tokens
    whose probability reaches ``top_p`` set to ``-inf``. ``temperature`` must be > 0 here."""
    x = logits.astype(jnp.float32) / temperature
    neg_inf = jnp.asarray(-jnp.inf, jnp.float32)
    if top_k and top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, top_k)[0][..., -1:]
        x = jnp.where(x >= kth, x, neg_inf)
    top_p = jnp.asarray(top_p, jnp.float32)

    def nucleus(x):
        sorted_x = jnp.sort(x, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_x, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        # Keep a sorted token while the mass of the tokens before it is below top_p (the first
        # always).
        keep = mass_before < top_p
        threshold = jnp.min(jnp.where(keep, sorted_x, jnp.inf), axis=-1, keepdims=True)
        return jnp.where(x >= threshold, x, neg_inf)

    # The sort over the vocabulary only runs when nucleus sampling is on.
    return jax.lax.cond(top_p < 1.0, nucleus, lambda x: x, x)


_NO_LIMIT = int(jnp.iinfo(jnp.int32).max)  # a vocabulary limit that removes no id


def _select(logits, key, temperature, top_k, top_p, banned=-1, limit=_NO_LIMIT):
    """(tokens int32[N], log-probs float32[N], the model's log-probs float32[N]) chosen from
    ``logits[N, V]``; token ``banned`` and ids ``>= limit`` (int32 scalars, may be traced; the
    defaults remove nothing) get probability 0. Temperature <= 0 is greedy (log-probs under the
    logits with those ids removed). The model's log-probs are under ``logits`` themselves."""
    logits = logits.astype(jnp.float32)
    model_logp = jax.nn.log_softmax(logits, axis=-1)
    vocab = jnp.arange(logits.shape[-1], dtype=jnp.int32)
    logits = jnp.where((vocab == banned) | (vocab >= limit), -jnp.inf, logits)

    def greedy(_):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), logits

    def draw(_):
        filtered = filter_logits(logits, temperature, top_k, top_p)
        return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32), filtered

    tokens, dist = jax.lax.cond(temperature <= 0, greedy, draw, None)
    chosen = jnp.take_along_axis(dist, tokens[:, None], axis=-1)[:, 0]
    return (tokens, chosen - jax.nn.logsumexp(dist, axis=-1),
            jnp.take_along_axis(model_logp, tokens[:, None], axis=-1)[:, 0])


class _LoopState(NamedTuple):
    cache: Any
    tokens: Array  # int32[N, R]
    logprobs: Array  # float32[N, R]
    model_logprobs: Array  # float32[N, R]
    mask: Array  # bool[N, R]
    last: Array  # int32[N], the token fed next
    done: Array  # bool[N]
    step: Array  # int32[], next response slot


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "max_new_tokens", "top_k"),
    donate_argnames=("cache",),
)
def _prefill(graphdef, state, prompts, cache, key, temperature, top_p, ids, *, max_new_tokens,
             top_k):
    eos_id, pad_id, banned, limit = ids[0], ids[1], ids[2], ids[3]
    model = nnx.merge(graphdef, state)
    logits, cache = model.prefill(prompts, cache)
    n = prompts.shape[0]
    tok, lp, mlp = _select(logits, jax.random.fold_in(key, 0), temperature, top_k, top_p, banned,
                           limit)
    tokens = jnp.full((n, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(tok)
    logprobs = jnp.zeros((n, max_new_tokens), jnp.float32).at[:, 0].set(lp)
    model_logprobs = jnp.zeros((n, max_new_tokens), jnp.float32).at[:, 0].set(mlp)
    mask = jnp.zeros((n, max_new_tokens), bool).at[:, 0].set(True)
    return _LoopState(cache, tokens, logprobs, model_logprobs, mask, tok, tok == eos_id,
                      jnp.ones((), jnp.int32))


@functools.partial(
    jax.jit, static_argnames=("graphdef", "top_k"),
    donate_argnames=("loop",),
)
def _decode(graphdef, state, loop, key, temperature, top_p, ids, *, top_k):
    eos_id, pad_id, banned, limit = ids[0], ids[1], ids[2], ids[3]
    model = nnx.merge(graphdef, state)
    max_new = loop.tokens.shape[1]

    def cond(s: _LoopState):
        return (s.step < max_new) & ~jnp.all(s.done)

    def body(s: _LoopState):
        logits, cache = model.decode_step(s.last, s.cache)
        tok, lp, mlp = _select(logits, jax.random.fold_in(key, s.step), temperature, top_k,
                               top_p, banned, limit)
        live = ~s.done
        tok = jnp.where(live, tok, pad_id)
        lp = jnp.where(live, lp, 0.0)
        mlp = jnp.where(live, mlp, 0.0)
        col = jnp.zeros((), jnp.int32)
        write = lambda buf, v: jax.lax.dynamic_update_slice(buf, v[:, None], (col, s.step))  # noqa
        return _LoopState(
            cache,
            write(s.tokens, tok),
            write(s.logprobs, lp),
            write(s.model_logprobs, mlp),
            write(s.mask, live),
            tok,
            s.done | (tok == eos_id),
            s.step + 1,
        )

    return jax.lax.while_loop(cond, body, loop)


@functools.partial(jax.jit, static_argnames=("graphdef", "batch_size", "length", "dtype"))
def _init_cache(graphdef, state, *, batch_size, length, dtype):
    return nnx.merge(graphdef, state).init_cache(batch_size, length, dtype)


def _model_ids(graphdef, state):
    model = nnx.merge(graphdef, state)
    limit = getattr(model, "sample_vocab_size", None)
    return int(model.pad_id), int(model.eos_id), (None if limit is None else int(limit))


_IDS_CACHE: dict = {}


def _special_ids(graphdef, state, eos_id, pad_id, allow_pad, vocab_limit=None) -> Array:
    """``int32[4]``: ``[eos, pad, banned, limit]`` -- the model's ids and vocabulary limit unless
    overridden; ``banned`` is the pad token (never sampled, so ``response != pad`` stays a valid
    mask) unless ``allow_pad`` or pad is also EOS, then -1 (nothing banned); ``limit`` is the
    model's ``sample_vocab_size`` or, without one, int32's maximum (no limit)."""
    if graphdef not in _IDS_CACHE:
        _IDS_CACHE[graphdef] = _model_ids(graphdef, state)
    model_pad, model_eos, model_limit = _IDS_CACHE[graphdef]
    pad_id = model_pad if pad_id is None else pad_id
    eos_id = model_eos if eos_id is None else eos_id
    limit = model_limit if vocab_limit is None else vocab_limit
    if limit is None:
        limit = _NO_LIMIT
    elif limit < 1:
        raise ValueError(f"vocab_limit must be >= 1, got {limit}")
    elif not (0 <= eos_id < limit):
        raise ValueError(f"the EOS id {eos_id} is outside the sampling vocabulary (ids < {limit})")
    banned = -1 if (allow_pad or pad_id == eos_id) else int(pad_id)
    return jnp.asarray([int(eos_id), int(pad_id), banned, int(limit)], jnp.int32)


def sample(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    prompt_tokens: Array,
    key: Array,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = None,
    cache_dtype: Any = jnp.float32,
    allow_pad: bool = False,
    vocab_limit: Optional[int] = None,
    mesh: Optional[jax.sharding.Mesh] = None,
    rules: Any = None,
) -> SampleOutput:
    """Samples ``num_samples`` responses per prompt from the model ``nnx.merge(graphdef, state)``.

    Args:
      graphdef, state: the split model (any ``Autoregressive``); ``state`` may be sharded, and the
        computation then follows its shardings.
      prompt_tokens: ``int32[B, P]`` left-padded prompts.
      key: PRNG key; the same key gives the same samples.
      max_new_tokens: ``R``, the response length budget.
      num_samples: ``k`` samples per prompt (prompts are repeated ``k`` times in one batch).
      temperature: > 0 samples from ``softmax(logits / temperature)``; 0 is greedy.
      top_k: keep only the ``top_k`` most likely tokens (0: all).
      top_p: nucleus sampling mass (1.0: off).
      eos_id, pad_id: override the model's ids.
      cache_dtype: dtype of the KV cache.
      allow_pad: by default the pad token is never generated (so ``response != pad_id`` is a
        valid response mask downstream) unless it is also the EOS token; True lifts the ban
        (needed to reproduce another implementation's unconstrained greedy decoding).
      vocab_limit: only ids ``< vocab_limit`` are drawn; default the model's
        ``sample_vocab_size`` (the tokenizer's vocabulary for models built by
        ``lsc.train.common``), or the whole vocabulary when it has none.
      mesh, rules: when a mesh is given, the repeated prompts and the KV cache are placed on it
        before prefill (rows over the batch mesh axes, cache ``[B, T, heads, head_dim]`` arrays by
        the logical axes ``('batch', 'length', 'kv_heads', 'head_dim')`` and ``rules``, default
        ``lsc.parallel.partitioning.DEFAULT_RULES``); otherwise placement follows the inputs.

    Returns:
      :class:`SampleOutput` with ``[B, k, R]`` tokens, log-probs and masks.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    ids = _special_ids(graphdef, state, eos_id, pad_id, allow_pad, vocab_limit)
    b, p = prompt_tokens.shape
    prompts = jnp.repeat(jnp.asarray(prompt_tokens, jnp.int32), num_samples, axis=0)
    n = b * num_samples
    temperature = jnp.asarray(temperature, jnp.float32)
    top_p = jnp.asarray(top_p, jnp.float32)
    with warnings.catch_warnings():
        # Backends without buffer donation (e.g. some CPU builds) warn once per compilation.
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        cache = _init_cache(graphdef, state, batch_size=n, length=int(max_new_tokens),
                            dtype=jnp.dtype(cache_dtype))
        if mesh is not None:
            from lsc.parallel import partitioning

            rules = partitioning.DEFAULT_RULES if rules is None else rules
            prompts = partitioning.shard_batch(prompts, mesh, dict(rules).get("batch"))
            cache = jax.device_put(cache, partitioning.cache_shardings(cache, mesh, rules))
        loop = _prefill(graphdef, state, prompts, cache, key, temperature, top_p, ids,
                        max_new_tokens=int(max_new_tokens), top_k=int(top_k))
        loop = _decode(graphdef, state, loop, key, temperature, top_p, ids, top_k=int(top_k))
    shape = (b, num_samples, max_new_tokens)
    return SampleOutput(
        loop.tokens.reshape(shape), loop.logprobs.reshape(shape), loop.mask.reshape(shape),
        loop.model_logprobs.reshape(shape),
    )


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "max_new_tokens", "top_k"),
)
def _sample_no_cache(graphdef, state, prompts, key, temperature, top_p, ids, *, max_new_tokens,
                     top_k):
    eos_id, pad_id, banned, limit = ids[0], ids[1], ids[2], ids[3]
    model = nnx.merge(graphdef, state)
    n, p = prompts.shape
    buf = jnp.concatenate([prompts, jnp.full((n, max_new_tokens), pad_id, jnp.int32)], axis=1)
    valid = jnp.concatenate([prompts != pad_id, jnp.zeros((n, max_new_tokens), bool)], axis=1)
    init = (buf, valid, jnp.zeros((n, max_new_tokens), jnp.float32),
            jnp.zeros((n, max_new_tokens), jnp.float32), jnp.zeros((n,), bool),
            jnp.zeros((), jnp.int32))

    def cond(c):
        return (c[5] < max_new_tokens) & ~jnp.all(c[4])

    def body(c):
        buf, valid, logprobs, model_logprobs, done, step = c
        logits = model(buf, valid)  # the whole prefix, recomputed every step
        last = jax.lax.dynamic_index_in_dim(logits, p - 1 + step, axis=1, keepdims=False)
        tok, lp, mlp = _select(last, jax.random.fold_in(key, step), temperature, top_k, top_p,
                               banned, limit)
        live = ~done
        tok = jnp.where(live, tok, pad_id)
        col = jnp.zeros((), jnp.int32)
        buf = jax.lax.dynamic_update_slice(buf, tok[:, None], (col, p + step))
        valid = jax.lax.dynamic_update_slice(valid, live[:, None], (col, p + step))
        logprobs = jax.lax.dynamic_update_slice(logprobs, jnp.where(live, lp, 0.0)[:, None],
                                                (col, step))
        model_logprobs = jax.lax.dynamic_update_slice(
            model_logprobs, jnp.where(live, mlp, 0.0)[:, None], (col, step))
        return buf, valid, logprobs, model_logprobs, done | (tok == eos_id), step + 1

    buf, valid, logprobs, model_logprobs, _, _ = jax.lax.while_loop(cond, body, init)
    return buf[:, p:], logprobs, valid[:, p:], model_logprobs


def sample_without_cache(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    prompt_tokens: Array,
    key: Array,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: Optional[int] = None,
    allow_pad: bool = False,
    vocab_limit: Optional[int] = None,
) -> SampleOutput:
    """Reference sampler for decoder-only models (``model(tokens, mask) -> logits``) that reruns
    the full forward pass over the whole prefix at every step (no KV cache). Same selection rule
    and key schedule as :func:`sample`, so with the same key it draws the same tokens; it exists
    for tests and for the KV-cache benchmark."""
    ids = _special_ids(graphdef, state, eos_id, None, allow_pad, vocab_limit)
    b = prompt_tokens.shape[0]
    prompts = jnp.repeat(jnp.asarray(prompt_tokens, jnp.int32), num_samples, axis=0)
    tokens, logprobs, mask, model_logprobs = _sample_no_cache(
        graphdef, state, prompts, key, jnp.asarray(temperature, jnp.float32),
        jnp.asarray(top_p, jnp.float32), ids,
        max_new_tokens=int(max_new_tokens), top_k=int(top_k),
    )
    shape = (b, num_samples, max_new_tokens)
    return SampleOutput(tokens.reshape(shape), logprobs.reshape(shape), mask.reshape(shape),
                        model_logprobs.reshape(shape))


def compilation_counts() -> dict:
    """Number of compiled variants of the jitted prefill and decode functions (for tests)."""
    return {"prefill": _prefill._cache_size(), "decode": _decode._cache_size()}
