"""Every job that starts from saved weights, run in one process on the devices it was started with
(``tests/parallel/test_saved_weights_on_mesh.py`` starts it once per device layout).

:func:`prepare` writes the saved weights under ``ROOT/saved``: tiny random Hugging Face
checkpoints (a T5, a Llama causal LM and a Llama sequence classifier; needs torch and
transformers), the last two converted to run directories by ``python -m lsc.models.hf_convert``
(its ``main``).

``python tests/parallel/saved_weights_jobs.py ROOT LAYOUT MESH`` runs :func:`jobs` in order into
``ROOT/LAYOUT/<job>`` on the mesh ``MESH`` (e.g. ``data=2,fsdp=2,tensor=2``) as ``python -m
lsc.main`` runs a job (validate, write ``config.json``, run; several processes join through the
``LSC_*`` environment), each from saved weights: ``train_rm`` from ``model.init_from`` (the
Hugging Face T5); ``train_predictor`` from that reward model's run and the converted policy;
``rlhf`` from the converted policy, the trained reward model and the trained predictor;
``best_of_k`` from the converted policy and the converted reward model. Each job's workdir also
gets :data:`PLACEMENTS`: where the models it loaded went (:func:`watch_loads`).
"""

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

TINY_WORLD = dict(pairs_train=32, pairs_test=16, sft_train=16, sft_test=16, prompts_train=16,
                  prompts_test=8)
# Sizes that every mesh axis of size 2 divides; the world tokenizer's 233 pieces fit 256.
DECODER = dict(vocab_size=256, d_model=32, num_layers=1, num_heads=4, num_kv_heads=2,
               head_dim=8, mlp_dim=64)
HF_LLAMA = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1,
                bos_token_id=2, initializer_range=0.1, num_labels=1)
HF_T5 = dict(vocab_size=256, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=1,
             num_decoder_layers=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
             pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, initializer_factor=0.5)
PLACEMENTS = "placements.json"  # in each job's workdir: watch_loads' report
TRAIN = dict(num_steps=2, batch_size=8, log_every=1, eval_every=0, save_every=2,
             progress=False)


def saved(root: str, name: str) -> str:
    return os.path.join(root, "saved", name)


def _common(mesh: dict) -> dict:
    return {"world": TINY_WORLD, "data.prompt_len": 12, "data.response_len": 4, "mesh": mesh}


def _align(mesh: dict) -> dict:
    return {**_common(mesh), "rewards.properties.helpful.reference.num_samples": 2,
            "policy.model.arch": DECODER, "rm_model.arch": DECODER}


def jobs(root: str, layout: str, mesh: dict) -> dict:
    """``{name: (config file, overrides)}`` of the jobs of a layout, in the order they run."""
    def run(job):
        return os.path.join(root, layout, job)

    return {
        "train_rm": ("configs/rm/synthetic_helpful.py:t5", {
            **_common(mesh), "model.init_from": saved(root, "hf_t5"), "train": TRAIN,
            "eval.batch_size": 8}),
        "train_predictor": ("configs/predictor/synthetic.py", {
            **_common(mesh), "model.arch": DECODER, "train": TRAIN, "eval.batch_size": 8,
            "reference.rm_workdir": run("train_rm"),
            "reference.policy_workdir": saved(root, "converted_policy"),
            "reference.num_samples": 2, "reference.sample_batch_size": 8}),
        "rlhf": ("configs/rlhf/synthetic.py", {
            **_align(mesh), "policy.workdir": saved(root, "converted_policy"),
            "rewards.properties.helpful.rm_workdir": run("train_rm"),
            "rewards.properties.helpful.reference.source": "predictor",
            "rewards.properties.helpful.reference.predictor_workdir": run("train_predictor"),
            "rl": dict(num_steps=2, batch_size=8, ppo_epochs=1, num_minibatches=1,
                       time_phases=False, log_every=1, save_every=2, progress=False,
                       gold_eval_prompts=0)}),
        "best_of_k": ("configs/best_of_k/synthetic.py:helpful_raw", {
            **_align(mesh), "policy.workdir": saved(root, "converted_policy"),
            "rewards.properties.helpful.rm_workdir": saved(root, "converted_rm"),
            "best_of_k": dict(ks=(2,), num_prompts=8, batch_size=8)}),
    }


