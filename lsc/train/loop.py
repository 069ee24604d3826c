"""The one training loop shared by every training job (reward models, SFT, predictor).

A job supplies a model constructor, a loss and data; the loop owns everything else:

* **State.** :class:`TrainState` = ``step`` (int32 scalar), ``params`` (the model's ``nnx.Param``
  state, float32 master weights), ``model_state`` (any other ``nnx`` variables, not trained),
  ``opt_state`` (optax) and ``rng`` (uint32 key data ``[2]``-style, ``jax.random.key_data``).
  The model is ``nnx.merge(graphdef, params, model_state)``; the hot path is a pure function of
  the state (no Python graph walks per step).
* **Step.** :func:`make_train_step` builds ``step(state, batch) -> (state, metrics)`` under
  ``jax.jit`` with explicit ``in_shardings``/``out_shardings`` (parameters by their logical axes
  via ``lsc.parallel.partitioning``, optimiser moments like their parameters, the batch over
  ``data``/``fsdp``) and the state donated. Gradient accumulation splits the batch into
  ``grad_accum_steps`` micro-batches (rows ``i, i + k, ...``) scanned with ``lax.scan``; losses
  are *sums* with an example count, so ``k`` micro-batches give the same update as one big batch.
  Precision is the model's: the state keeps the parameters in their stored dtype (float32 master
  weights, and optimiser state of the same dtype), and a model whose ``compute_dtype`` is
  bfloat16 casts them to bfloat16 where it uses them, so the gradient flows back to the float32
  master weights (:mod:`lsc.models.layers`).
* **Loop.** :func:`train` runs the step under :func:`lsc.train.runner.run`, the outer loop it
  shares with RLHF: resume from the newest checkpoint in ``<workdir>/checkpoints`` (state,
  data-iterator position and metrics history), TensorBoard logging (``<workdir>/tensorboard``),
  the progress bar, checkpoints every ``save_every`` steps and at the end (written in the
  background, :mod:`lsc.train.checkpoint`), SIGTERM (a checkpoint,
  then ``preempted=True``; jobs exit with :data:`lsc.train.runner.PREEMPTED_EXIT_CODE`) and the
  non-finite loss stop (:class:`lsc.train.runner.NonFiniteLossError`). Here it adds the evaluation
  every ``eval_every`` steps and at the end, and writes ``<workdir>/summary.json`` and the final model (``<workdir>/model``,
  :func:`lsc.train.checkpoint.load_model`). Everything in ``summary.json`` is a function of the
  seed and config (no timings), so a killed-and-resumed run writes the same file as an
  uninterrupted one.
* **Config.** :class:`TrainConfig` is ``config.train``; :data:`TRAIN_RULES` are its fields' rules
  (:mod:`lsc.schema`), checked on construction and by :mod:`lsc.config` up front.

Loss contract: ``loss_fn(model, batch, rng) -> (loss_sum, count, metric_sums)`` where
``loss_sum`` is the float32 sum of per-example losses over the (micro-)batch, ``count`` the
number of examples it covers (float32; e.g. ``sum(valid)`` or the number of response tokens) and
``metric_sums`` a dict of float32 sums over the same examples. The step reports
``loss = sum / count`` and ``metric = metric_sum / count`` and follows the gradient of
``loss_sum / count``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lsc import schema
from lsc.parallel import partitioning
from lsc.train import checkpoint as checkpoint_lib
from lsc.train import metrics as metrics_lib
from lsc.train import optim, runner

TRAIN_RULES = {
    "num_steps": schema.number_in(1, integer=True),
    "batch_size": schema.number_in(1, integer=True),
    "grad_accum_steps": schema.number_in(1, integer=True),
    "log_every": schema.number_in(1, integer=True),
    "eval_every": schema.number_in(0, integer=True),
    "save_every": schema.number_in(1, integer=True),
    "keep_checkpoints": schema.number_in(1, integer=True),
}

Batch = Dict[str, Any]
LossFn = Callable[[nnx.Module, Batch, jax.Array], Tuple[jax.Array, jax.Array, Dict[str, jax.Array]]]


@struct.dataclass
class TrainState:
    """The complete state of a run (a pytree; see the module docstring for the fields)."""

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Loop settings (``config.train``).

    Attributes:
      num_steps: optimiser updates in the whole run.
      batch_size: global examples per update (all hosts, all micro-batches).
      grad_accum_steps: micro-batches per update; must divide ``batch_size``.
      log_every: steps between train-metric logs (means over the interval).
      eval_every: steps between evaluations (0: only at the end).
      save_every: steps between checkpoints (one is always written at the end).
      keep_checkpoints: number of recent checkpoints kept.
      progress: show a tqdm progress bar on stderr.
    """

    num_steps: int
    batch_size: int
    grad_accum_steps: int = 1
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 100
    keep_checkpoints: int = 3
    progress: bool = True

    def __post_init__(self):
        schema.check(vars(self), TRAIN_RULES, "train")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"train.grad_accum_steps={self.grad_accum_steps} must divide "
                             f"train.batch_size={self.batch_size}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "TrainConfig":
        """From ``config.train`` (dict / ConfigDict); unknown fields are errors."""
        return schema.from_mapping(cls, mapping, unknown="train: unknown fields")


