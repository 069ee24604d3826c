"""Mixed precision: float32 master weights, bfloat16 matmuls under ``compute_dtype='bfloat16'``.

The lowered programs (StableHLO text) of the reward-model train step (decoder and T5 backbones),
the PPO and GRPO updates, the rollout's scoring and the sampler's decode step are read for the
element types of their ``dot_general`` operands: under bfloat16 compute at least 90% of the dots
take two bfloat16 operands (the rest are the float32 reward / value heads) and none mixes types;
under float32 compute none takes a bfloat16 operand. A bfloat16 model stays within a stated
bound of the float32 model with the same weights, and :func:`lsc.models.layers.contract` matches
a numpy reference in value and gradient.
"""

import importlib
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs.models import decoder as decoder_presets
from configs.models import t5_1_1
from lsc import config as config_lib
from lsc.align import rlhf, utility
from lsc.align.rlhf import rollout as rollout_lib
from lsc.models import decoder, heads, layers, t5
from lsc.parallel import mesh as mesh_lib
from lsc.parallel import partitioning
from lsc.train import loop, optim
from lsc.train import reward_model as rm

S = jax.ShapeDtypeStruct
DTYPES = ("float32", "bfloat16")
B, P, R = 8, 6, 5
_DOT = re.compile(r"stablehlo\.dot(?:_general)?\b.*?:\s*"
                  r"\(tensor<(?:\d+x)*(\w+)>,\s*tensor<(?:\d+x)*(\w+)>\)")


def dot_operand_types(text: str):
    """``[(lhs element type, rhs element type)]`` of every dot in StableHLO ``text``."""
    lines = [line for line in text.splitlines() if "stablehlo.dot" in line]
    types = [_DOT.search(line).groups() for line in lines]
    assert types, "no dot in the program"
    return types


def assert_precision(text: str, compute_dtype: str):
    types = dot_operand_types(text)
    bf16 = sum(t == ("bf16", "bf16") for t in types)
    if compute_dtype == "float32":
        assert all("bf16" not in t for t in types), types
    else:
        assert all(a == b for a, b in types), types  # no mixed-precision operands
        assert bf16 >= 0.9 * len(types), (bf16, len(types), types)


def decoder_config(compute_dtype: str, **kw) -> decoder.DecoderConfig:
    arch = decoder_presets.get_config("tiny").to_dict()
    arch.update(compute_dtype=compute_dtype, **kw)
    return decoder.DecoderConfig.from_mapping(arch)


def t5_config(compute_dtype: str) -> t5.T5Config:
    return t5.T5Config.from_dict(dict(t5_1_1.get_config("tiny").to_dict(),
                                      compute_dtype=compute_dtype))


def backbone(kind: str, compute_dtype: str, seed: int = 0) -> nnx.Module:
    if kind == "decoder":
        return decoder.DecoderLM(decoder_config(compute_dtype), rngs=nnx.Rngs(seed))
    return t5.T5(t5_config(compute_dtype), rngs=nnx.Rngs(seed))


def reward_model(kind: str, compute_dtype: str, seed: int = 0) -> heads.RewardModel:
    return heads.RewardModel(backbone(kind, compute_dtype, seed), rngs=nnx.Rngs(seed + 1),
                             head_init=nnx.initializers.normal(1.0))


def pair_batch(rng, vocab: int = 128):
    prompt = rng.integers(2, vocab, (B, P)).astype(np.int32)
    prompt[:, :2] = 0
    chosen = rng.integers(2, vocab, (B, R)).astype(np.int32)
    rejected = rng.integers(2, vocab, (B, R)).astype(np.int32)
    chosen[:, 3:], rejected[:, 4:] = 0, 0
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected,
            "valid": np.ones((B,), np.int32)}


# ------------------------------------------------------------------------------ lowered dots


