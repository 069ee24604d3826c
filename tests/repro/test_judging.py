"""The evaluate stage's jobs (lsc.repro.judging): the runs of a method, the per-run files read
back in the stage's order, and a resumed job that skips the runs already judged."""

import json
import os

import ml_collections
import numpy as np

from lsc.repro import judging


def _rlhf(tmp_path):
    return {"helpful_raw": {"workdir": str(tmp_path / "rlhf" / "helpful_raw"),
                            "kl_coefs": [0.01], "seeds": [1, 0]},
            "helpful_lsc": {"workdir": str(tmp_path / "rlhf" / "helpful_lsc"),
                            "kl_coefs": [0.003, 0.006], "seeds": [0]}}


def _judge(stage, key, value):
    out = os.path.join(stage, *key.split("/"))
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, judging.TRAJECTORY), step=np.arange(3) + value)
    with open(os.path.join(out, judging.JUDGED), "w") as f:
        json.dump({"entry": {"name": f"rlhf/{key}"}, "curve": {"value": value}}, f)


def test_runs_of_a_method_are_seed_major_with_a_gamma_level_only_for_several(tmp_path):
    rlhf = _rlhf(tmp_path)
    got = list(judging.runs_of("helpful_raw", rlhf["helpful_raw"]))
    assert [(k, s, g) for k, _, s, g in got] == [("helpful_raw/seed_1", 1, 0.01),
                                                 ("helpful_raw/seed_0", 0, 0.01)]
    keys = [k for k, *_ in judging.runs_of("helpful_lsc", rlhf["helpful_lsc"])]
    assert keys == ["helpful_lsc/seed_0/kl_0.003", "helpful_lsc/seed_0/kl_0.006"]


def test_collect_reads_every_run_in_the_stages_order(tmp_path):
    stage = str(tmp_path / "evaluate")
    rlhf = _rlhf(tmp_path)
    keys = ["helpful_lsc/seed_0/kl_0.006", "helpful_raw/seed_0", "helpful_raw/seed_1",
            "helpful_lsc/seed_0/kl_0.003"]
    for i, key in enumerate(keys):
        _judge(stage, key, 10 * i)
    entries, curves, arrays = judging.collect(stage, rlhf)
    order = ["helpful_raw/seed_1", "helpful_raw/seed_0", "helpful_lsc/seed_0/kl_0.003",
             "helpful_lsc/seed_0/kl_0.006"]
    assert [e["name"] for e in entries] == [f"rlhf/{k}" for k in order]
    assert curves["rlhf/helpful_raw/seed_0"] == {"value": 10}
    np.testing.assert_array_equal(arrays["helpful_lsc/seed_0/kl_0.006/step"], [0, 1, 2])
    assert sorted(arrays) == sorted(f"{k}/step" for k in order)


def test_a_resumed_job_with_every_run_judged_loads_nothing(tmp_path):
    """A job whose runs all have ``judged.json`` returns 0 before loading any model (the
    inputs point at stages that do not exist)."""
    stage = tmp_path / "evaluate"
    rlhf = _rlhf(tmp_path)
    for key in ("helpful_raw/seed_1", "helpful_raw/seed_0"):
        _judge(str(stage), key, 0)
    inputs = stage / judging.INPUTS
    inputs.write_text(json.dumps({"rlhf": rlhf, "sft": {"workdir": "/nonexistent"}}))
    config = ml_collections.ConfigDict({"judge": {"inputs": str(inputs),
                                                  "method": "helpful_raw"}})
    assert judging.run(config, str(stage / "helpful_raw")) == 0
