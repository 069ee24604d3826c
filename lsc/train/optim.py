"""Optimisers and learning-rate schedules from a config (``config.optim``).

Fields (``ml_collections.ConfigDict`` or any mapping; defaults in :data:`DEFAULTS`):

=====================  ========================================================================
field                  meaning
=====================  ========================================================================
``name``               ``'adamw'`` or ``'adafactor'``
``learning_rate``      peak learning rate (after warm-up)
``warmup_steps``       linear warm-up from 0 to the peak over this many steps
``schedule``           ``'constant'`` (the peak after warm-up) or ``'cosine'`` (cosine decay from
                       the peak to ``end_lr_fraction * peak`` at ``num_steps``)
``end_lr_fraction``    final fraction of the peak for ``'cosine'``
``weight_decay``       decoupled weight decay (AdamW's ``weight_decay``; Adafactor's
                       ``weight_decay_rate``)
``b1``, ``b2``, ``eps`` AdamW moments and epsilon
``grad_clip_norm``     clip the gradient to this global norm (``0`` disables)
=====================  ========================================================================

The optimiser is ``chain(clip_by_global_norm, adamw | adafactor)``; the schedule is evaluated at
the optimiser's own update count. Gradient accumulation is done by the train step (a scan over
micro-batches, :mod:`lsc.train.loop`), so one optimiser update is one train step.

:data:`RULES` are the fields' rules (:mod:`lsc.schema`), checked whenever an optimiser or schedule
is made and by :mod:`lsc.config` up front for every optimiser section (``optim``,
``rl.policy_optim``, ``rl.value_optim``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import optax

from lsc import schema

OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("constant", "cosine")

RULES = {
    "name": schema.one_of(OPTIMIZERS),
    "learning_rate": schema.number_in(0.0),
    "warmup_steps": schema.number_in(0, integer=True),
    "schedule": schema.one_of(SCHEDULES),
    "end_lr_fraction": schema.number_in(0.0, 1.0),
    "weight_decay": schema.number_in(0.0),
    "grad_clip_norm": schema.number_in(0.0),
}

DEFAULTS = dict(
    name="adamw",
    learning_rate=1e-3,
    warmup_steps=0,
    schedule="constant",
    end_lr_fraction=0.0,
    weight_decay=0.0,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    grad_clip_norm=1.0,
)


def _fields(config: Mapping[str, Any] | None) -> dict:
    if config is None:
        config = {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"optim: unknown fields {unknown}; known: {sorted(DEFAULTS)}")
    out = dict(DEFAULTS)
    out.update(config)
    schema.check(out, RULES, "optim")
    if not out["learning_rate"] > 0:  # 0 passes the rule (a frozen run) but trains nothing
        raise ValueError(f"optim.learning_rate must be > 0, got {out['learning_rate']}")
    return out


def make_schedule(config: Mapping[str, Any] | None, num_steps: int) -> Callable[[Any], Any]:
    """Learning rate as a function of the update count: linear warm-up, then constant or cosine.

    ``lr(0) = 0`` when ``warmup_steps > 0``; ``lr(warmup_steps) = learning_rate``; for
    ``'cosine'``, ``lr(num_steps) = end_lr_fraction * learning_rate``.
    """
    c = _fields(config)
    peak, warmup = float(c["learning_rate"]), int(c["warmup_steps"])
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if c["schedule"] == "constant":
        after = optax.constant_schedule(peak)
    else:
        after = optax.cosine_decay_schedule(peak, max(1, num_steps - warmup),
                                            alpha=float(c["end_lr_fraction"]))
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(config: Mapping[str, Any] | None, num_steps: int) -> optax.GradientTransformation:
    """``chain(clip_by_global_norm(grad_clip_norm), adamw | adafactor)`` with :func:`make_schedule`.

    Adafactor runs without its own update clipping and parameter-scale multiplication, so the
    learning rate means the same thing as for AdamW (step size in parameter units).
    """
    c = _fields(config)
    lr = make_schedule(c, num_steps)
    if c["name"] == "adamw":
        opt = optax.adamw(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"],
                          weight_decay=c["weight_decay"])
    else:
        opt = optax.adafactor(lr, multiply_by_parameter_scale=False, clipping_threshold=None,
                              weight_decay_rate=c["weight_decay"] or None)
    parts = []
    if c["grad_clip_norm"] > 0:
        parts.append(optax.clip_by_global_norm(float(c["grad_clip_norm"])))
    parts.append(opt)
    return optax.chain(*parts)