@dataclasses.dataclass
class Evaluator:
    """Periodic evaluation.

    Attributes:
      data: returns a fresh finite iterable of batches (same layout as training batches, with a
        ``valid int32[B]`` key marking real rows) each time it is called.
      outputs: ``outputs(model, batch) -> {name: array[B, ...]}`` per-example values, jitted.
      finalize: ``finalize({name: np.ndarray[N, ...]}) -> {metric: float}`` on the host, given the
        outputs of every valid row of the whole evaluation set (in order).
    """

    data: Callable[[], Iterable[Batch]]
    outputs: Callable[[nnx.Module, Batch], Dict[str, jax.Array]]
    finalize: Callable[[Dict[str, np.ndarray]], Dict[str, float]]


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

    state: TrainState
    graphdef: nnx.GraphDef
    step: int
    preempted: bool
    summary: dict
    compilations: int


# ----------------------------------------------------------------------------- pieces


def _split_model(model: nnx.Module):
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    return graphdef, params, model_state


def _micro_batches(batch: Batch, k: int) -> Batch:
    """``[B, ...]`` leaves -> ``[k, B / k, ...]``; micro-batch ``i`` holds rows ``i, i + k, ...``."""

    def split(x):
        b = x.shape[0]
        return jnp.swapaxes(x.reshape((b // k, k) + x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    schedule: Callable[[Any], Any], *, grad_accum_steps: int = 1
                    ) -> Callable[[TrainState, Batch], Tuple[TrainState, dict]]:
    """The pure (un-jitted) train step ``step(state, batch) -> (state, metrics)``.

    ``metrics`` holds float32 scalars: ``loss``, the loss function's metrics, ``grad_norm`` (of
    the mean gradient, before clipping), ``learning_rate`` (of this update) and ``examples``
    (the count summed over micro-batches).
    """

    def loss_of(params, model_state, batch, rng):
        model = nnx.merge(graphdef, params, model_state)
        loss_sum, count, sums = loss_fn(model, batch, rng)
        return loss_sum.astype(jnp.float32), (jnp.asarray(count, jnp.float32),
                                              {k: v.astype(jnp.float32) for k, v in sums.items()})

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    def step(state: TrainState, batch: Batch):
        rng, step_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
        if grad_accum_steps == 1:
            (loss_sum, (count, sums)), grads = grad_fn(state.params, state.model_state, batch,
                                                        step_rng)
        else:
            micro = _micro_batches(batch, grad_accum_steps)

            def body(carry, xs):
                i, mb = xs
                (l, (c, s)), g = grad_fn(state.params, state.model_state, mb,
                                         jax.random.fold_in(step_rng, i))
                acc_l, acc_c, acc_s, acc_g = carry
                return (acc_l + l, acc_c + c, jax.tree.map(jnp.add, acc_s, s),
                        jax.tree.map(jnp.add, acc_g, g)), None

            first = jax.tree.map(lambda x: x[0], micro)
            _, (_, s_shape) = jax.eval_shape(loss_of, state.params, state.model_state, first,
                                             step_rng)
            zeros_s = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), s_shape)
            zeros_g = jax.tree.map(jnp.zeros_like, state.params)
            init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zeros_s, zeros_g)
            idx = jnp.arange(grad_accum_steps, dtype=jnp.int32)
            (loss_sum, count, sums, grads), _ = jax.lax.scan(body, init, (idx, micro))
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: (g / denom).astype(g.dtype), grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss_sum / denom,
                   **{k: v / denom for k, v in sums.items()},
                   "grad_norm": optax.tree.norm(grads),
                   "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
                   "examples": count}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  rng=jax.random.key_data(rng))
        return new_state, metrics

    return step


