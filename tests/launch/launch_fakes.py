"""Fake ``python``, ``srun``, ``scontrol`` and ``nvidia-smi`` executables for the launcher tests.

Each records its arguments (and, for ``python``, the environment the job would see) as JSON lines
in ``$FAKE_LOG_DIR``, so a test can run the real launch scripts without SLURM, GPUs or a job.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]

FAKE_PYTHON = """\
import json, os, sys
keys = ("LSC_COORDINATOR_ADDRESS", "LSC_NUM_PROCESSES", "LSC_PROCESS_ID", "LSC_LOCAL_DEVICE_IDS",
        "LSC_PROCESS_PER", "LSC_DISTRIBUTED", "JAX_PLATFORMS", "JAX_NUM_CPU_DEVICES",
        "CUDA_VISIBLE_DEVICES", "PYTHONUNBUFFERED", "SLURM_PROCID", "WANDB_MODE")
record = {"argv": sys.argv[1:], "env": {k: os.environ[k] for k in keys if k in os.environ}}
with open(os.path.join(os.environ["FAKE_LOG_DIR"], "python.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\\n")
if "lsc.main" in sys.argv:
    print("fake lsc.main ran", flush=True)
    sys.exit(int(os.environ.get("FAKE_PYTHON_RC", "0")))
"""

# scontrol show hostnames NODELIST, for lists like gpu[01-02,05],cpu7
FAKE_SCONTROL = """\
import json, os, re, sys
with open(os.path.join(os.environ["FAKE_LOG_DIR"], "scontrol.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] != ["show", "hostnames"] or len(sys.argv) != 4:
    sys.exit("fake scontrol: only 'show hostnames NODELIST' is supported")
for prefix, ranges, plain in re.findall(r"([^,\\[]+)\\[([^\\]]+)\\]|([^,\\[\\]]+)", sys.argv[3]):
    if plain:
        print(plain)
        continue
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        for i in range(int(lo), int(hi or lo) + 1):
            print(f"{prefix}{i:0{len(lo)}d}")
"""

# srun [OPTIONS] COMMAND...: starts SLURM_NTASKS copies of COMMAND, block-distributed over the
# nodes, each with its SLURM_PROCID / SLURM_LOCALID / SLURM_NODEID / SLURMD_NODENAME; with
# FAKE_BIND_GPU=1 each task also gets CUDA_VISIBLE_DEVICES=<its local id>, as --gpus-per-task does.
FAKE_SRUN = """\
import json, os, subprocess, sys
args = sys.argv[1:]
i = 0
while i < len(args) and args[i].startswith("-"):
    i += 1
options, command = args[:i], args[i:]
with open(os.path.join(os.environ["FAKE_LOG_DIR"], "srun.jsonl"), "a") as f:
    f.write(json.dumps({"options": options, "command": command,
                        "env": {k: v for k, v in os.environ.items() if k.startswith("LSC_")}})
            + "\\n")
ntasks = int(os.environ["SLURM_NTASKS"])
hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                       capture_output=True, text=True, check=True).stdout.split()
per_node = -(-ntasks // len(hosts))
rc = 0
for task in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(task), SLURM_LOCALID=str(task % per_node),
               SLURM_NODEID=str(task // per_node), SLURMD_NODENAME=hosts[task // per_node],
               SLURM_STEP_ID="0")
    if os.environ.get("FAKE_BIND_GPU") == "1":
        env["CUDA_VISIBLE_DEVICES"] = str(task % per_node)
    rc = max(rc, subprocess.run(command, env=env).returncode)
sys.exit(rc)
"""

FAKE_NVIDIA_SMI = """\
import json, os, sys
with open(os.path.join(os.environ["FAKE_LOG_DIR"], "nvidia-smi.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print("0, NVIDIA H100 80GB HBM3, 81559 MiB")
"""


def install(bin_dir: pathlib.Path) -> None:
    """Writes the fakes into ``bin_dir`` as executables run by this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("python", FAKE_PYTHON), ("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN),
                       ("nvidia-smi", FAKE_NVIDIA_SMI)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
        path.chmod(0o755)


def read_log(log_dir: pathlib.Path, name: str) -> list:
    path = log_dir / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def clean_env(**extra: str) -> dict:
    """The current environment without any SLURM_* / LSC_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "LSC_", "CUDA_VISIBLE", "FAKE_", "WANDB_"))}
    env.pop("JAX_PLATFORMS", None)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    env.pop("PYTHONUNBUFFERED", None)
    env.update(extra)
    return env


def run_script(script: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "launch" / script), *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60)
