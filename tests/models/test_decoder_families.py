"""The decoder options of the Gemma 2 / 3, Qwen 2 / 3 and Mistral families (no torch needed):
presets, parameter counts, sliding-window masks and the validation of the new fields."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.models import decoder as presets
from lsc.models.decoder import DecoderConfig, DecoderLM

# Exact parameter counts of the published checkpoints.
PUBLISHED = {"gemma2_2b": 2_614_341_888, "gemma3_1b": 999_885_952}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_parameter_counts(name):
    assert DecoderConfig.from_mapping(presets.get_config(name)).num_params() == PUBLISHED[name]


@pytest.mark.parametrize("name", ["tiny_gemma2", "tiny_gemma3", "tiny_qwen3", "qwen2_like"])
def test_param_count_matches_module(name):
    if name == "qwen2_like":
        cfg = dataclasses.replace(DecoderConfig.from_mapping(presets.get_config("tiny")),
                                  attention_bias=True, attention_out_bias=False)
    else:
        cfg = DecoderConfig.from_mapping(presets.get_config(name))
    model = nnx.eval_shape(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == cfg.num_params()


def test_sliding_window_sees_only_recent_tokens():
    """With a window of 2 on every layer of a 1-layer model, a token's output depends on itself
    and the token before it only; left padding does not use up the window."""
    base = DecoderConfig.from_mapping(dict(presets.get_config("tiny").to_dict(), num_layers=1))
    cfg = dataclasses.replace(base, sliding_window=2)
    model = DecoderLM(cfg, rngs=nnx.Rngs(0))
    a = jnp.asarray([[0, 0, 5, 6, 7, 8]])
    b = jnp.asarray([[0, 0, 9, 6, 7, 8]])  # differs 3 tokens before the last
    c = jnp.asarray([[0, 0, 5, 6, 9, 8]])  # differs 1 token before the last
    la, lb, lc = (np.asarray(model(x))[0, -1] for x in (a, b, c))
    np.testing.assert_allclose(la, lb, atol=1e-6)
    assert np.abs(la - lc).max() > 1e-3
    full = DecoderLM(base, rngs=nnx.Rngs(0))
    assert np.abs(np.asarray(full(a))[0, -1] - np.asarray(full(b))[0, -1]).max() > 1e-3


def test_config_round_trips_through_json_lists():
    cfg = DecoderConfig.from_mapping(presets.get_config("tiny_gemma3"))
    d = dataclasses.asdict(cfg)
    d["layer_types"] = list(d["layer_types"])
    assert DecoderConfig.from_mapping(d) == cfg


@pytest.mark.parametrize("changes,match", [
    (dict(layer_types=("full_attention",)), "model.layer_types has 1 entries"),
    (dict(layer_types=("full_attention", "local")), "model.layer_types"),
    (dict(layer_types=("full_attention", "sliding_attention")), "model.sliding_window"),
    (dict(sliding_window=-1), "model.sliding_window"),
    (dict(attn_logit_softcap=-1.0), "model.attn_logit_softcap"),
])
def test_new_fields_are_validated(changes, match):
    base = presets.get_config("tiny").to_dict()
    with pytest.raises(ValueError, match=match):
        DecoderConfig.from_mapping(dict(base, **changes))
