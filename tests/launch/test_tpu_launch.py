"""launch/tpu.py: dry-run commands, accelerator types, and the real path against a fake gcloud."""

import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

import launch_fakes as fakes

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "launch" / "tpu.py"
CONFIG = "configs/repro/synthetic_hh.py"


def _load_module():
    spec = importlib.util.spec_from_file_location("lsc_launch_tpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tpu = _load_module()


def run_tpu(*args, env=None, cwd=REPO):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def commands(stdout):
    """The printed commands (comment lines dropped), each split as the shell would."""
    return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


def flag(cmd, name):
    values = [a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, cmd)
    return values[0]


def gcloud_verb(cmd):
    assert cmd[:4] == ["gcloud", "compute", "tpus", "tpu-vm"], cmd
    return cmd[4]


BASE = ["--name=lsc-pod", "--project=my-proj", "--zone=us-central2-b"]


@pytest.mark.parametrize(
    "accelerator, workers, chips, version",
    [
        ("v4-8", 1, 4, "tpu-ubuntu2204-base"),
        ("v4-32", 4, 16, "tpu-ubuntu2204-base"),
        ("v5litepod-8", 1, 8, "v2-alpha-tpuv5-lite"),
        ("v5litepod-16", 4, 16, "v2-alpha-tpuv5-lite"),
        ("v5p-8", 1, 4, "v2-alpha-tpuv5"),
        ("v6e-64", 16, 64, "v2-alpha-tpuv6e"),
    ],
)
def test_dry_run_job(accelerator, workers, chips, version):
    proc = run_tpu(*BASE, f"--accelerator-type={accelerator}", f"--config={CONFIG}",
                   "--workdir=/gcs/my-bucket/lsc/repro", "--config.seed=3",
                   "--config.rewards.method=sigma_and", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"# workers: {workers}\n" in proc.stdout
    assert f"# {accelerator}: {chips} chips, {workers} worker" in proc.stdout
    cmds = commands(proc.stdout)
    # describe, create, git archive, scp, install, job; no delete unless asked
    assert [c[0] for c in cmds] == ["gcloud", "gcloud", "git", "gcloud", "gcloud", "gcloud"]
    describe, create, archive, scp, install, job = cmds
    assert gcloud_verb(describe) == "describe" and describe[5] == "lsc-pod"
    assert gcloud_verb(create) == "create" and create[5] == "lsc-pod"
    for cmd in (describe, create, scp, install, job):
        assert flag(cmd, "project") == "my-proj"
        assert flag(cmd, "zone") == "us-central2-b"
    assert flag(create, "accelerator-type") == accelerator
    assert flag(create, "version") == version
    assert "--spot" not in create and "--preemptible" not in create
    assert archive[:4] == ["git", "-C", str(REPO), "archive"] and archive[-1] == "HEAD"
    tarball = flag(archive, "output")
    assert gcloud_verb(scp) == "scp" and scp[5:7] == [tarball, "lsc-pod:lsc-src.tar.gz"]
    for cmd in (scp, install, job):
        assert flag(cmd, "worker") == "all"
    assert gcloud_verb(install) == "ssh" and gcloud_verb(job) == "ssh"
    install_script = flag(install, "command")
    assert "tar -xzf lsc-src.tar.gz -C lsc.new" in install_script
    assert "python3 -m pip install --quiet -e . 'jax[tpu]'" in install_script
    remote = flag(job, "command")
    expected = ("python3 -m lsc.main --config=configs/repro/synthetic_hh.py "
                "--workdir=/gcs/my-bucket/lsc/repro --config.seed=3 "
                "--config.rewards.method=sigma_and")
    assert expected in remote
    assert "cd lsc && env PYTHONUNBUFFERED=1" in remote
    assert ("LSC_DISTRIBUTED=auto" in remote) == (workers > 1)
    assert "tee ~/lsc-run.log" in remote
    assert not any("delete" in c for c in cmds)


def test_dry_run_output_is_one_shell_line_per_command():
    proc = run_tpu(*BASE, "--accelerator-type=v4-32", f"--config={CONFIG}:large",
                   "--workdir=/gcs/b/run one", "--dry-run", "--", "--config.rl.kl_coef=(0.1, 0.01)")
    assert proc.returncode == 0, proc.stderr
    job = commands(proc.stdout)[-1]
    # the remote command is itself shell; split it once more and find the job's argv
    remote = shlex.split(flag(job, "command"))
    i = remote.index("-m")
    assert remote[i - 1:i + 5] == ["python3", "-m", "lsc.main",
                                   "--config=configs/repro/synthetic_hh.py:large",
                                   "--workdir=/gcs/b/run one", "--config.rl.kl_coef=(0.1, 0.01)"]
    assert bash_syntax_ok(proc.stdout)


def bash_syntax_ok(script):
    return subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_dry_run_spot_delete_and_extra_flags():
    proc = run_tpu("--name=t", "--zone=europe-west4-a", "--accelerator-type=v5litepod-16",
                   "--version=v2-alpha-tpuv5-lite-custom", "--spot", "--internal-ip",
                   "--create-arg=--network=my-net", f"--config={CONFIG}", "--workdir=/gcs/b/w",
                   "--env=WANDB_MODE=offline", "--python=/opt/venv/bin/python", "--delete",
                   "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    create = cmds[1]
    assert not any(a.startswith("--project") for c in cmds for a in c)
    assert flag(create, "version") == "v2-alpha-tpuv5-lite-custom"
    assert "--spot" in create and "--network=my-net" in create
    assert "--internal-ip" in cmds[3] and "--internal-ip" in cmds[4]
    job = flag(cmds[5], "command")
    assert "env PYTHONUNBUFFERED=1 LSC_DISTRIBUTED=auto WANDB_MODE=offline " \
           "/opt/venv/bin/python -m lsc.main" in job
    assert cmds[-1] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "t",
                        "--zone=europe-west4-a", "--quiet"]
    assert len(cmds) == 7


def test_dry_run_preemptible_no_install_detach():
    proc = run_tpu(*BASE, "--accelerator-type=v4-8", "--preemptible", "--no-install",
                   f"--config={CONFIG}", "--workdir=/tmp/w", "--detach", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    assert [gcloud_verb(c) for c in cmds] == ["describe", "create", "ssh"]
    assert "--preemptible" in cmds[1]
    remote = flag(cmds[2], "command")
    assert "nohup env PYTHONUNBUFFERED=1 python3 -m lsc.main" in remote
    assert "echo $! > ~/lsc-run.pid" in remote and "> ~/lsc-run.log 2>&1" in remote


def test_dry_run_ssh_command_logs_and_delete_only():
    proc = run_tpu(*BASE, "--accelerator-type=v4-32", "--no-install",
                   "--ssh-command=python3 -c 'import jax; print(jax.device_count())'", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    assert [gcloud_verb(c) for c in cmds] == ["describe", "create", "ssh"]
    assert flag(cmds[2], "worker") == "all"
    assert flag(cmds[2], "command") == "python3 -c 'import jax; print(jax.device_count())'"

    proc = run_tpu(*BASE, "--logs", "--worker=0", "--delete", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmds = commands(proc.stdout)
    assert [gcloud_verb(c) for c in cmds] == ["ssh", "delete"]
    assert flag(cmds[0], "worker") == "0"
    assert "tail -n +1 --pid=" in flag(cmds[0], "command")

    proc = run_tpu(*BASE, "--delete", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert commands(proc.stdout) == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "lsc-pod",
                                      "--project=my-proj", "--zone=us-central2-b", "--quiet"]]


def test_unknown_accelerator_type_is_refused():
    proc = run_tpu(*BASE, "--accelerator-type=v4-24", f"--config={CONFIG}", "--workdir=/gcs/b/w",
                   "--dry-run")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "unknown accelerator type 'v4-24'" in proc.stderr
    for known in ("v4-N (N = cores): 8, 16, 32", "v5litepod-N (N = chips): 1, 4, 8, 16",
                  "v5p-N", "v6e-N", "v3-N", "v2-N"):
        assert known in proc.stderr
    proc = run_tpu(*BASE, "--accelerator-type=tpu7x-8", "--delete", "--dry-run")
    assert proc.returncode == 2 and "unknown accelerator type 'tpu7x-8'" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--accelerator-type=v4-8"], "nothing to do"),
        (["--accelerator-type=v4-8", f"--config={CONFIG}"], "needs both --config and --workdir"),
        (["--accelerator-type=v4-8", f"--config={CONFIG}", "--workdir=gs://b/w"],
         "refuse URL workdirs"),
        ([f"--config={CONFIG}", "--workdir=/gcs/b/w"], "--accelerator-type is required"),
        (["--accelerator-type=v4-8", f"--config={CONFIG}", "--workdir=w", "--ssh-command=ls"],
         "choose one of"),
        (["--accelerator-type=v4-8", f"--config={CONFIG}", "--workdir=w", "--spot",
          "--preemptible"], "choose one of --spot and --preemptible"),
        (["--accelerator-type=v4-8", f"--config={CONFIG}", "--workdir=w", "--detach",
          "--delete"], "--detach with --delete"),
        (["--accelerator-type=v4-8", "--delete", "--config.seed=1"], "overrides given without"),
        (["--accelerator-type=v4-8", "--ssh-command=ls", "--worker=1"], "has 1 worker"),
        (["--accelerator-type=v4-8", f"--config={CONFIG}", "--workdir=w", "--env=NOEQUALS"],
         "is not KEY=VALUE"),
    ],
)
def test_bad_requests_are_refused(args, message):
    proc = run_tpu(*BASE, *args, "--dry-run")
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr


def test_unknown_flag_is_not_taken_for_an_override():
    proc = run_tpu(*BASE, "--accelerator-type=v4-8", f"--config={CONFIG}", "--workdir=w",
                   "--wokrdir=x", "--dry-run")
    assert proc.returncode == 2
    assert "unrecognized arguments: --wokrdir=x" in proc.stderr


def test_worker_counts():
    expected = {
        "v2-8": 1, "v2-32": 4, "v3-8": 1, "v3-32": 4, "v3-2048": 256,
        "v4-8": 1, "v4-16": 2, "v4-32": 4, "v4-128": 16, "v4-4096": 512,
        "v5litepod-1": 1, "v5litepod-4": 1, "v5litepod-8": 1, "v5litepod-16": 4,
        "v5litepod-256": 64, "v5p-8": 1, "v5p-16": 2, "v5p-128": 16,
        "v6e-8": 1, "v6e-16": 4, "v6e-256": 64,
    }
    for name, workers in expected.items():
        assert tpu.parse_accelerator_type(name).workers == workers, name
    for name in tpu.known_accelerator_types():
        s = tpu.parse_accelerator_type(name)
        assert s.chips % s.workers == 0, name
        assert s.workers == 1 or s.chips_per_worker == 4, name
    for bad in ("v4", "v4-", "v4-x", "v5e-16", "v5litepod-2", "V4-8", "v4-8-extra"):
        with pytest.raises(tpu.LaunchError, match="unknown accelerator type"):
            tpu.parse_accelerator_type(bad)


# ---------------------------------------------------------------------------------------------
# Without --dry-run, against a fake gcloud that records its calls.

FAKE_GCLOUD = textwrap.dedent("""\
    #!{python}
    # Records each call; "describe" answers from the states file; "scp" and "ssh" act on fake
    # workers: directories $FAKE_GCLOUD_DIR/worker<i> used as HOME, where ssh runs --command
    # with bash, as a TPU VM's login shell would.
    import json, os, shutil, subprocess, sys
    state_dir = os.environ["FAKE_GCLOUD_DIR"]
    args = sys.argv[1:]
    with open(os.path.join(state_dir, "calls.jsonl"), "a") as f:
        f.write(json.dumps(args) + "\\n")
    verb = args[3]
    if verb == os.environ.get("FAKE_FAIL_VERB"):
        sys.stderr.write(f"ERROR: (gcloud.compute.tpus.tpu-vm.{{verb}}) fake failure\\n")
        sys.exit(1)
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    workers = int(os.environ.get("FAKE_WORKERS", "1"))
    worker = opts.get("worker", "0")
    chosen = range(workers) if worker == "all" else [int(worker)]
    homes = [os.path.join(state_dir, f"worker{{i}}") for i in chosen]
    states = os.path.join(state_dir, "states")
    if verb == "describe":
        lines = open(states).read().split()
        state, rest = lines[0], lines[1:]
        if rest:
            open(states, "w").write("\\n".join(rest))
        if state == "MISSING":
            sys.stderr.write("ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: "
                             "Resource 'nodes/x' was not found\\n")
            sys.exit(1)
        print(json.dumps({{"state": state,
                           "acceleratorType": os.environ.get("FAKE_TYPE", "v4-32")}}))
    elif verb == "scp":
        src, dest = [a for a in args[4:] if not a.startswith("--")]
        for home in homes:
            os.makedirs(home, exist_ok=True)
            shutil.copy(src, os.path.join(home, dest.split(":", 1)[1]))
    elif verb == "ssh":
        rc = 0
        for home in homes:
            os.makedirs(home, exist_ok=True)
            env = dict(os.environ, HOME=home)
            rc = max(rc, subprocess.run(["bash", "-c", opts["command"]], cwd=home,
                                        env=env).returncode)
        sys.exit(rc)
    """)


@pytest.fixture
def fake_gcloud(tmp_path):
    bin_dir, log_dir = tmp_path / "bin", tmp_path / "log"
    fakes.install(bin_dir)  # python (records lsc.main runs) and friends
    log_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    gcloud.chmod(0o755)

    def run(states, *args, **env_extra):
        (tmp_path / "states").write_text("\n".join(states))
        calls = tmp_path / "calls.jsonl"
        for path in [calls, *log_dir.iterdir()]:
            if path.exists():
                path.unlink()
        for i in range(4):  # workers set up by an earlier run, for --no-install
            (tmp_path / f"worker{i}" / "lsc").mkdir(parents=True, exist_ok=True)
        env = dict(fakes.clean_env(), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                   FAKE_GCLOUD_DIR=str(tmp_path), FAKE_LOG_DIR=str(log_dir),
                   TMPDIR=str(tmp_path), **env_extra)
        proc = run_tpu(*args, "--poll-interval=0", "--python=python", env=env)
        recorded = [json.loads(l) for l in calls.read_text().splitlines()] if calls.exists() else []
        return proc, [c[3] for c in recorded], fakes.read_log(log_dir, "python")

    return run


JOB = [*BASE, "--accelerator-type=v4-32", f"--config={CONFIG}", "--workdir=/gcs/b/w",
       "--config.seed=5"]
LSC_MAIN = ["-m", "lsc.main", f"--config={CONFIG}", "--workdir=/gcs/b/w", "--config.seed=5"]


def test_creates_when_missing_installs_and_runs_on_every_worker(fake_gcloud, tmp_path):
    proc, verbs, runs = fake_gcloud(["MISSING", "CREATING", "READY"], *JOB, FAKE_WORKERS="4")
    assert proc.returncode == 0, proc.stderr
    assert verbs == ["describe", "create", "describe", "describe", "scp", "ssh", "ssh"]
    tarball = tmp_path / "lsc-src-lsc-pod.tar.gz"
    listing = subprocess.run(["tar", "-tzf", str(tarball)], capture_output=True, text=True).stdout
    assert "lsc/main.py" in listing.split() and "setup.py" in listing.split()
    for i in range(4):
        home = tmp_path / f"worker{i}"
        assert (home / "lsc" / "lsc" / "main.py").is_file()  # unpacked into ~/lsc
        assert not (home / "lsc.new").exists()
        assert (home / "lsc-run.log").is_file()
    installs = [r for r in runs if r["argv"][:3] == ["-m", "pip", "install"]]
    assert [r["argv"] for r in installs[1::2]] == [
        ["-m", "pip", "install", "--quiet", "-e", ".", "jax[tpu]"]] * 4
    jobs = [r for r in runs if "lsc.main" in r["argv"]]
    assert [r["argv"] for r in jobs] == [LSC_MAIN] * 4
    assert all(r["env"] == {"LSC_DISTRIBUTED": "auto", "PYTHONUNBUFFERED": "1"} for r in jobs)


def test_reuses_a_ready_vm_and_deletes_after_a_failed_job(fake_gcloud, tmp_path):
    proc, verbs, runs = fake_gcloud(["READY"], *JOB, "--no-install", "--delete",
                                    "--env=WANDB_MODE=offline", FAKE_PYTHON_RC="3",
                                    FAKE_WORKERS="1")
    assert proc.returncode == 3
    assert "the job exited with status 3" in proc.stderr
    assert verbs == ["describe", "ssh", "delete"]
    assert runs[0]["argv"] == LSC_MAIN
    assert runs[0]["env"] == {"LSC_DISTRIBUTED": "auto", "PYTHONUNBUFFERED": "1",
                              "WANDB_MODE": "offline"}


def test_detached_job_and_logs(fake_gcloud, tmp_path):
    proc, verbs, _ = fake_gcloud(["READY"], *JOB, "--no-install", "--detach")
    assert proc.returncode == 0, proc.stderr
    assert verbs == ["describe", "ssh"]
    assert "started lsc job on" in proc.stdout
    pid = int((tmp_path / "worker0" / "lsc-run.pid").read_text())
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the detached job did not finish"
    assert [r["argv"] for r in fakes.read_log(tmp_path / "log", "python")] == [LSC_MAIN]
    proc, verbs, _ = fake_gcloud([], *BASE, "--logs", "--worker=0")
    assert proc.returncode == 0, proc.stderr
    assert verbs == ["ssh"]
    assert proc.stdout.splitlines()[-1] == "fake lsc.main ran"  # ~/lsc-run.log of worker 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ssh_command_and_a_failed_create_still_deletes(fake_gcloud, tmp_path):
    proc, verbs, _ = fake_gcloud(["READY"], *BASE, "--accelerator-type=v4-32", "--no-install",
                                 "--ssh-command=echo hello from $HOME", FAKE_WORKERS="4")
    assert proc.returncode == 0, proc.stderr
    homes = [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("hello")]
    assert homes == [str(tmp_path / f"worker{i}") for i in range(4)]
    proc, verbs, _ = fake_gcloud(["MISSING"], *JOB, "--delete", FAKE_FAIL_VERB="create")
    assert proc.returncode == 2
    assert "command failed with exit status 1: gcloud compute tpus tpu-vm create" in proc.stderr
    assert verbs == ["describe", "create", "delete"]


def test_starts_a_stopped_vm(fake_gcloud):
    proc, verbs, _ = fake_gcloud(["STOPPED", "READY"], *JOB, "--no-install")
    assert proc.returncode == 0, proc.stderr
    assert verbs == ["describe", "start", "describe", "ssh"]


def test_preempted_vm_needs_recreate(fake_gcloud):
    proc, verbs, _ = fake_gcloud(["PREEMPTED"], *JOB, "--no-install")
    assert proc.returncode == 2 and "is PREEMPTED; rerun with --recreate" in proc.stderr
    assert verbs == ["describe"]
    proc, verbs, _ = fake_gcloud(["PREEMPTED", "MISSING", "READY"], *JOB, "--no-install",
                                 "--recreate")
    assert proc.returncode == 0, proc.stderr
    assert verbs == ["describe", "delete", "describe", "create", "describe", "ssh"]


def test_existing_vm_of_another_type_is_refused(fake_gcloud):
    proc, verbs, _ = fake_gcloud(["READY"], *JOB, FAKE_TYPE="v4-8")
    assert proc.returncode == 2
    assert "exists with accelerator type v4-8, not v4-32" in proc.stderr
    assert verbs == ["describe"]
