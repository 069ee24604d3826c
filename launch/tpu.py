#!/usr/bin/env python3
"""Runs an lsc job on a Cloud TPU VM or pod slice through the ``gcloud`` command line.

Steps, in order (each printed before it runs; ``--dry-run`` prints them and runs nothing):

1. create the TPU VM, or reuse it when one with that name already exists in the zone
   (``gcloud compute tpus tpu-vm describe`` / ``create``; a stopped VM is started, one still being
   created is waited for, a preempted one is recreated only with ``--recreate``);
2. ship the package to every worker: ``git archive`` of ``--ref`` (default ``HEAD``) into a
   tarball, ``tpu-vm scp --worker=all``, then ``pip install -e .`` and ``jax[tpu]`` on each worker
   (skip with ``--no-install``);
3. run the job on every worker (``tpu-vm ssh --worker=all``)::

     cd ~/lsc && python3 -m lsc.main --config=CONFIG --workdir=WORKDIR [--config.field=value ...]

   streaming the output of all workers (lines prefixed with the worker's host name on multi-host
   slices) and copying it to ``~/lsc-run.log`` on each worker; ``--detach`` starts it in the
   background instead and returns, ``--logs`` streams a detached job's log until it ends;
   or run ``--ssh-command`` (any shell command) on the workers instead of a job;
4. delete the VM, only with ``--delete`` (after the job, or on its own).

Examples::

  python launch/tpu.py --name=lsc-v4 --project=my-proj --zone=us-central2-b \\
      --accelerator-type=v4-32 --config=configs/repro/synthetic_hh.py \\
      --workdir=/gcs/my-bucket/lsc/repro --config.seed=1 --delete
  python launch/tpu.py --name=lsc-v4 --zone=us-central2-b --accelerator-type=v4-32 \\
      --no-install --ssh-command='python3 -c "import jax; print(jax.device_count())"'
  python launch/tpu.py --name=lsc-v4 --zone=us-central2-b --accelerator-type=v4-32 --delete

Overrides for the job are any ``--config.<field>=<value>`` arguments, or everything after ``--``.
On multi-host slices the job gets ``LSC_DISTRIBUTED=auto`` in its environment (lsc then calls
``jax.distributed.initialize()``, which finds the slice's hosts by itself); the workdir should then
be a shared mount every worker can write (GCS FUSE, Filestore); URL workdirs (``gs://``) are
refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

# ---------------------------------------------------------------------------------------------
# Accelerator types.


@dataclasses.dataclass(frozen=True)
class Family:
    """One TPU generation as named in ``--accelerator-type=<prefix>-<size>``."""

    prefix: str
    size_unit: str  # what the number counts: "cores" (TensorCores) or "chips"
    cores_per_chip: int
    chips_per_host: int  # on multi-host slices
    single_host_max_chips: int  # slices with at most this many chips run on one host
    sizes: Tuple[int, ...]
    default_version: str



def _pow2(lo: int, hi: int) -> Tuple[int, ...]:
    return tuple(2**i for i in range(lo, hi + 1))


FAMILIES: Dict[str, Family] = {
    f.prefix: f
    for f in (
        Family("v2", "cores", 2, 4, 4, (8, 32, 128, 256, 512), "tpu-ubuntu2204-base"),
        Family("v3", "cores", 2, 4, 4, (8, 32, 64, 128, 256, 512, 1024, 2048),
               "tpu-ubuntu2204-base"),
        Family("v4", "cores", 2, 4, 4, tuple(sorted(_pow2(3, 12) + (1536,))),
               "tpu-ubuntu2204-base"),
        Family("v5litepod", "chips", 1, 4, 8, (1, 4, 8, 16, 32, 64, 128, 256),
               "v2-alpha-tpuv5-lite"),
        Family("v5p", "cores", 2, 4, 4, _pow2(3, 13) + (12288,), "v2-alpha-tpuv5"),
        Family("v6e", "chips", 1, 4, 8, (1, 4, 8, 16, 32, 64, 128, 256), "v2-alpha-tpuv6e"),
    )
}


@dataclasses.dataclass(frozen=True)
class Slice:
    accelerator_type: str
    family: Family
    chips: int
    workers: int

    @property
    def chips_per_worker(self) -> int:
        return self.chips // self.workers

    def describe(self) -> str:
        return (f"{self.accelerator_type}: {self.chips} chips, {self.workers} worker"
                f"{'s' if self.workers != 1 else ''} ({self.chips_per_worker} chips per worker)")


class LaunchError(Exception):
    """A problem with the request or with a command; printed as ``error: ...``, exit status 2."""


def known_accelerator_types() -> List[str]:
    return [f"{f.prefix}-{n}" for f in FAMILIES.values() for n in f.sizes]


def parse_accelerator_type(name: str) -> Slice:
    """Chips and worker (host) count of ``name``, e.g. ``v4-32`` -> 16 chips on 4 workers."""
    prefix, _, size = name.rpartition("-")
    family = FAMILIES.get(prefix)
    if family is None or not size.isdigit() or int(size) not in family.sizes:
        listing = "\n".join(
            f"  {f.prefix}-N (N = {f.size_unit}): {', '.join(map(str, f.sizes))}"
            for f in FAMILIES.values()
        )
        raise LaunchError(f"unknown accelerator type {name!r}; known types:\n{listing}")
    n = int(size)
    chips = n // family.cores_per_chip if family.size_unit == "cores" else n
    workers = 1 if chips <= family.single_host_max_chips else chips // family.chips_per_host
    return Slice(name, family, chips, workers)


# ---------------------------------------------------------------------------------------------
# Commands.

REMOTE_TARBALL = "lsc-src.tar.gz"
LOG_FILE = "lsc-run.log"
PID_FILE = "lsc-run.pid"
# Imports only: touching the devices of one worker of a pod slice waits for all of them.
_IMPORT_CHECK = 'import jax, lsc; print("lsc installed; jax", jax.__version__)'


def _quote_arg(arg: str) -> str:
    flag, eq, value = arg.partition("=")
    if eq and flag.startswith("--") and flag[2:].replace("-", "").replace("_", "").replace(".", "").isalnum():
        return f"{flag}={shlex.quote(value)}"
    return shlex.quote(arg)


def quote(cmd: Sequence[str]) -> str:
    """``cmd`` as one shell line (``--flag=value`` keeps its flag bare and quotes the value)."""
    return " ".join(_quote_arg(c) for c in cmd)


class Plan:
    """Builds the gcloud / git commands for one request."""

    def __init__(self, args: argparse.Namespace, slice_: Optional[Slice]):
        self.args = args
        self.slice = slice_

    # -- common pieces --------------------------------------------------------------------------

    def _where(self) -> List[str]:
        out = []
        if self.args.project:
            out.append(f"--project={self.args.project}")
        out.append(f"--zone={self.args.zone}")
        return out

    def _tpu(self, verb: str, *rest: str) -> List[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", verb, self.args.name, *self._where(), *rest]

    def _remote_access(self) -> List[str]:
        extra = ["--internal-ip"] if self.args.internal_ip else []
        return extra + list(self.args.gcloud_arg)

    def ssh(self, script: str, worker: str = "all") -> List[str]:
        return self._tpu("ssh", f"--worker={worker}", *self._remote_access(),
                         f"--command={script}")

    # -- the steps ------------------------------------------------------------------------------

    def describe(self) -> List[str]:
        return self._tpu("describe", "--format=json")

    def create(self) -> List[str]:
        a = self.args
        version = a.version or self.slice.family.default_version
        cmd = self._tpu("create", f"--accelerator-type={self.slice.accelerator_type}",
                        f"--version={version}")
        if a.spot:
            cmd.append("--spot")
        if a.preemptible:
            cmd.append("--preemptible")
        return cmd + list(a.create_arg)

    def start(self) -> List[str]:
        return self._tpu("start")

    def delete(self) -> List[str]:
        return self._tpu("delete", "--quiet")

    def local_tarball(self) -> str:
        return os.path.join(tempfile.gettempdir(), f"lsc-src-{self.args.name}.tar.gz")

    def archive(self) -> List[str]:
        return ["git", "-C", self.args.repo, "archive", "--format=tar.gz",
                f"--output={self.local_tarball()}", self.args.ref]

    def scp(self) -> List[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", "scp", self.local_tarball(),
                f"{self.args.name}:{REMOTE_TARBALL}", *self._where(), "--worker=all",
                *self._remote_access()]

    def install_script(self) -> str:
        a = self.args
        d, py = shlex.quote(a.remote_dir), shlex.quote(a.python)
        packages = [".", *a.pip_package]
        return " && ".join([
            "set -e",
            f"rm -rf {d}.new",
            f"mkdir -p {d}.new",
            f"tar -xzf {REMOTE_TARBALL} -C {d}.new",
            f"rm -rf {d}",
            f"mv {d}.new {d}",
            f"cd {d}",
            f"{py} -m pip install --quiet --upgrade pip",
            f"{py} -m pip install --quiet -e {' '.join(shlex.quote(p) for p in packages)}",
            f"{py} -c {shlex.quote(_IMPORT_CHECK)}",
        ])

    def job_argv(self) -> List[str]:
        a = self.args
        return [a.python, "-m", "lsc.main", f"--config={a.config}", f"--workdir={a.workdir}",
                *a.overrides]

    def job_env(self) -> List[str]:
        env = ["PYTHONUNBUFFERED=1"]
        if self.slice.workers > 1:
            env.append("LSC_DISTRIBUTED=auto")
        return env + list(self.args.env)

    def _busy_check(self) -> str:
        return (f'if [ -f ~/{PID_FILE} ] && kill -0 "$(cat ~/{PID_FILE})" 2>/dev/null; then '
                f'echo "error: an lsc job (pid $(cat ~/{PID_FILE})) is still running on '
                f'$(hostname); stop it first" >&2; exit 1; fi')

    def run_script(self) -> str:
        env = " ".join(shlex.quote(e) for e in self.job_env())
        job = quote(self.job_argv())
        head = f"{self._busy_check()}; cd {shlex.quote(self.args.remote_dir)}"
        if self.args.detach:
            return (f"{head} && rm -f ~/{PID_FILE} && "
                    f"(nohup env {env} {job} > ~/{LOG_FILE} 2>&1 < /dev/null & "
                    f"echo $! > ~/{PID_FILE}) && "
                    f'echo "started lsc job on $(hostname), pid $(cat ~/{PID_FILE}), '
                    f'log ~/{LOG_FILE}"')
        tee = f"tee ~/{LOG_FILE}"
        if self.slice.workers > 1:
            tee += """ | awk -v h="[$(hostname)] " '{print h $0; fflush()}'"""
        return f"set -o pipefail; {head} && env {env} {job} 2>&1 | {tee}"

    def logs_script(self) -> str:
        return (f"if [ ! -f ~/{LOG_FILE} ]; then echo \"error: no ~/{LOG_FILE} on $(hostname); "
                f"start a job with --detach first\" >&2; exit 1; fi; "
                f"if [ -f ~/{PID_FILE} ] && kill -0 \"$(cat ~/{PID_FILE})\" 2>/dev/null; then "
                f"exec tail -n +1 --pid=\"$(cat ~/{PID_FILE})\" -F ~/{LOG_FILE}; "
                f"else cat ~/{LOG_FILE}; fi")


# ---------------------------------------------------------------------------------------------
# Running.


class Runner:
    def __init__(self, dry_run: bool):
        self.dry_run = dry_run

    def note(self, text: str) -> None:
        """A line for the reader; a shell comment, so the dry-run output stays a valid script."""
        print(f"# {text}", flush=True)

    def show(self, cmd: Sequence[str]) -> None:
        print(quote(cmd), flush=True)

    def run(self, cmd: Sequence[str]) -> int:
        self.show(cmd)
        if self.dry_run:
            return 0
        try:
            return subprocess.call(list(cmd))
        except FileNotFoundError as e:
            raise LaunchError(f"{cmd[0]!r} not found on PATH ({e})") from e

    def check(self, cmd: Sequence[str]) -> None:
        rc = self.run(cmd)
        if rc:
            raise LaunchError(f"command failed with exit status {rc}: {quote(cmd)}")

    def capture(self, cmd: Sequence[str]) -> subprocess.CompletedProcess:
        self.show(cmd)
        try:
            return subprocess.run(list(cmd), capture_output=True, text=True)
        except FileNotFoundError as e:
            raise LaunchError(f"{cmd[0]!r} not found on PATH ({e})") from e


def describe_state(runner: Runner, plan: Plan) -> Optional[dict]:
    """The VM's description, or None when no VM of that name exists in the zone."""
    proc = runner.capture(plan.describe())
    if proc.returncode == 0:
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise LaunchError(f"could not parse the output of describe: {e}\n{proc.stdout}")
    if "NOT_FOUND" in proc.stderr or "not found" in proc.stderr.lower():
        return None
    raise LaunchError(f"describe failed with exit status {proc.returncode}:\n{proc.stderr.strip()}")