def global_shapes(batch: Mapping[str, Any]) -> Dict[str, jax.ShapeDtypeStruct]:
    """Shapes of the global batch whose host blocks are ``batch``: each host holds ``B`` rows of
    every ``[B, ...]`` array, the global array has ``B * process_count`` (in process order)."""
    n = jax.process_count()

    def one(x):
        x = np.asarray(x)
        if not x.shape:
            raise ValueError("batch arrays need a leading batch dimension, got a scalar")
        return jax.ShapeDtypeStruct((x.shape[0] * n,) + x.shape[1:], x.dtype)

    return {k: one(v) for k, v in batch.items()}


def global_batch_shardings(batch: Mapping[str, Any], mesh: Mesh) -> Dict[str, NamedSharding]:
    """:func:`lsc.parallel.partitioning.batch_sharding` of the global batch of host blocks
    ``batch`` (the mesh axes that divide the global batch size, not the host's)."""
    return partitioning.batch_sharding(global_shapes(batch), mesh)


def global_batch(batch: Mapping[str, np.ndarray], shardings: Any) -> Batch:
    """Host-local numpy batch -> global ``jax.Array`` batch with ``shardings`` (any host count):
    host ``i``'s ``B`` rows become rows ``[i * B, (i + 1) * B)``."""
    shapes = global_shapes(batch)
    return {k: jax.make_array_from_process_local_data(shardings[k], np.asarray(v),
                                                      shapes[k].shape)
            for k, v in batch.items()}


class _Trainer:
    """Holds the compiled functions of one run (see :func:`train`)."""

    def __init__(self, graphdef, loss_fn, tx, schedule, cfg: TrainConfig, mesh: Mesh,
                 state_shardings):
        self.mesh = mesh
        self.state_shardings = state_shardings
        self.traces = 0
        pure = make_train_step(graphdef, loss_fn, tx, schedule,
                               grad_accum_steps=cfg.grad_accum_steps)

        def train_step(state, batch):
            self.traces += 1
            return pure(state, batch)

        self._pure = train_step
        self._jitted = None
        self.batch_shardings = None

    def step(self, state: TrainState, batch: Mapping[str, np.ndarray]):
        if self._jitted is None:
            self.batch_shardings = global_batch_shardings(batch, self.mesh)
            self._jitted = jit_train_step(self._pure, self.state_shardings, self.batch_shardings,
                                          self.mesh)
        return self._jitted(state, global_batch(batch, self.batch_shardings))


def jit_train_step(step: Callable, state_shardings: Any, batch_shardings: Any, mesh: Mesh):
    """``step`` (:func:`make_train_step`) under ``jax.jit`` with the state's and the global
    batch's shardings, replicated metrics and the state donated."""
    return jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, NamedSharding(mesh, PartitionSpec())),
                   donate_argnums=(0,))