def config_of(path_arg: str, overrides: dict):
    """The config of ``configs/<file>.py[:arg]`` with ``overrides`` (dotted field: value; a dict
    value updates that section)."""
    path, _, arg = path_arg.partition(":")
    module = importlib.import_module(path[:-len(".py")].replace("/", "."))
    config = module.get_config(arg)
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = config
        for p in parents:
            node = node[p]
        if isinstance(value, dict) and last in node:
            node[last].update(value)
        else:
            node[last] = value
    return config


def run_job(path_arg: str, overrides: dict, workdir: str) -> None:
    """What ``python -m lsc.main`` does with the config: validate, write it, run the job."""
    from lsc import config as config_lib
    from lsc import main as main_lib
    from lsc.parallel import distributed

    config = config_of(path_arg, overrides)
    config_lib.validate(config, jobs=tuple(main_lib.JOBS))
    if distributed.is_main_process():
        main_lib.write_resolved_config(config, workdir)
    code = main_lib.JOBS[config.job](config, workdir)
    if code != 0:
        raise SystemExit(f"{config.job} in {workdir}: exit code {code}")


def watch_loads(report: dict) -> None:
    """Makes every model a job loads tell where it went (the jobs run as they are):
    ``report[role]`` for each run directory read by ``run_models.load_run_model`` (``devices``:
    the device counts its arrays span; ``split``: whether some array is cut into smaller shards),
    ``report['init_from']`` the array types of each imported T5 (``hf_t5.load_t5``)."""
    import jax
    from flax import nnx

    from lsc.models import hf_t5
    from lsc.train import run_models

    load_run_model, load_t5 = run_models.load_run_model, hf_t5.load_t5

    def placed(role, *args, **kwargs):
        built = load_run_model(role, *args, **kwargs)
        arrays = jax.tree.leaves(nnx.state(built.model))
        report[role] = {"devices": sorted({len(x.sharding.device_set) for x in arrays}),
                        "split": any(x.addressable_shards[0].data.size < x.size for x in arrays)}
        return built

    def imported(*args, **kwargs):
        model = load_t5(*args, **kwargs)
        report["init_from"] = sorted({type(x).__name__ for x in jax.tree.leaves(nnx.state(model))})
        return model

    run_models.load_run_model, hf_t5.load_t5 = placed, imported


def prepare(root: str) -> None:
    """The saved weights (module docstring)."""
    import torch
    import transformers

    from lsc.models import hf_convert

    torch.manual_seed(0)
    for name, cfg_cls, model_cls, fields in (
            ("hf_t5", "T5Config", "T5ForConditionalGeneration", HF_T5),
            ("hf_policy", "LlamaConfig", "LlamaForCausalLM", HF_LLAMA),
            ("hf_rm", "LlamaConfig", "LlamaForSequenceClassification", HF_LLAMA)):
        model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**fields))
        model.save_pretrained(saved(root, name))
    for hf, out in (("hf_policy", "converted_policy"), ("hf_rm", "converted_rm")):
        hf_convert.main([f"--checkpoint={saved(root, hf)}", f"--workdir={saved(root, out)}"])


def main(argv) -> None:
    from lsc import runtime
    from lsc.parallel import distributed

    runtime.quiet_library_logs()
    distributed.initialize(None)
    root, layout, mesh_arg = argv[1:4]
    mesh = {k: int(v) for k, v in (item.split("=") for item in mesh_arg.split(","))}
    report = {}
    watch_loads(report)
    for name, (path_arg, overrides) in jobs(root, layout, mesh).items():
        report.clear()
        workdir = os.path.join(root, layout, name)
        run_job(path_arg, overrides, workdir)
        if distributed.is_main_process():
            runtime.write_json_atomic(os.path.join(workdir, PLACEMENTS), report)


if __name__ == "__main__":
    main(sys.argv)
