#!/bin/sh
# Entry point of the training image (docker/Dockerfile.train).
#   train ...   one process per visible GPU under torchrun (the script joins the process
#               group when torchrun sets RANK); one process on the CPU when there is none
#   anything else (export, eval, calibrate, prepare, --help): one process, with or without a GPU
set -eu

# Any uid may run the image (--user "$(id -u):$(id -g)"); caches need a writable home.
if [ ! -w "${HOME:-/nonexistent}" ]; then
  export HOME=/tmp
fi
if [ "${1:-}" = "train" ]; then
  # Training writes checkpoints into runs/, bind-mounted from the host: fail at once, with
  # the fix, rather than after an epoch. (Other subcommands may mount it read-only.)
  if [ -d runs ] && [ ! -w runs ]; then
    echo "faceid-train: $(pwd)/runs is not writable by uid $(id -u)." >&2
    echo "Run the container as the owner of ./runs: docker run --user \"\$(id -u):\$(id -g)\" ..." >&2
    exit 1
  fi
  gpus=$(python -c "import torch; print(torch.cuda.device_count())")
  if [ "$gpus" -gt 0 ]; then
    exec torchrun --standalone --nproc-per-node="$gpus" -m training.cli "$@"
  fi
  echo "faceid-train: no GPU visible (docker run --gpus all?); training on the CPU" >&2
fi
exec faceid-train "$@"
