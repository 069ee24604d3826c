"""A quick gold look for a standalone ``rlhf`` job on the synthetic world: one sample per test
prompt from the policy and from ``pi0``, judged by the world's gold scorers with
:mod:`lsc.eval.win_rate`'s outcomes (the reproduction judges with :mod:`lsc.repro.evaluation`)."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lsc.align import common
from lsc.data import pipeline
from lsc.eval import win_rate
from lsc.models import sampling


def gold_evaluation(policy: nnx.Module, pi0: nnx.Module, tok, prompts: np.ndarray,
                    texts: Sequence[str], properties: Sequence[str], *, response_len: int,
                    seed: int, batch_size: int = 50) -> Dict[str, Any]:
    """Gold scores (the synthetic world's judges) of one sample per prompt from ``policy`` and
    from ``pi0``: per property the two means and the win rate of the policy (ties count 1/2),
    plus the "AND" and "OR" win rates: the minimum and the maximum over properties of the
    per-property outcome (1 win, 1/2 tie, 0 loss): :func:`lsc.eval.win_rate.outcomes` and
    :func:`~lsc.eval.win_rate.combine_outcomes` (ties are common for the discrete harmlessness
    score). A quick look for a standalone ``rlhf`` job; the
    reproduction judges with ``lsc.eval`` (bootstrap CIs, independent base samples)."""
    from lsc.data import world

    props = [p for p in properties if p in world.GOLD_SCORERS] or ["helpful", "harmless"]
    key = jax.random.key(seed)
    out: Dict[str, Any] = {"num_prompts": len(texts)}
    samples = {}
    for name, model in (("policy", policy), ("pi0", pi0)):
        gd, st = nnx.split(model)
        chunks = []
        for i, real, chunk in pipeline.padded_batches(prompts, batch_size):
            res = sampling.sample(gd, st, jnp.asarray(chunk), jax.random.fold_in(key, i),
                                  max_new_tokens=response_len, num_samples=1)
            chunks.append(np.asarray(res.tokens[:real, 0]))
        samples[name] = common.decode(tok, np.concatenate(chunks))
    scores = {name: np.stack([world.gold_scores(texts, samples[name], p) for p in props],
                             axis=1) for name in samples}  # [n, properties]
    o = win_rate.outcomes(scores["policy"], scores["pi0"])
    for j, p in enumerate(props):
        out[p] = {"policy": float(scores["policy"][:, j].mean()),
                  "pi0": float(scores["pi0"][:, j].mean()), "win_rate": float(o[:, j].mean())}
    both = win_rate.combine_outcomes(o)
    out["and_win_rate"] = float(np.mean(both[win_rate.AND]))
    out["or_win_rate"] = float(np.mean(both[win_rate.OR]))
    out["examples"] = [{"prompt": t, "policy": sp, "pi0": s0} for t, sp, s0 in
                       list(zip(texts, samples["policy"], samples["pi0"]))[:5]]
    return out


