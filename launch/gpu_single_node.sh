#!/usr/bin/env bash
# Runs an lsc job on one machine with several GPUs: a single process sees every local GPU (or
# those in LSC_GPUS) and the config's mesh shards over them; no jax.distributed set-up.
#
#   launch/gpu_single_node.sh CONFIG[:ARG] WORKDIR [--config.field=value ...]
#   LSC_GPUS=0,1,2,3 launch/gpu_single_node.sh configs/repro/synthetic_hh.py runs/repro
#
# Needs lsc installed with a CUDA build of JAX (pip install -e . 'jax[cuda12]').
# Environment:
#   LSC_GPUS       comma-separated GPU indices, exported as CUDA_VISIBLE_DEVICES (default: all)
#   LSC_PYTHON     Python interpreter (default python)
#   JAX_PLATFORMS  default cuda, so a machine without a usable GPU fails at start-up instead of
#                  silently running on the CPU
# The multi-process variables (LSC_COORDINATOR_ADDRESS, LSC_NUM_PROCESSES, LSC_PROCESS_ID,
# LSC_LOCAL_DEVICE_IDS, LSC_DISTRIBUTED) are cleared: this is always one process.
set -euo pipefail

usage() {
  echo "usage: [LSC_GPUS=0,1,...] $0 CONFIG[:ARG] WORKDIR [--config.field=value ...]"
}
source "$(dirname "$0")/args.sh"
shift 2

if [[ -n "${LSC_GPUS:-}" ]]; then
  if ! [[ "$LSC_GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    echo "gpu_single_node.sh: error: LSC_GPUS=$LSC_GPUS is not a comma-separated list of GPU indices" >&2
    exit 2
  fi
  export CUDA_VISIBLE_DEVICES="$LSC_GPUS"
fi
export JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}"
export PYTHONUNBUFFERED=1
unset LSC_COORDINATOR_ADDRESS LSC_NUM_PROCESSES LSC_PROCESS_ID LSC_LOCAL_DEVICE_IDS LSC_DISTRIBUTED

if command -v nvidia-smi >/dev/null 2>&1; then
  query=(nvidia-smi "--query-gpu=index,name,memory.total" "--format=csv,noheader")
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    query+=(-i "$CUDA_VISIBLE_DEVICES")
  fi
  echo "gpu_single_node.sh: one process, JAX_PLATFORMS=$JAX_PLATFORMS, GPUs:" >&2
  "${query[@]}" 2>&1 | sed 's/^/  /' >&2 || true
else
  echo "gpu_single_node.sh: one process, JAX_PLATFORMS=$JAX_PLATFORMS (nvidia-smi not found)" >&2
fi

exec "${LSC_PYTHON:-python}" -m lsc.main --config="$config" --workdir="$workdir" "$@"