def evaluate(evaluator: Evaluator, graphdef: nnx.GraphDef, params: Any, model_state: Any,
             mesh: Mesh, cache: Optional[dict] = None) -> Dict[str, float]:
    """Runs ``evaluator`` over its whole data; returns ``finalize`` of the valid rows' outputs.

    ``cache``: a dict kept across calls to reuse the jitted evaluation function (one compile).
    The outputs of each global batch (every host's rows, in process order) and its ``valid``
    column come back replicated, so every process finalizes the same rows in the same order and
    returns the same metrics, whatever the number of processes.
    """
    cache = cache if cache is not None else {}

    def eval_step(params, model_state, batch):
        model = nnx.merge(graphdef, params, model_state)
        return evaluator.outputs(model, batch), batch["valid"]

    chunks: Dict[str, list] = {}
    for batch in evaluator.data():
        if "valid" not in batch:
            raise ValueError(f"evaluation batches need a 'valid' key, got {sorted(batch)}")
        if "fn" not in cache:
            cache["shardings"] = global_batch_shardings(batch, mesh)
            cache["fn"] = jax.jit(eval_step, in_shardings=(None, None, cache["shardings"]),
                                  out_shardings=NamedSharding(mesh, PartitionSpec()))
        out, valid = jax.device_get(cache["fn"](params, model_state,
                                                global_batch(batch, cache["shardings"])))
        valid = np.asarray(valid) > 0
        for k, v in out.items():
            chunks.setdefault(k, []).append(np.asarray(v)[valid])
    if not chunks:
        raise ValueError("evaluation data yielded no batches")
    return evaluator.finalize({k: np.concatenate(v) for k, v in chunks.items()})


def init_state(create_model: Callable[[], nnx.Module], tx: optax.GradientTransformation,
               mesh: Mesh, rules: partitioning.Rules, seed: int,
               initial_model: Optional[Callable[[], nnx.Module]] = None):
    """``(graphdef, state, state_shardings)`` of a fresh run, placed on ``mesh``.

    The parameters come from ``create_model()`` initialised directly sharded (jitted, no device
    holds unsharded weights), or from ``initial_model()`` when given, put onto their shardings
    (imported weights are host arrays, :func:`lsc.models.hf_io.fill_module`, so each device
    receives its shards only). ``rng`` is the key data of ``jax.random.key(seed)`` folded with 1.
    """
    if initial_model is None:
        graphdef, full = partitioning.sharded_init(create_model, mesh, rules)
        model = nnx.merge(graphdef, full)
    else:
        model = initial_model()
    graphdef, params, model_state = _split_model(model)
    _, abstract, shardings = abstract_state(create_model, tx, mesh, rules, seed)
    if jax.tree.structure(abstract.params) != jax.tree.structure(params):
        raise ValueError("initial_model() has a different parameter structure than create_model()")
    params = jax.device_put(params, shardings.params)
    model_state = jax.device_put(model_state, shardings.model_state)
    state = jax.jit(_state_maker(tx, seed), out_shardings=shardings)(params, model_state)
    return graphdef, state, shardings


def _state_maker(tx: optax.GradientTransformation, seed: int):
    def make(params, model_state):
        rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                          opt_state=tx.init(params), rng=rng)

    return make