@pytest.mark.parametrize("kind", ["decoder", "t5"])
@pytest.mark.parametrize("compute_dtype", DTYPES)
def test_reward_model_train_step_dots(kind, compute_dtype):
    abstract = nnx.eval_shape(lambda: reward_model(kind, compute_dtype))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    optim_cfg = dict(name="adamw", learning_rate=1e-3)
    tx = optim.make_optimizer(optim_cfg, 10)
    step = loop.make_train_step(graphdef, rm.pairwise_loss_fn(), tx,
                                optim.make_schedule(optim_cfg, 10))
    state = jax.eval_shape(
        lambda p, r: loop.TrainState(step=jnp.zeros((), jnp.int32), params=p, model_state=r,
                                     opt_state=tx.init(p),
                                     rng=jax.random.key_data(jax.random.key(0))),
        params, rest)
    # float32 master weights and optimiser state whatever the compute dtype
    floats = [x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
              if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and set(floats) == {jnp.dtype(jnp.float32)}
    batch = {k: S(v.shape, v.dtype) for k, v in pair_batch(np.random.default_rng(0)).items()}
    assert_precision(jax.jit(step).lower(state, batch).as_text(), compute_dtype)


def rl_trainer(algorithm: str, compute_dtype: str) -> rlhf.RLTrainer:
    cfg_kw = dict(compute_dtype=compute_dtype, vocab_size=32)
    pi0 = decoder.DecoderLM(decoder_config(**cfg_kw), rngs=nnx.Rngs(0))
    rmodel = heads.RewardModel(decoder.DecoderLM(decoder_config(**cfg_kw), rngs=nnx.Rngs(10)),
                               rngs=nnx.Rngs(11), head_init=nnx.initializers.normal(1.0))
    spec = utility.UtilitySpec("raw", ("a",), (utility.ReferenceSpec("none"),))
    k = 1 if algorithm == "ppo" else 4
    cfg = rlhf.rl_config(num_steps=2, batch_size=B, algorithm=algorithm, num_samples=k,
                         kl_coef=0.1, ppo_epochs=1, num_minibatches=1, progress=False)
    tx = optim.make_optimizer(dict(learning_rate=1e-3), 2 * cfg.updates_per_step)
    return rlhf.RLTrainer(spec, cfg, rlhf.Models(pi0=pi0, reward_models=[rmodel]), tx, tx,
                          mesh_lib.make_mesh({"data": -1}), partitioning.DEFAULT_RULES,
                          num_prompts=B, response_len=R)


def rl_abstract(trainer):
    state = jax.eval_shape(trainer.init_state)
    batch = {"prompt": S((B, P), jnp.int32), "slot": S((B,), jnp.int32)}
    kl = S((), jnp.float32)
    _, ro = jax.eval_shape(trainer.rollout_step, state, trainer.frozen, batch, kl)
    return state, batch, kl, ro


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
@pytest.mark.parametrize("compute_dtype", DTYPES)
def test_rl_update_dots(algorithm, compute_dtype):
    trainer = rl_trainer(algorithm, compute_dtype)
    state, _, kl, ro = rl_abstract(trainer)
    trained = (state.policy, state.policy_opt, state.value, state.value_opt)
    floats = [x.dtype for x in jax.tree.leaves(trained) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and set(floats) == {jnp.dtype(jnp.float32)}  # float32 master weights
    text = jax.jit(trainer.update_step).lower(state, trainer.frozen, ro, kl).as_text()
    assert_precision(text, compute_dtype)


@pytest.mark.parametrize("compute_dtype", DTYPES)
def test_rollout_scoring_dots(compute_dtype):
    """The rollout's scoring: reward models (and pi0, policy, value) over the samples."""
    trainer = rl_trainer("ppo", compute_dtype)
    state, batch, kl, _ = rl_abstract(trainer)
    st = trainer.static
    r_ref = jax.eval_shape(lambda s, f, b: rollout_lib.reference_phase(st, s, f, b)[0],
                           state, trainer.frozen, batch)
    tokens, mask = jax.eval_shape(lambda s, f, b: rollout_lib.sample_phase(st, s, f, b),
                                  state, trainer.frozen, batch)

    def score(s, f, b, t, m, r, g):
        return rollout_lib.score_phase(st, s, f, b, t, m, r, g)

    text = jax.jit(score).lower(state, trainer.frozen, batch, tokens, mask, r_ref, kl).as_text()
    assert_precision(text, compute_dtype)


@pytest.mark.parametrize("compute_dtype", DTYPES)
def test_t5_reward_model_scoring_dots(compute_dtype):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: reward_model("t5", compute_dtype)))
    text = heads.score.lower(graphdef, state, S((B, P), jnp.int32),
                             S((B, R), jnp.int32)).as_text()
    assert_precision(text, compute_dtype)


