#!/usr/bin/env bash
# Runs an lsc job on this machine: the same entry point that the TPU and GPU launchers start.
#
#   launch/local.sh configs/repro/synthetic_hh.py runs/repro [--config.field=value ...]
#
# Environment:
#   LSC_CPU_DEVICES=N  simulate N CPU devices (JAX_PLATFORMS=cpu), to try a sharded config
#                      without accelerators
#   LSC_PYTHON         Python interpreter (default python)
#   LSC_ALLOCATOR      the entry point's malloc (lsc/allocator.py): unset, tcmalloc when installed,
#                      else mimalloc from the cmeel-mimalloc wheel (a core dependency);
#                      'tcmalloc', 'mimalloc' or 'system' (glibc's)
set -euo pipefail

usage() {
  echo "usage: [LSC_CPU_DEVICES=N] $0 CONFIG[:ARG] WORKDIR [--config.field=value ...]"
}
source "$(dirname "$0")/args.sh"
shift 2
if [[ -n "${LSC_CPU_DEVICES:-}" ]]; then
  if ! [[ "$LSC_CPU_DEVICES" =~ ^[1-9][0-9]*$ ]]; then
    echo "local.sh: error: LSC_CPU_DEVICES=$LSC_CPU_DEVICES is not a positive device count" >&2
    exit 2
  fi
  export JAX_PLATFORMS=cpu
  export JAX_NUM_CPU_DEVICES="$LSC_CPU_DEVICES"
fi
exec "${LSC_PYTHON:-python}" -m lsc.main --config="$config" --workdir="$workdir" "$@"
