"""launch/slurm.sbatch under a fake SLURM environment: fake scontrol / srun / python on PATH."""

import os

import pytest

import launch_fakes as fakes

CONFIG = "configs/repro/synthetic_hh.py"
WORKDIR = "/shared/runs/hh"


@pytest.fixture
def slurm(tmp_path):
    bin_dir, log_dir = tmp_path / "bin", tmp_path / "log"
    fakes.install(bin_dir)
    log_dir.mkdir()

    def run(*args, nodes=2, tasks=4, nodelist="gpu[01-02]", job_id="4242", **env_extra):
        slurm_env = {"SLURM_JOB_ID": job_id, "SLURM_JOB_NODELIST": nodelist,
                     "SLURM_NTASKS": str(tasks), "SLURM_JOB_NUM_NODES": str(nodes),
                     "SLURM_NNODES": str(nodes)}
        env = fakes.clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                              FAKE_LOG_DIR=str(log_dir), **slurm_env)
        env.update(env_extra)
        env = {k: v for k, v in env.items() if v is not None}
        proc = fakes.run_script("slurm.sbatch", *args, env=env)
        logs = {name: fakes.read_log(log_dir, name) for name in ("python", "srun", "scontrol")}
        for path in log_dir.iterdir():
            path.unlink()
        return proc, logs

    return run


def test_one_process_per_gpu(slurm):
    proc, logs = slurm(CONFIG, WORKDIR, "--config.seed=1", "--config.data.path=/data/hh rlhf")
    assert proc.returncode == 0, proc.stderr
    assert logs["scontrol"][0] == ["show", "hostnames", "gpu[01-02]"]
    (srun,) = logs["srun"]
    assert srun["options"] == ["--kill-on-bad-exit=1", "--label"]
    assert srun["command"][:2] == ["bash", "-c"]
    assert srun["env"]["LSC_COORDINATOR_ADDRESS"] == "gpu01:24242"  # 20000 + 4242 % 20000
    assert srun["env"]["LSC_NUM_PROCESSES"] == "4"
    runs = logs["python"]
    assert len(runs) == 4
    for task, run in enumerate(runs):
        assert run["argv"] == ["-m", "lsc.main", f"--config={CONFIG}", f"--workdir={WORKDIR}",
                               "--config.seed=1", "--config.data.path=/data/hh rlhf"]
        assert run["env"] == {
            "LSC_COORDINATOR_ADDRESS": "gpu01:24242",
            "LSC_NUM_PROCESSES": "4",
            "LSC_PROCESS_ID": str(task),
            "LSC_LOCAL_DEVICE_IDS": str(task % 2),
            "LSC_PROCESS_PER": "gpu",
            "PYTHONUNBUFFERED": "1",
            "SLURM_PROCID": str(task),
        }
    assert "4 processes on 2 nodes (one per gpu), coordinator gpu01:24242" in proc.stderr


def test_port_from_the_environment_and_extra_srun_args(slurm):
    proc, logs = slurm(CONFIG, WORKDIR, nodelist="node[7-8]", LSC_COORDINATOR_PORT="12345",
                       LSC_SRUN_ARGS="--mpi=none  --cpu-bind=cores", LSC_PYTHON="python")
    assert proc.returncode == 0, proc.stderr
    assert logs["srun"][0]["options"] == ["--kill-on-bad-exit=1", "--label", "--mpi=none",
                                          "--cpu-bind=cores"]
    assert {r["env"]["LSC_COORDINATOR_ADDRESS"] for r in logs["python"]} == {"node7:12345"}


def test_gpu_already_bound_by_slurm_is_local_device_0(slurm):
    proc, logs = slurm(CONFIG, WORKDIR, FAKE_BIND_GPU="1")
    assert proc.returncode == 0, proc.stderr
    runs = logs["python"]
    assert [r["env"]["CUDA_VISIBLE_DEVICES"] for r in runs] == ["0", "1", "0", "1"]
    assert [r["env"]["LSC_LOCAL_DEVICE_IDS"] for r in runs] == ["0", "0", "0", "0"]
    assert [r["env"]["LSC_PROCESS_ID"] for r in runs] == ["0", "1", "2", "3"]


def test_one_process_per_node(slurm):
    # one task per node: "auto" picks one process per node, which drives all of its GPUs
    proc, logs = slurm(CONFIG, WORKDIR, nodes=3, tasks=3, nodelist="a100-[3-5]",
                       LSC_LOCAL_DEVICE_IDS="7")
    assert proc.returncode == 0, proc.stderr
    runs = logs["python"]
    assert [r["env"]["LSC_PROCESS_ID"] for r in runs] == ["0", "1", "2"]
    for r in runs:
        assert r["env"]["LSC_COORDINATOR_ADDRESS"] == "a100-3:24242"
        assert r["env"]["LSC_NUM_PROCESSES"] == "3"
        assert r["env"]["LSC_PROCESS_PER"] == "node"
        assert "LSC_LOCAL_DEVICE_IDS" not in r["env"]


def test_explicit_mode_is_checked(slurm):
    proc, logs = slurm(CONFIG, WORKDIR, LSC_PROCESS_PER="node")
    assert proc.returncode == 2
    assert "LSC_PROCESS_PER=node needs one task per node, got 4 tasks on 2 nodes" in proc.stderr
    assert logs["srun"] == []
    proc, _ = slurm(CONFIG, WORKDIR, LSC_PROCESS_PER="socket")
    assert proc.returncode == 2 and "use gpu, node or auto" in proc.stderr
    proc, logs = slurm(CONFIG, WORKDIR, nodes=2, tasks=2, LSC_PROCESS_PER="gpu")
    assert proc.returncode == 0, proc.stderr
    assert [r["env"]["LSC_LOCAL_DEVICE_IDS"] for r in logs["python"]] == ["0", "0"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(job_id=None), "SLURM_JOB_ID is not set: submit this script with sbatch"),
        (dict(SLURM_JOB_NODELIST=None), "SLURM_JOB_NODELIST is not set"),
        (dict(tasks="many"), "SLURM_NTASKS=many is not a task count"),
        (dict(LSC_COORDINATOR_PORT="70000"), "LSC_COORDINATOR_PORT=70000 is not a port number"),
        (dict(LSC_COORDINATOR_PORT="http"), "LSC_COORDINATOR_PORT=http is not a port number"),
    ],
)
def test_bad_environment(slurm, kwargs, message):
    proc, logs = slurm(CONFIG, WORKDIR, **kwargs)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert logs["python"] == []


def test_usage_and_failures(slurm):
    proc, _ = slurm(CONFIG)
    assert proc.returncode == 2 and "usage: sbatch" in proc.stderr
    proc, _ = slurm("--help")
    assert proc.returncode == 0 and "usage: sbatch" in proc.stdout
    proc, logs = slurm(CONFIG, WORKDIR, FAKE_PYTHON_RC="1")
    assert proc.returncode == 1
    assert len(logs["python"]) == 4
