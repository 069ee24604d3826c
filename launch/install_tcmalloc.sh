#!/usr/bin/env bash
# Optional: installs tcmalloc (Debian/Ubuntu package libtcmalloc-minimal4) when it is missing and
# apt-get can install it here (root, or passwordless sudo); otherwise says how, and exits 0 either
# way. The entry point (lsc/allocator.py) preloads tcmalloc when installed, else mimalloc from the
# cmeel-mimalloc wheel that `pip install` brings: either way XLA's CPU temporaries reuse pages
# instead of being mapped and zeroed on every step (benchmarks/allocator.py compares them).
# Run by .ci/run.
set -uo pipefail
if ldconfig -p 2> /dev/null | grep -q "libtcmalloc_minimal\.so\|libtcmalloc\.so"; then
  exit 0
fi
if ! command -v apt-get > /dev/null; then
  echo "note: tcmalloc not found; install it with your package manager (e.g. gperftools) for faster CPU jobs" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
  sudo="sudo -n"
else
  echo "note: tcmalloc not found; 'sudo apt-get install libtcmalloc-minimal4' makes CPU jobs faster" >&2
  exit 0
fi
if ! $sudo apt-get install -y -q libtcmalloc-minimal4 > /dev/null 2>&1; then
  $sudo apt-get update -q > /dev/null 2>&1 && \
    $sudo apt-get install -y -q libtcmalloc-minimal4 > /dev/null 2>&1 || \
    echo "note: apt-get could not install libtcmalloc-minimal4; lsc runs without it" >&2
fi
exit 0
