#!/bin/bash
# Usage: [WORKERS=N] examples/slurm/submit.sh [key=value ...]
# The workers (search.sbatch: an array job of N tasks, default its --array) and, once all of them have
# ended, one finalize job (finalize.sbatch), with the same overrides. Prints both job ids.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
array=()
if [[ -n "${WORKERS:-}" ]]; then array=(--array="1-$WORKERS"); fi
workers="$(sbatch --parsable ${array[@]+"${array[@]}"} "$here/search.sbatch" "$@")"  # bash < 4.4: no empty "${a[@]}"
# An array set in the environment (SBATCH_ARRAY_INX) would make the finalize job an array too.
finalize="$(env -u SBATCH_ARRAY_INX sbatch --parsable --dependency="afterany:${workers%%;*}" "$here/finalize.sbatch" "$@")"
echo "workers ${workers%%;*}, finalize ${finalize%%;*}"
