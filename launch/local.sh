#!/usr/bin/env bash
# Runs an lsc job on this machine: the same entry point that the TPU and GPU launchers start.
#
#   launch/local.sh configs/repro/synthetic_hh.py runs/repro [--config.field=value ...]
#
# LSC_CPU_DEVICES=N simulates N CPU devices (to try a sharded config without accelerators).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG[:ARG] WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
if [[ -n "${LSC_CPU_DEVICES:-}" ]]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${LSC_CPU_DEVICES}"
fi
exec python -m lsc.main --config="$config" --workdir="$workdir" "$@"
