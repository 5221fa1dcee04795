#!/usr/bin/env bash
# The speed benchmark on one accelerator, in a few minutes; installs nothing and needs no
# network. Run from the repository root in an environment where mmfsl_jax and a CUDA (or TPU)
# build of jax are installed. conv_impl=auto picks XLA's convolutions on accelerators.
#   bash experiments/bench/gpu.sh                  # the variants below, 10 timed steps each
#   bash experiments/bench/gpu.sh conv_impl=matmul # any config override, for every variant
# PEER_PYTHON=/path/to/python-with-torch adds the PyTorch peer's figures (the peer script
# runs on the CPU: it has no device option), with PEERS_DIR its directory.
set -euo pipefail
python -c "import jax; d = jax.devices()[0]; print('device:', d.platform, d.device_kind)"
PEER=()
if [[ -n "${PEER_PYTHON:-}" ]]; then
  PEER=(--peer-python "$PEER_PYTHON" --peers-dir "${PEERS_DIR:-../shared/peers}")
fi
python -m mmfsl_jax.cli bench --iters 10 "${PEER[@]}" \
  --variants maml,maml_b8,maml_b128,maml_steps5,maml_steps10,fomaml,anil,protonet,maml_fused "$@"