_TRANSIENT = ("CREATING", "STARTING", "RESTARTING", "REPAIRING", "STOPPING")


def ensure_vm(runner: Runner, plan: Plan, args: argparse.Namespace) -> None:
    name = args.name
    if runner.dry_run:
        runner.show(plan.describe())
        runner.note(f"only when the describe above finds no TPU VM named {name} "
                    "(an existing one is reused):")
        runner.show(plan.create())
        return
    deadline = time.monotonic() + args.wait_timeout
    while True:
        info = describe_state(runner, plan)
        if info is None:
            runner.note(f"no TPU VM named {name} in {args.zone}; creating it")
            runner.check(plan.create())
            info = describe_state(runner, plan)
            if info is None:
                raise LaunchError(f"TPU VM {name} was created but describe does not find it")
        existing = str(info.get("acceleratorType", "")).rpartition("/")[2]
        if existing and existing != plan.slice.accelerator_type:
            raise LaunchError(
                f"TPU VM {name} exists with accelerator type {existing}, not "
                f"{plan.slice.accelerator_type}; use another --name or delete it (--delete)")
        state = info.get("state", "")
        if state == "READY":
            runner.note(f"TPU VM {name} is READY")
            return
        if state == "STOPPED":
            runner.note(f"TPU VM {name} is STOPPED; starting it")
            runner.check(plan.start())
            continue
        if state in ("PREEMPTED", "TERMINATED"):
            if not args.recreate:
                raise LaunchError(
                    f"TPU VM {name} is {state}; rerun with --recreate to delete and recreate it")
            runner.note(f"TPU VM {name} is {state}; deleting it to recreate")
            runner.check(plan.delete())
            continue
        if state in _TRANSIENT or not state:
            if time.monotonic() > deadline:
                raise LaunchError(f"TPU VM {name} still {state or 'in an unknown state'} "
                                  f"after {args.wait_timeout:.0f} s")
            runner.note(f"TPU VM {name} is {state or 'in an unknown state'}; waiting")
            time.sleep(args.poll_interval)
            continue
        raise LaunchError(f"TPU VM {name} is in state {state}; cannot use it")


