"""launch/local.sh and launch/gpu_single_node.sh with a fake python (and nvidia-smi) on PATH."""

import os
import shutil
import subprocess
import sys

import pytest

import launch_fakes as fakes

CONFIG = "configs/repro/synthetic_hh.py"


# Package managers on PATH that only log: a launcher must never install anything.
INSTALLERS = ("apt-get", "apt", "sudo", "yum", "dnf")


@pytest.fixture
def launch(tmp_path):
    bin_dir, log_dir = tmp_path / "bin", tmp_path / "log"
    fakes.install(bin_dir)
    log_dir.mkdir()
    for name in INSTALLERS:
        (bin_dir / name).write_text(f'#!/bin/bash\necho "{name} $*" >> {log_dir}/installers\n')
        (bin_dir / name).chmod(0o755)

    def run(script, *args, **env_extra):
        env = fakes.clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                              FAKE_LOG_DIR=str(log_dir), **env_extra)
        proc = fakes.run_script(script, *args, env=env)
        logs = {n: fakes.read_log(log_dir, n) for n in ("python", "nvidia-smi")}
        assert not (log_dir / "installers").exists(), (log_dir / "installers").read_text()
        for path in log_dir.iterdir():
            path.unlink()
        return proc, logs

    return run


def test_local(launch):
    proc, logs = launch("local.sh", CONFIG, "runs/x", "--config.seed=2")
    assert proc.returncode == 0, proc.stderr
    (run,) = logs["python"]
    assert run["argv"] == ["-m", "lsc.main", f"--config={CONFIG}", "--workdir=runs/x",
                           "--config.seed=2"]
    assert run["env"] == {}

    proc, logs = launch("local.sh", f"{CONFIG}:large", "runs/y", LSC_CPU_DEVICES="8")
    assert proc.returncode == 0, proc.stderr
    (run,) = logs["python"]
    assert run["argv"] == ["-m", "lsc.main", f"--config={CONFIG}:large", "--workdir=runs/y"]
    assert run["env"] == {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "8"}


def test_local_usage(launch):
    proc, logs = launch("local.sh", CONFIG)
    assert proc.returncode == 2 and "usage:" in proc.stderr and logs["python"] == []
    proc, _ = launch("local.sh", "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout
    proc, logs = launch("local.sh", CONFIG, "runs/x", LSC_CPU_DEVICES="eight")
    assert proc.returncode == 2 and "LSC_CPU_DEVICES=eight" in proc.stderr
    proc, _ = launch("local.sh", CONFIG, "runs/x", FAKE_PYTHON_RC="3")
    assert proc.returncode == 3


def test_local_runs_the_real_entry_point(tmp_path):
    # the real lsc.main: a bad override is rejected by config validation before anything runs
    env = fakes.clean_env(LSC_PYTHON=sys.executable, LSC_CPU_DEVICES="2")
    proc = fakes.run_script("local.sh", CONFIG, str(tmp_path / "w"),
                            "--config.rewards.properties.helpful.reference.quantile=1.5", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "config.rewards.properties.helpful.reference.quantile: 1.5 is not allowed" in proc.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU may be visible here")
def test_gpu_launcher_without_a_gpu_stops_with_a_clear_message(tmp_path):
    # the real lsc.main under JAX_PLATFORMS=cuda on a machine without a GPU: one error line that
    # names the platform and what to do, not JAX's bare AssertionError
    env = fakes.clean_env(LSC_PYTHON=sys.executable, PYTHONPATH=str(fakes.REPO))
    proc = fakes.run_script("gpu_single_node.sh", CONFIG + ":tiny", str(tmp_path / "w"), env=env)
    assert proc.returncode == 2, proc.stderr
    assert "error: JAX_PLATFORMS=cuda, but JAX cannot start cuda on this machine" in proc.stderr
    assert "launch/local.sh" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_gpu_single_node(launch):
    proc, logs = launch("gpu_single_node.sh", CONFIG, "/data/runs/g", "--config.seed=4",
                        LSC_GPUS="0,1,2,3", LSC_COORDINATOR_ADDRESS="stale:1",
                        LSC_NUM_PROCESSES="8", LSC_PROCESS_ID="3")
    assert proc.returncode == 0, proc.stderr
    (run,) = logs["python"]
    assert run["argv"] == ["-m", "lsc.main", f"--config={CONFIG}", "--workdir=/data/runs/g",
                           "--config.seed=4"]
    # one process over the listed GPUs; multi-process settings from the caller are cleared
    assert run["env"] == {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "JAX_PLATFORMS": "cuda",
                          "PYTHONUNBUFFERED": "1"}
    (smi,) = logs["nvidia-smi"]
    assert smi[-2:] == ["-i", "0,1,2,3"]
    assert "NVIDIA H100" in proc.stderr


def test_gpu_single_node_defaults_and_errors(launch):
    proc, logs = launch("gpu_single_node.sh", CONFIG, "w", JAX_PLATFORMS="cuda,cpu")
    assert proc.returncode == 0, proc.stderr
    assert logs["python"][0]["env"] == {"JAX_PLATFORMS": "cuda,cpu", "PYTHONUNBUFFERED": "1"}
    assert "-i" not in logs["nvidia-smi"][0]
    proc, logs = launch("gpu_single_node.sh", CONFIG, "w", LSC_GPUS="0;1")
    assert proc.returncode == 2 and "LSC_GPUS=0;1" in proc.stderr and logs["python"] == []
    proc, _ = launch("gpu_single_node.sh", CONFIG)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    proc, _ = launch("gpu_single_node.sh", "-h")
    assert proc.returncode == 0 and "usage:" in proc.stdout


@pytest.mark.parametrize("script", ["local.sh", "gpu_single_node.sh", "slurm.sbatch",
                                    "install_tcmalloc.sh"])
def test_shell_syntax(script):
    path = fakes.REPO / "launch" / script
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert os.access(path, os.X_OK)
