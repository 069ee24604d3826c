# Sourced by the launch scripts: reads CONFIG[:ARG] WORKDIR from the command line into $config
# and $workdir; the caller then shifts them off, leaving the --config.field=value overrides.
# Expects usage() to be defined; -h/--help prints it, fewer than two arguments fail with exit 2.
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  usage
  exit 0
fi
if [[ $# -lt 2 ]]; then
  usage >&2
  exit 2
fi
config=$1 workdir=$2
