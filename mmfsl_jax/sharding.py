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


def shard_tasks(batch, mesh: Mesh, *, pad: bool = False):
  """`batch` (a pytree of [B, ...] arrays) on the mesh, its task axis split over devices.

  With `pad`, a B that does not split evenly gets copies of its last task appended (up to
  the next multiple of the device count) instead of an error: for evaluation, which reads
  only the first B tasks' outputs.
  """
  leading = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch)}
  if len(leading) != 1:
    raise ValueError(f"batch arrays disagree on the task axis: sizes {sorted(leading)}")
  tasks = leading.pop()
  if pad and tasks % mesh.size:
    extra = mesh.size - tasks % mesh.size
    batch = jax.tree_util.tree_map(
        lambda x: np.concatenate([x, np.repeat(np.asarray(x)[-1:], extra, axis=0)]), batch)
  else:
    check_splits(tasks, mesh, "the batch's task axis")
  return jax.device_put(batch, NamedSharding(mesh, PartitionSpec(TASK_AXIS)))


def local_task_mesh(config) -> Mesh | None:
  """The mesh `mmfsl train` and `mmfsl eval` split tasks over: every local device when there
  are several and `config.shard_tasks`; None (one device, nothing placed) otherwise."""
  if not config.shard_tasks or jax.local_device_count() < 2:
    return None
  return task_mesh()


def replicate(tree, mesh: Mesh):
  """`tree` copied whole onto every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