@pytest.mark.parametrize("kind", ["decoder", "t5"])
@pytest.mark.parametrize("compute_dtype", DTYPES)
def test_sampler_decode_step_dots(kind, compute_dtype):
    """One decode step over a float32 KV cache (the sampler's default cache dtype)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: backbone(kind, compute_dtype)))

    def prefill(state, prompts):
        model = nnx.merge(graphdef, state)
        return model.prefill(prompts, model.init_cache(B, R, jnp.float32))[1]

    def decode_step(state, tokens, cache):
        return nnx.merge(graphdef, state).decode_step(tokens, cache)

    cache = jax.eval_shape(prefill, state, S((B, P), jnp.int32))
    text = jax.jit(decode_step).lower(state, S((B,), jnp.int32), cache).as_text()
    assert_precision(text, compute_dtype)


# ------------------------------------------------------------------------------ numbers

# Rewards of the tiny bfloat16 models stay within REWARD_TOL * max|r_float32| of the float32
# model with the same weights: bfloat16 keeps 8 significant bits (relative rounding 2**-8 =
# 0.4%), and the reward reads activations that went through a few bfloat16 roundings per layer
# (inputs of each matmul, the residual stream), so a few times 2**-8 of the rewards' scale;
# 3% leaves room for the tiny models' unnormalised random weights. The per-pair Bradley-Terry
# loss -log sigmoid(r_c - r_r) has slope at most 1 in each reward, so the loss moves by at most
# twice the rewards' bound.
REWARD_TOL = 0.03


@pytest.mark.parametrize("kind", ["decoder", "t5"])
@pytest.mark.slow
def test_bfloat16_rewards_and_loss_are_close_to_float32_on_the_same_weights(kind):
    f32 = reward_model(kind, "float32", seed=3)
    graphdef16, _ = nnx.split(nnx.eval_shape(lambda: reward_model(kind, "bfloat16", seed=3)))
    bf16 = nnx.merge(graphdef16, nnx.state(f32))  # the same float32 weights, bfloat16 compute
    batch = {k: jnp.asarray(v) for k, v in pair_batch(np.random.default_rng(4)).items()}
    want, got = rm.pair_rewards(f32, batch), rm.pair_rewards(bf16, batch)
    scale = max(float(jnp.max(jnp.abs(v))) for v in want.values())
    assert scale > 1.0  # rewards of a useful size (the head is N(0, 1))
    for key in want:
        assert got[key].dtype == jnp.float32
        err = float(jnp.max(jnp.abs(got[key] - want[key])))
        assert 0 < err <= REWARD_TOL * scale, (key, err, scale)  # bfloat16 really ran
    loss = rm.pairwise_loss_fn()
    (l32, c, _), (l16, _, _) = loss(f32, batch, None), loss(bf16, batch, None)
    assert abs(float(l16 - l32)) / float(c) <= 2 * REWARD_TOL * scale


def test_contract_matches_numpy_in_value_and_gradient():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 40)), jnp.bfloat16)
    y = jnp.asarray(rng.normal(size=(40, 5)), jnp.bfloat16)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ref = x64 @ y64
    size = np.abs(x64) @ np.abs(y64)  # bounds float32 accumulation error: 40 * 2**-24 * size
    out = layers.contract("mk,kn->mn", x, y)
    assert out.dtype == jnp.bfloat16  # one rounding of the float32 sum to bfloat16
    np.testing.assert_array_less(np.abs(np.asarray(out, np.float64) - ref),
                                 2.0**-8 * np.abs(ref) + 1e-5 * size)
    wide = layers.contract("mk,kn->mn", x, y, jnp.float32)
    assert wide.dtype == jnp.float32
    # float32 accumulation and no rounding to bfloat16; XLA:CPU rounds the product to bfloat16
    # (lsc.models.layers._einsum_f32).
    rounding = 2.0**-8 if jax.default_backend() == "cpu" else 0.0
    np.testing.assert_array_less(np.abs(np.asarray(wide, np.float64) - ref),
                                 rounding * np.abs(ref) + 1e-5 * size + 1e-30)
    # An ellipsis over leading axes is the same product.
    x3 = x.reshape(2, 3, 40)
    np.testing.assert_array_equal(np.asarray(layers.contract("...k,kn->...n", x3, y)),
                                  np.asarray(out).reshape(2, 3, 5))

    def f(x, y):
        return jnp.sum(layers.contract("mk,kn->mn", x, y).astype(jnp.float32) * w)

    dx, dy = jax.grad(f, argnums=(0, 1))(x, y)
    assert dx.dtype == dy.dtype == jnp.bfloat16
    g = np.asarray(jnp.asarray(w, jnp.bfloat16), np.float64)  # the cotangent in bfloat16
    for got, want, bound in ((dx, g @ y64.T, np.abs(g) @ np.abs(y64.T)),
                             (dy, x64.T @ g, np.abs(x64.T) @ np.abs(g))):
        np.testing.assert_array_less(np.abs(np.asarray(got, np.float64) - want),
                                     2.0**-8 * np.abs(want) + 1e-5 * bound + 1e-30)
    # The forward and both backward products take bfloat16 operands.
    text = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(x, y).as_text()
    types = dot_operand_types(text)
    assert types == [("bf16", "bf16")] * 3, types


def test_contract_rejects_mixed_operand_dtypes():
    with pytest.raises(ValueError, match="different dtypes"):
        layers.contract("mk,kn->mn", jnp.ones((2, 3), jnp.bfloat16), jnp.ones((3, 4)))


# ------------------------------------------------------------------------------ configs

PAPER = [("configs.rm.t5_base", "helpful"), ("configs.rlhf.paper", ""),
         ("configs.rlhf.par", ""), ("configs.best_of_k.paper", "")]
SYNTHETIC = [("configs.rm.synthetic_helpful", ""), ("configs.rm.synthetic_helpful", "t5"),
             ("configs.rm.synthetic_harmless", ""), ("configs.sft.synthetic", ""),
             ("configs.rlhf.synthetic", ""), ("configs.best_of_k.synthetic", ""),
             ("configs.repro.synthetic_hh", "")]


def model_sections(config, prefix=""):
    """``{dotted path: section}`` of every model section (one with an ``arch``)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            path = f"{prefix}{key}"
            if "arch" in value:
                out[path] = value
            out.update(model_sections(value, path + "."))
    return out


