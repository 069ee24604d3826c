"""Config validation and the command-line entry point (run as a user would, in a subprocess)."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from lsc import config as config_lib
from lsc import stages as stages_lib
from lsc.data import DATA_SOURCES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPRO = os.path.join(ROOT, "configs", "repro", "synthetic_hh.py")


def load(path=REPRO, arg=""):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def run_main(*args, workdir):
    return subprocess.run(
        [sys.executable, "-m", "lsc.main", f"--config={REPRO}", f"--workdir={workdir}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


@pytest.mark.parametrize("arg", ["", "large", "tiny"])
def test_shipped_configs_validate(arg):
    config_lib.validate(load(arg=arg), jobs=("repro",))


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("rewards.method", "product", "choose one of: sum, weighted_sum, lsc_sum"),
        ("rewards.method", "weighted_sum", "needs config.rewards.weights"),
        ("rewards.properties.helpful.reference.quantile", 1.5, "in [0.0, 1.0]"),
        ("rewards.properties.harmless.reference.quantile", -0.01, "in [0.0, 1.0]"),
        ("rewards.properties.helpful.reference.num_samples", 0, "an integer >= 1"),
        ("rewards.properties.helpful.reference.source", "median", "quantile, predictor"),
        ("rl.kl_coef", (0.1, -0.5), "-0.5 is not allowed; must be a number >= 0.0"),
        ("exact.ks", (1, 0, 4), "0 is not allowed; must be an integer >= 1"),
        ("seed", -1, "must be an integer in [0,"),
        ("data.on_error", "ignore", "choose one of: raise, skip"),
        ("data.source", "hf_parquet", "choose one of: synthetic, hh_rlhf"),
        ("data.max_skip_fraction", 1.5, "in [0.0, 1.0]"),
    ],
)
def test_bad_values_name_the_dotted_field(field, value, needle):
    config = load()
    with config.unlocked():
        parent = config
        *path, leaf = field.split(".")
        for part in path:
            parent = parent[part]
        parent[leaf] = value
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(config, jobs=("repro",))
    message = str(e.value)
    assert f"config.{field}: " in message
    assert needle in message
    assert len(e.value.errors) == 1


def test_missing_data_path_only_matters_for_real_data(tmp_path):
    config = load()
    config_lib.validate(config)  # synthetic: no path needed
    config.data.source = "hh_rlhf"
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.path: is empty"):
        config_lib.validate(config)
    config.data.path = str(tmp_path / "nowhere")
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.path: '.*nowhere' does not exist"):
        config_lib.validate(config)
    config.data.path = str(tmp_path)
    config_lib.validate(config)


@pytest.mark.parametrize("source", DATA_SOURCES)
def test_every_data_source_that_validates_is_read_by_the_training_jobs(source, tmp_path):
    """A value ``data.source`` accepts is one the jobs read: the synthetic world, and hh-rlhf from
    a ``datasets`` parquet export (the rows written here)."""
    from lsc.train import common as train_common

    config = load(arg="tiny")
    written = {}
    if source == "hh_rlhf":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        export = tmp_path / "data" / "helpful-base"
        export.mkdir(parents=True)
        for split, n in (("train", 40), ("test", 6)):
            rows = [(f"\n\nHuman: question {split} {i}\n\nAssistant:", f" answer {i}", " no")
                    for i in range(n)]
            written[split] = {(p, c.strip()) for p, c, _ in rows}
            pq.write_table(pa.table({"chosen": [p + c for p, c, _ in rows],
                                     "rejected": [p + r for p, _, r in rows]}),
                           str(export / f"{split}-00000-of-00001.parquet"))
        config.data.source = source
        config.data.path = str(tmp_path / "data")
    config_lib.validate(config, jobs=("repro",))
    train, test, _ = train_common.read_pairs_for(config, str(tmp_path / "job"), "helpful")
    if source == "hh_rlhf":
        assert {(p.prompt, p.chosen) for p in test} == written["test"]
        assert 0 < len(train) < 40 and {(p.prompt, p.chosen) for p in train} <= written["train"]
    else:
        assert (len(train), len(test)) == (config.world.pairs_train, config.world.pairs_test)


def test_a_reward_model_replicate_reads_the_pair_draw_of_the_replicate_offset(tmp_path):
    """Replicate position 1 with ``world.replicate_offset = 2`` reads draw 3 (``train_r3``); a
    draw outside the world's is an error naming both world fields."""
    from lsc.data import hh_rlhf
    from lsc.repro import subconfigs
    from lsc.train import common as train_common

    config = load(arg="tiny")
    config.world.update(pairs_train=20, pairs_test=5, sft_train=5, sft_test=5, prompts_train=4,
                        prompts_test=4, pair_replicates=2, replicate_offset=2)
    sub = subconfigs.reward_model(config, "helpful", 1)
    workdir = str(tmp_path / "job")
    train, _, _ = train_common.read_pairs_for(sub, workdir, "helpful", sub.rm.replicate)
    expected, _ = hh_rlhf.read_pairs(
        os.path.join(workdir, "world", "helpful-base", "train_r3.jsonl.gz"))
    assert train == expected and len(train) == 20
    with pytest.raises(ValueError, match=r"no draw 1 .*\[0, 2, 3\].*world\.replicate_offset=2, "
                                         r"world\.pair_replicates=2"):
        train_common.read_pairs_for(sub, workdir, "helpful", 1)


