"""The miniature reproduction on the synthetic gold world (the README's main job).

Usage::

  python -m lsc.main --config=configs/repro/synthetic_hh.py --workdir=runs/repro
  python -m lsc.main --config=configs/repro/synthetic_hh.py:large --workdir=runs/repro_large

``:large`` is a bigger world with more samples and steps, for tighter results.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    size = arg or "default"
    if size not in ("default", "large"):
        raise ValueError(f"configs/repro/synthetic_hh.py: unknown variant {arg!r}; use '' or 'large'")
    large = size == "large"

    config = ml_collections.ConfigDict()
    config.job = "repro"
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "synthetic"
    config.data.path = ""  # only for real data (hh_rlhf / hf_parquet)
    config.data.on_error = "raise"  # or "skip": skip bad records and count them

    # Sizes and knobs of the synthetic gold world (lsc.data.synthetic.WorldConfig).
    config.world = ml_collections.ConfigDict()
    config.world.pairs_train = 16000 if large else 4000  # preference pairs per property
    config.world.pairs_test = 2000 if large else 500
    config.world.sft_train = 16000 if large else 4000  # demonstrations for the base policy
    config.world.sft_test = 500
    config.world.prompts_train = 4000 if large else 1000  # alignment prompts
    config.world.prompts_test = 1000 if large else 500  # evaluation prompts
    config.world.helpful_harmful_fraction = 0.1
    config.world.harmless_harmful_fraction = 0.5
    config.world.mixed_harmful_fraction = 0.25
    config.world.label_temperature = 1.0

    # Per-property reference rewards r_ref(x) and the aggregation of the centred rewards.
    config.rewards = ml_collections.ConfigDict()
    config.rewards.method = "lsc_sum"
    config.rewards.weights = ()  # only for the weighted methods: one weight per property
    config.rewards.properties = ml_collections.ConfigDict()
    for name in ("helpful", "harmless"):
        prop = ml_collections.ConfigDict()
        prop.reference = ml_collections.ConfigDict()
        prop.reference.source = "quantile"  # quantile | predictor | fixed_response | zero
        prop.reference.quantile = 0.5  # the note's oracle median
        prop.reference.num_samples = 60 if large else 16  # k base-policy samples per prompt
        prop.reference.response = "I'm sorry, but I can't help with that."  # fixed_response
        config.rewards.properties[name] = prop

    config.best_of_k = ml_collections.ConfigDict()
    config.best_of_k.ks = (1, 2, 4, 8, 16, 32) if large else (1, 2, 4, 8, 16)

    config.rl = ml_collections.ConfigDict()
    config.rl.kl_coef = (0.3, 0.1, 0.03, 0.01) if large else (0.3, 0.1, 0.03)
    return config
