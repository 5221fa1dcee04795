#!/usr/bin/env bash
# The speed benchmark on one accelerator, in a few minutes; installs nothing and needs no
# network. Run from the repository root with an interpreter ($PYTHON, default python3) where
# mmfsl_jax and a CUDA (or TPU) build of jax import. model.image.conv_impl=auto picks XLA's
# convolutions on accelerators, and run.task_chunk=0 runs the whole meta-batch at once there.
#   bash experiments/bench/gpu.sh                  # the variants below, 10 timed steps each
#   bash experiments/bench/gpu.sh model.image.conv_impl=matmul
#                                                  # any config override, for every variant
# PEER_PYTHON=/path/to/python-with-torch adds the PyTorch peer's figures, with PEERS_DIR the
# directory of torch_maml_bench.py; the peer runs on the torch device PEER_DEVICE (default
# cuda: the same GPU, one process after the other). VARIANTS replaces the variant list.
set -euo pipefail
PYTHON=${PYTHON:-python3}
"$PYTHON" -c "import jax, flax; d = jax.devices()[0]; print('device:', d.platform, d.device_kind, '| jax', jax.__version__, '| flax', flax.__version__)"
PEER=()
if [[ -n "${PEER_PYTHON:-}" ]]; then
  "$PEER_PYTHON" -c "import torch; print('peer: torch', torch.__version__)"
  PEER=(--peer-python "$PEER_PYTHON" --peers-dir "${PEERS_DIR:-../shared/peers}"
        --peer-device "${PEER_DEVICE:-cuda}" --peer-iters "${PEER_ITERS:-5}")
fi
"$PYTHON" -m mmfsl_jax.cli bench --iters 10 "${PEER[@]}" \
  --variants "${VARIANTS:-maml,maml_b8,maml_b128,maml_steps5,maml_steps10,fomaml,anil,protonet,maml_fused}" "$@"