def install(runner: Runner, plan: Plan, args: argparse.Namespace) -> None:
    if not runner.dry_run:
        dirty = subprocess.run(["git", "-C", args.repo, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True)
        if dirty.returncode != 0:
            raise LaunchError(f"{args.repo} is not a git checkout: {dirty.stderr.strip()}")
        if dirty.stdout.strip() and args.ref == "HEAD":
            print("warning: uncommitted changes are not shipped (git archive of HEAD)",
                  file=sys.stderr)
    runner.check(plan.archive())
    runner.check(plan.scp())
    runner.check(plan.ssh(plan.install_script()))


# ---------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python launch/tpu.py",
        description=__doc__.split("\n\n")[0],
        epilog="Job overrides: any --config.<field>=<value> argument, or everything after '--'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    g = p.add_argument_group("TPU VM")
    g.add_argument("--name", required=True, help="TPU VM name (created, or reused if it exists)")
    g.add_argument("--project", default="", help="GCP project (default: gcloud's configured one)")
    g.add_argument("--zone", required=True, help="GCP zone, e.g. us-central2-b")
    g.add_argument("--accelerator-type", "--accelerator_type", dest="accelerator_type",
                   help="e.g. v4-8, v4-32, v5litepod-16, v5p-8, v6e-8 "
                        "(required unless only --delete or --logs)")
    g.add_argument("--version", default="",
                   help="TPU runtime image (default per generation: tpu-ubuntu2204-base for "
                        "v2/v3/v4, v2-alpha-tpuv5-lite for v5litepod, v2-alpha-tpuv5 for v5p, "
                        "v2-alpha-tpuv6e for v6e)")
    g.add_argument("--spot", action="store_true", help="create a Spot VM")
    g.add_argument("--preemptible", action="store_true", help="create a preemptible VM")
    g.add_argument("--create-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for 'tpu-vm create' (repeatable), e.g. "
                        "--create-arg=--network=my-net")
    g.add_argument("--internal-ip", action="store_true",
                   help="ssh/scp through the workers' internal IPs")
    g.add_argument("--gcloud-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every 'tpu-vm ssh' / 'scp' (repeatable)")
    g.add_argument("--recreate", action="store_true",
                   help="delete and recreate an existing VM that is PREEMPTED or TERMINATED")
    g.add_argument("--wait-timeout", type=float, default=1800.0,
                   help="seconds to wait for a VM that is being created or started")
    g.add_argument("--poll-interval", type=float, default=20.0, help=argparse.SUPPRESS)

    g = p.add_argument_group("package")
    g.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   help="local checkout to ship (default: this script's repository)")
    g.add_argument("--ref", default="HEAD", help="git ref to ship with git archive")
    g.add_argument("--remote-dir", default="lsc",
                   help="directory on each worker, relative to the home directory")
    g.add_argument("--python", default="python3", help="Python interpreter on the workers")
    g.add_argument("--pip-package", action="append", default=None, metavar="SPEC",
                   help="package installed beside 'pip install -e .' (repeatable; "
                        "default: jax[tpu])")
    g.add_argument("--no-install", action="store_true",
                   help="skip copying and installing the package (the VM already has it)")

    g = p.add_argument_group("what to run")
    g.add_argument("--config", help="lsc config, e.g. configs/repro/synthetic_hh.py[:arg]")
    g.add_argument("--workdir", help="job workdir; on multi-host slices a shared mount, e.g. "
                   "/gcs/BUCKET/PATH (GCS FUSE)")
    g.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable for the job (repeatable)")
    g.add_argument("--detach", action="store_true",
                   help="start the job in the background on every worker and return")
    g.add_argument("--logs", action="store_true",
                   help="stream ~/lsc-run.log of a detached job until it ends")
    g.add_argument("--ssh-command", default=None, metavar="CMD",
                   help="run this shell command on the workers instead of a job")
    g.add_argument("--worker", default="all",
                   help="worker(s) for --ssh-command and --logs: all, or an index (default all)")
    g.add_argument("--delete", action="store_true",
                   help="delete the VM at the end (alone: just delete it)")
    g.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print every command, one per line, and run nothing")
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    tail: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, tail = argv[:i], argv[i + 1:]
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    bad = [u for u in unknown if not u.startswith("--config.")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} "
                     "(job overrides look like --config.<field>=<value>, or go after '--')")
    args.overrides = unknown + tail
    if args.pip_package is None:
        args.pip_package = ["jax[tpu]"]
    return args


