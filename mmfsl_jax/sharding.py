"""Data parallelism over tasks: the meta-batch's task axis split across devices.

One mesh axis, "tasks". A batch goes to the devices with its leading (task) axis split
evenly among them, and the train state is replicated on every device; `jax.jit` then
partitions the meta-step to match (each device runs its share of the tasks, and the mean
over tasks becomes a cross-device sum). The program and its results are the same as on one
device, up to the order of float summation.

    mesh = task_mesh()                      # all devices of this process
    state = replicate(state, mesh)
    batch = shard_tasks(batch, mesh)        # [B, ...] arrays, B a multiple of mesh.size
    state, metrics = meta_step(state, batch)
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmfsl_jax.errors import UserError

TASK_AXIS = "tasks"


def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh ("tasks") over `devices` (default: every device of this process)."""
  devices = jax.local_devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (TASK_AXIS,))


def check_splits(meta_batch: int, mesh: Mesh, what: str = "meta_batch") -> None:
  """A clear error where `meta_batch` tasks cannot be split evenly over the mesh's devices."""
  if meta_batch % mesh.size:
    raise UserError(f"{meta_batch} tasks ({what}) do not split evenly over {mesh.size} "
                    f"devices: make {what} a multiple of {mesh.size}, or set shard_tasks=False "
                    f"to run on one device")


def shard_tasks(batch, mesh: Mesh):
  """`batch` (a pytree of [B, ...] arrays) on the mesh, its task axis split over devices."""
  leading = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch)}
  if len(leading) != 1:
    raise ValueError(f"batch arrays disagree on the task axis: sizes {sorted(leading)}")
  check_splits(leading.pop(), mesh, "the batch's task axis")
  return jax.device_put(batch, NamedSharding(mesh, PartitionSpec(TASK_AXIS)))


def replicate(tree, mesh: Mesh):
  """`tree` copied whole onto every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