def test_unknown_job_lists_the_known_ones():
    config = ml_collections.ConfigDict({"job": "train_everything"})
    with pytest.raises(config_lib.ConfigError, match=r"config\.job: 'train_everything' .* repro"):
        config_lib.validate(config, jobs=("repro",))


def test_every_error_is_reported_at_once():
    config = load()
    config.rewards.method = "nope"
    config.rl.kl_coef = (-1.0,)
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(config)
    assert [f for f, _ in e.value.errors] == ["rewards.method", "rl.kl_coef"]


def test_cli_rejects_bad_override_with_one_clear_error(tmp_path):
    proc = run_main("--config.rewards.properties.helpful.reference.quantile=1.5", workdir=tmp_path / "w")
    assert proc.returncode != 0
    assert "config.rewards.properties.helpful.reference.quantile: 1.5 is not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w" / "config.json").exists()  # nothing ran


def test_cli_rejects_a_bad_field_of_a_stage_config_before_anything_runs(tmp_path):
    proc = run_main("--config.sft.optim.schedule=linear", "--config.rm.train.num_steps=0",
                    "--config.rewards.properties.helpful.reference.quantile=1.5",
                    workdir=tmp_path / "w")
    assert proc.returncode == 2
    assert "config.rewards.properties.helpful.reference.quantile: 1.5" in proc.stderr
    assert "config.sft.optim.schedule: 'linear' is not allowed" in proc.stderr
    assert "config.rm.train.num_steps: 0 is not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_stage_runner_skips_finished_stages_and_reruns_the_one_that_stopped(tmp_path):
    calls = []
    stop = {"c": True}

    def make(name):
        def run(config, stage_dir, earlier):
            calls.append((name, sorted(earlier)))
            assert os.path.isdir(stage_dir)
            if stop.pop(name, False):
                raise KeyboardInterrupt  # the run killed inside stage c
            return {"value": len(calls)}

        return run

    stages = [stages_lib.Stage(name, name, make(name)) for name in "abcd"]
    config = ml_collections.ConfigDict()
    with pytest.raises(KeyboardInterrupt):
        stages_lib.run_stages(stages, config, str(tmp_path))
    assert calls == [("a", []), ("b", ["a"]), ("c", ["a", "b"])]
    second = stages_lib.run_stages(stages, config, str(tmp_path))
    assert second["completed"] == ["a", "b", "c", "d"]
    assert calls[3:] == [("c", ["a", "b"]), ("d", ["a", "b", "c"])]  # a and b did not re-run
    assert second["results"] == {"a": {"value": 1}, "b": {"value": 2}, "c": {"value": 4},
                                 "d": {"value": 5}}


def test_the_entry_point_imports_only_the_chosen_jobs_modules():
    """``lsc.main`` maps job names to modules imported on first use: starting an ``rlhf`` run
    does not import the reproduction (its figures and exact arm: matplotlib, scipy)."""
    code = ("import sys; from lsc import main; "
            "assert 'lsc.repro' not in sys.modules and 'matplotlib' not in sys.modules; "
            "run = main.JOBS['rlhf']; "
            "assert 'lsc.repro' not in sys.modules and 'matplotlib' not in sys.modules; "
            "assert 'repro' in main.VALIDATORS and 'rlhf' not in main.VALIDATORS; "
            "assert 'lsc.repro' not in sys.modules; "
            "assert main.JOBS['repro'].__module__ == 'lsc.repro.pipeline'; "
            "assert 'matplotlib' in sys.modules; "
            "assert sorted(main.JOBS) == sorted(['repro', 'grpo_study', 'rlhf', 'best_of_k', "
            "'train_rm', 'train_sft', 'train_predictor']); "
            "assert callable(main.VALIDATORS['grpo_study']); print(run.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "run"