def abstract_state(create_model: Callable[[], nnx.Module], tx: optax.GradientTransformation,
                   mesh: Mesh, rules: partitioning.Rules = partitioning.DEFAULT_RULES,
                   seed: int = 0) -> Tuple[nnx.GraphDef, TrainState, TrainState]:
    """``(graphdef, state, shardings)`` of a fresh run without building it: ``state`` holds the
    ``jax.ShapeDtypeStruct`` of every leaf (``nnx.eval_shape`` of the model, ``jax.eval_shape``
    of the optimiser's init), ``shardings`` the ``NamedSharding`` :func:`init_state` places it
    with."""
    graphdef, abs_params, abs_model_state = _split_model(nnx.eval_shape(create_model))
    p_sh = partitioning.state_shardings(abs_params, mesh, rules)
    m_sh = partitioning.state_shardings(abs_model_state, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = TrainState(step=replicated, params=p_sh, model_state=m_sh,
                           opt_state=partitioning.opt_state_shardings(tx, abs_params, p_sh, mesh),
                           rng=replicated)
    state = jax.eval_shape(_state_maker(tx, seed), abs_params, abs_model_state)
    return graphdef, state, shardings


def train(
    *,
    workdir: str,
    create_model: Callable[[], nnx.Module],
    loss_fn: LossFn,
    train_data: Iterator[Mapping[str, np.ndarray]],
    train_config: TrainConfig,
    optim_config: Mapping[str, Any] | None,
    mesh: Mesh,
    rules: partitioning.Rules = partitioning.DEFAULT_RULES,
    seed: int = 0,
    evaluator: Optional[Evaluator] = None,
    initial_model: Optional[Callable[[], nnx.Module]] = None,
    summary_extra: Optional[Callable[[TrainState, nnx.GraphDef], dict]] = None,
) -> TrainResult:
    """Trains to ``train_config.num_steps`` (resuming from ``<workdir>/checkpoints``).

    Args:
      workdir: output directory (``checkpoints/``, ``tensorboard/``, ``summary.json``).
      create_model: builds the model with random weights (also defines the structure restored).
      loss_fn: see the module docstring.
      train_data: an endless iterator of host-local numpy batches of ``batch_size /
        process_count`` rows, with ``get_state()``/``set_state()`` (``lsc.data.pipeline``).
      train_config: :class:`TrainConfig`.
      optim_config: ``config.optim`` (:mod:`lsc.train.optim`).
      mesh: the device mesh (``lsc.parallel.mesh.make_mesh``).
      rules: logical-axis rules.
      seed: the run's seed (parameter init is the caller's, via ``create_model``'s Rngs).
      evaluator: optional periodic evaluation.
      initial_model: builds the initial model for a fresh run (e.g. imported weights).
      summary_extra: ``f(state, graphdef) -> dict`` merged into ``summary.json`` at the end.

    Returns:
      :class:`TrainResult`; ``preempted`` is True when SIGTERM stopped the run early.

    Raises:
      lsc.train.runner.NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is
        kept).
    """
    cfg = train_config
    tx = optim.make_optimizer(optim_config, cfg.num_steps)
    schedule = optim.make_schedule(optim_config, cfg.num_steps)
    built: Dict[str, Any] = {}

    def init(fresh: bool) -> TrainState:
        graphdef, state, shardings = init_state(create_model, tx, mesh, rules, seed,
                                                initial_model=initial_model if fresh else None)
        built.update(graphdef=graphdef,
                     trainer=_Trainer(graphdef, loss_fn, tx, schedule, cfg, mesh, shardings))
        return state

    def step_fn(state, batch):
        state, metrics = built["trainer"].step(state, batch)
        return state, metrics_lib.to_floats(jax.device_get(metrics)), {}

    eval_cache: dict = {}

    def run_eval(at: int, state: TrainState, ctx: runner.Run):
        metrics = evaluate(evaluator, built["graphdef"], state.params, state.model_state, mesh,
                           eval_cache)
        ctx.metrics.add_eval(at, metrics)
        ctx.writer.scalars(at, metrics, "eval")
        logging.info("step %d eval: %s", at,
                     ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))

    def after_step(step: int, state: TrainState, ctx: runner.Run):
        if evaluator is not None and ((cfg.eval_every and step % cfg.eval_every == 0)
                                      or step == cfg.num_steps):
            run_eval(step, state, ctx)

    def at_end(step: int, state: TrainState, ctx: runner.Run):
        if evaluator is not None and not ctx.metrics.history["eval"]:
            run_eval(step, state, ctx)  # a run resumed at its last step

    out = runner.run(
        workdir=workdir, init=init, data=train_data, step_fn=step_fn,
        cadence=runner.Cadence(cfg.num_steps, cfg.log_every, cfg.save_every,
                               cfg.keep_checkpoints, cfg.progress, "train.num_steps"),
        finite=("loss",), name="train", after_step=after_step, at_end=at_end)
    graphdef, trainer, state, step = built["graphdef"], built["trainer"], out.state, out.step
    logging.info("%d compilation(s) of the train step", trainer.traces)
    if out.preempted:
        return TrainResult(state, graphdef, step, True, {}, trainer.traces)
    history = out.metrics.history
    summary = {
        "step": step,
        "train": dict(history["train"][-1]) if history["train"] else {},
        "eval": dict(history["eval"][-1]) if history["eval"] else {},
        "history": history,
    }
    if summary_extra is not None:
        summary.update(summary_extra(state, graphdef))
    checkpoint_lib.export_model(workdir, state.params, state.model_state)
    runner.finish(workdir, summary)
    return TrainResult(state, graphdef, step, False, summary, trainer.traces)