def validate(args: argparse.Namespace) -> Optional[Slice]:
    job = args.config is not None or args.workdir is not None
    actions = [n for n, on in (("a job (--config/--workdir)", job),
                               ("--ssh-command", args.ssh_command is not None),
                               ("--logs", args.logs)) if on]
    if len(actions) > 1:
        raise LaunchError(f"choose one of {', '.join(actions)}")
    if not actions and not args.delete:
        raise LaunchError("nothing to do: give --config and --workdir, --ssh-command, --logs "
                          "or --delete")
    if job and not (args.config and args.workdir):
        raise LaunchError("a job needs both --config and --workdir")
    if job and "://" in args.workdir:
        raise LaunchError(f"--workdir={args.workdir}: the jobs write with local file operations "
                          "and refuse URL workdirs; mount the bucket on every worker (e.g. GCS "
                          "FUSE at /gcs/BUCKET) and pass the mounted path")
    if args.overrides and not job:
        raise LaunchError(f"job overrides given without a job: {' '.join(args.overrides)}")
    if args.detach and not job:
        raise LaunchError("--detach applies to a job (--config/--workdir)")
    if args.detach and args.delete:
        raise LaunchError("--detach with --delete would delete the VM under the running job; "
                          "use --logs --delete later")
    if args.spot and args.preemptible:
        raise LaunchError("choose one of --spot and --preemptible")
    for o in args.overrides:
        if not o.startswith("--"):
            raise LaunchError(f"job override {o!r} is not a flag; use --config.<field>=<value>")
    for e in args.env:
        key, eq, _ = e.partition("=")
        if not eq or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise LaunchError(f"--env {e!r} is not KEY=VALUE")
    if args.worker != "all" and not args.worker.isdigit():
        raise LaunchError(f"--worker must be 'all' or a worker index, got {args.worker!r}")
    needs_slice = job or args.ssh_command is not None
    if needs_slice and not args.accelerator_type:
        raise LaunchError("--accelerator-type is required to create or reuse a VM")
    slice_ = parse_accelerator_type(args.accelerator_type) if args.accelerator_type else None
    if slice_ and args.worker != "all" and int(args.worker) >= slice_.workers:
        raise LaunchError(f"--worker={args.worker} but {slice_.accelerator_type} has "
                          f"{slice_.workers} worker(s) (0..{slice_.workers - 1})")
    return slice_