@pytest.mark.parametrize("module,arg,want", [(m, a, "bfloat16") for m, a in PAPER]
                         + [(m, a, "float32") for m, a in SYNTHETIC])
def test_paper_configs_compute_in_bfloat16_and_synthetic_ones_in_float32(module, arg, want):
    config = importlib.import_module(module).get_config(arg)
    sections = model_sections(config)
    assert sections
    for path, section in sections.items():
        assert section.arch.compute_dtype == want, path
        assert section.arch.param_dtype == "float32", path
    assert "compute_dtype" not in config.get("train", {})


@pytest.mark.parametrize("field,value,needle", [
    ("model.arch.compute_dtype", "float16", "choose one of: float32, bfloat16"),
    ("model.arch.param_dtype", "bfloat16", "float32 master weights"),
])
def test_precision_fields_are_validated_by_dotted_name(field, value, needle):
    config = importlib.import_module("configs.rm.t5_base").get_config("helpful")
    config.model.arch[field.split(".")[-1]] = value
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.validate(config)
    assert f"config.{field}: " in str(err.value) and needle in str(err.value)


def test_rlhf_model_sections_are_validated_by_dotted_name():
    config = importlib.import_module("configs.rlhf.paper").get_config("")
    config.policy.model.arch.compute_dtype = "float16"
    config.policy.model.arch.param_dtype = "bfloat16"
    config.rm_model.arch.compute_dtype = "float64"
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.validate(config)
    fields = {field for field, _ in err.value.errors}
    assert {"policy.model.arch.compute_dtype", "policy.model.arch.param_dtype",
            "rm_model.arch.compute_dtype"} <= fields
