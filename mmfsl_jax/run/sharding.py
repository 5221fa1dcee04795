"""Data parallelism over tasks: the meta-batch's task axis split across devices.

One mesh axis, "tasks". A batch goes to the devices with its leading (task) axis split
evenly among them, and the train state is replicated on every device; `jax.jit` then
partitions the meta-step to match (each device runs its share of the tasks, and the mean
over tasks becomes a cross-device sum). The program and its results are the same as on one
device, up to the order of float summation.

Several processes (hosts of a TPU pod or GPU cluster, after `initialize_distributed`) form
one mesh over all their devices. Every process samples the same whole batch (the sampler is
a function of its seed and the step) and places only its own devices' tasks; outputs come
back to each host whole through `to_host`.

    mesh = task_mesh()                      # all devices (of every process)
    state = replicate(state, mesh)
    batch = shard_tasks(batch, mesh)        # [B, ...] arrays, B a multiple of mesh.size
    state, metrics = meta_step(state, batch)
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from mmfsl_jax.errors import UserError

TASK_AXIS = "tasks"


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins this process to a multi-process run (`jax.distributed.initialize`); call it before
  anything else touches JAX. Without arguments the cluster is detected (Cloud TPU, SLURM,
  Open MPI, ...); elsewhere give all three. On CPUs the processes talk through gloo."""
  if jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
  except (RuntimeError, ValueError) as error:
    raise UserError(f"could not join the distributed run ({error}); outside an environment "
                    f"JAX detects (Cloud TPU, SLURM, Open MPI), give the coordinator's "
                    f"host:port, the number of processes and this process's id") from error


def is_primary() -> bool:
  """Whether this is the process that writes logs and files (process 0)."""
  return jax.process_index() == 0


def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh ("tasks") over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (TASK_AXIS,))


def check_splits(meta_batch: int, mesh: Mesh, what: str = "task.meta_batch") -> None:
  """A clear error where `meta_batch` tasks cannot be split evenly over the mesh's devices."""
  if meta_batch % mesh.size:
    raise UserError(f"{meta_batch} tasks ({what}) do not split evenly over {mesh.size} "
                    f"devices: make {what} a multiple of {mesh.size}, or set "
                    f"run.shard_tasks=False to run on one device")


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
  return _place(batch, NamedSharding(mesh, PartitionSpec(TASK_AXIS)))


def task_mesh_for(shard: bool) -> Mesh | None:
  """The mesh `mmfsl train`, `mmfsl eval` and `mmfsl bench` split tasks over: every device
  (of every process) when there are several and `shard` (the config's run.shard_tasks);
  None (one device, nothing placed) otherwise."""
  if not shard or jax.device_count() < 2:
    return None
  return task_mesh()


def replicate(tree, mesh: Mesh):
  """`tree` copied whole onto every device of the mesh."""
  return _place(jax.device_get(tree), NamedSharding(mesh, PartitionSpec()))


def _place(tree, sharding: NamedSharding):
  """Host arrays (the same on every process) as global arrays; each process fills only its
  own devices' shards, which is what a mesh spanning several processes needs."""
  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree_util.tree_map(place, tree)


def to_host(tree):
  """A pytree of (possibly multi-process) arrays as whole numpy arrays on this host."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree_util.tree_map(fetch, tree)