def main(argv: Sequence[str]) -> int:
    try:
        args = parse_args(argv)
        slice_ = validate(args)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    runner = Runner(args.dry_run)
    plan = Plan(args, slice_)
    if slice_:
        runner.note(f"{slice_.describe()}")
        runner.note(f"workers: {slice_.workers}")
        if args.workdir and slice_.workers > 1:
            print(f"note: workdir {args.workdir!r} must be a mount that all {slice_.workers} "
                  "workers share (GCS FUSE, Filestore); otherwise each writes its own disk",
                  file=sys.stderr)
    job = args.config is not None
    rc = 0
    try:
        if job or args.ssh_command is not None:
            ensure_vm(runner, plan, args)
            if not args.no_install:
                install(runner, plan, args)
            if job:
                rc = runner.run(plan.ssh(plan.run_script()))
                if rc:
                    print(f"error: the job exited with status {rc}", file=sys.stderr)
            else:
                rc = runner.run(plan.ssh(args.ssh_command, args.worker))
        elif args.logs:
            rc = runner.run(plan.ssh(plan.logs_script(), args.worker))
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        rc = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        rc = 130
    if args.delete:
        try:
            runner.check(plan.delete())
        except LaunchError as e:
            print(f"error: {e}", file=sys.stderr)
            rc = rc or 2
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
