"""PyTorch checkpoints (state dicts) read into numpy arrays, without torch.

Both formats `torch.save` writes are read: the zip archive of torch >= 1.6 (`<name>/data.pkl`
and one file `<name>/data/<key>` per storage) and the older stream of pickles (magic number,
protocol version, system info, the state dict, its storage keys, then each storage's element
count and little-endian bytes). The unpickler resolves only the names a state dict needs
(tensor rebuilders, storage types, `collections.OrderedDict`); any other name (a pickled
module, an arbitrary object) is refused before anything is called.

    state = read_torch_state_dict(path)     # {"layer.weight": np.ndarray [out, in, kh, kw], ...}
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from mmfsl_jax.errors import UserError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_NESTED_KEYS = ("state_dict", "model")
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}


class _FormatError(Exception):
  """The file is not a readable state dict; the message says why (the caller adds the path)."""


class _StorageType(NamedTuple):
  name: str


class _Storage(NamedTuple):
  """A storage the pickle refers to: `numel` elements of `dtype`, filled after unpickling."""
  key: str
  dtype: np.dtype
  numel: int


class _StorageView(NamedTuple):
  storage: _Storage
  offset: int


class _TensorRef(NamedTuple):
  """A tensor of the pickle: `size` elements at `offset`, `stride` apart, in a storage view."""
  view: _StorageView
  offset: int
  size: tuple
  stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _TensorRef:
  if not isinstance(storage, _StorageView):
    raise _FormatError("a tensor is not backed by a storage")
  return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused) -> _TensorRef:
  if not isinstance(data, _TensorRef):
    raise _FormatError("a parameter does not hold a tensor")
  return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _StateDictUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED` names and torch storage types; storages go to `persistent`."""

  def __init__(self, file, persistent=None):
    super().__init__(file)
    self._persistent = persistent

  def find_class(self, module: str, name: str):
    if (module, name) in _ALLOWED:
      return _ALLOWED[module, name]
    if module == "torch" and name.endswith("Storage"):
      return _StorageType(name)
    raise _FormatError(f"it is not a plain state dict: its pickle refers to {module}.{name}, "
                       "which is refused (only tensors in (ordered) dicts are read; save "
                       "model.state_dict() rather than the model or other objects)")

  def persistent_load(self, pid):
    if self._persistent is None:
      raise _FormatError("unexpected storage reference")
    return self._persistent(pid)


def _dtype(storage_type: Any, byteorder: str) -> np.dtype:
  if not isinstance(storage_type, _StorageType):
    raise _FormatError(f"a storage has type {storage_type!r}, not a torch storage type")
  if storage_type.name not in _STORAGE_DTYPES:
    raise _FormatError(f"unsupported dtype: torch.{storage_type.name} (supported: "
                       f"{', '.join(sorted(_STORAGE_DTYPES))})")
  return np.dtype(_STORAGE_DTYPES[storage_type.name]).newbyteorder(byteorder)


def _materialise(ref: _TensorRef, flat: np.ndarray, name: str) -> np.ndarray:
  """The tensor `ref` as a contiguous array, read from its storage's elements `flat`."""
  size, stride = ref.size, ref.stride
  if len(size) != len(stride) or min(stride, default=0) < 0 or min(size, default=0) < 0:
    raise _FormatError(f"tensor {name!r} has size {size} and stride {stride}")
  start = ref.view.offset + ref.offset
  end = start + (sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0)
  if end > flat.size:
    raise _FormatError(f"tensor {name!r} needs elements up to {end} of a storage of {flat.size}")
  base = flat[start:]
  view = np.lib.stride_tricks.as_strided(base, shape=size,
                                         strides=[s * flat.itemsize for s in stride])
  return np.array(view, dtype=flat.dtype.newbyteorder("="))


def _read_zip(archive: zipfile.ZipFile) -> tuple[Any, dict[str, np.ndarray]]:
  pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(pickles) != 1:
    raise _FormatError("it is a zip archive but not a PyTorch checkpoint (expected one "
                       f"<name>/data.pkl, found {len(pickles)})")
  root = pickles[0][:-len("data.pkl")]
  byteorder = "<"
  if root + "byteorder" in archive.namelist():
    byteorder = "<" if archive.read(root + "byteorder").strip() == b"little" else ">"
  storages: dict[str, _Storage] = {}

  def persistent(pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise _FormatError(f"unexpected storage reference {pid!r:.80}")
    _, storage_type, key, _, numel = pid
    storages.setdefault(str(key), _Storage(str(key), _dtype(storage_type, byteorder), int(numel)))
    return _StorageView(storages[str(key)], 0)

  result = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0])), persistent).load()
  flats = {}
  for key, storage in storages.items():
    name = f"{root}data/{key}"
    try:
      raw = archive.read(name)
    except KeyError:
      raise _FormatError(f"storage {name} is missing from the archive") from None
    if len(raw) != storage.numel * storage.dtype.itemsize:
      raise _FormatError(f"storage {name} has {len(raw)} bytes, expected "
                         f"{storage.numel * storage.dtype.itemsize}")
    flats[key] = np.frombuffer(raw, storage.dtype)
  return result, flats


def _load_plain(f) -> Any:
  """One pickle of plain values (no globals, no storages)."""
  return _StateDictUnpickler(f).load()


def _read_legacy(f) -> tuple[Any, dict[str, np.ndarray]]:
  try:
    magic = _load_plain(f)
  except Exception:  # noqa: BLE001 (any bytes at all may be here)
    magic = None
  if magic != _LEGACY_MAGIC:
    raise _FormatError("it is not a PyTorch checkpoint (neither a zip archive nor torch.save's "
                       "legacy format), or it is truncated or corrupt")
  protocol = _load_plain(f)
  if protocol != _LEGACY_PROTOCOL:
    raise _FormatError(f"unsupported legacy protocol version {protocol!r}")
  _load_plain(f)  # system info: the legacy storages are little-endian whatever it says
  storages: dict[str, _Storage] = {}

  def persistent(pid):
    if isinstance(pid, tuple) and pid and pid[0] == "module":
      raise _FormatError("it is not a plain state dict: it holds a pickled torch.nn.Module; "
                         "save model.state_dict() instead")
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
      raise _FormatError(f"unexpected storage reference {pid!r:.80}")
    _, storage_type, key, _, numel, view = pid
    storages.setdefault(str(key), _Storage(str(key), _dtype(storage_type, "<"), int(numel)))
    return _StorageView(storages[str(key)], 0 if view is None else int(view[1]))

  result = _StateDictUnpickler(f, persistent).load()
  keys = _load_plain(f)
  if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
    raise _FormatError("its storage keys do not match the storages its state dict uses")
  flats = {}
  for key in map(str, keys):
    storage = storages[key]
    count = int.from_bytes(f.read(8), "little")
    nbytes = storage.numel * storage.dtype.itemsize
    if count != storage.numel:
      raise _FormatError(f"storage {key} records {count} elements, expected {storage.numel}")
    raw = f.read(nbytes)
    if len(raw) != nbytes:
      raise _FormatError(f"it is truncated: storage {key} has {len(raw)} of {nbytes} bytes")
    flats[key] = np.frombuffer(raw, storage.dtype)
  return result, flats


def _state_dict(result: Any) -> dict[str, _TensorRef]:
  """The dict of tensors in `result`: itself, or nested under "state_dict" or "model"."""
  for key in _NESTED_KEYS:
    if isinstance(result, dict) and isinstance(result.get(key), dict):
      result = result[key]
      break
  if not isinstance(result, dict):
    raise _FormatError(f"it holds a {type(result).__name__}, not a state dict")
  others = [str(k) for k, v in result.items() if not isinstance(v, _TensorRef)]
  if others or not result:
    raise _FormatError("it is not a plain state dict: " + (
        f"entries {', '.join(others[:5])} are not tensors" if others else "it is empty"))
  return result


def _strip_module(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops the "module." prefix of a state dict saved from (Distributed)DataParallel."""
  if all(k.startswith("module.") for k in state):
    return {k[len("module."):]: v for k, v in state.items()}
  return state


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch state dict file, by name: {key: array of the tensor's dtype}.

  Raises UserError naming the file when it is missing, not a PyTorch checkpoint, truncated or
  corrupt, holds objects other than tensors, or holds tensors of a dtype numpy lacks.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f"PyTorch checkpoint {path} does not exist (or is not a file)")
  try:
    with open(path, "rb") as f:
      if zipfile.is_zipfile(f):
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
          result, flats = _read_zip(archive)
      else:
        f.seek(0)
        result, flats = _read_legacy(f)
    refs = _state_dict(result)
    state = {str(k): _materialise(ref, flats[ref.view.storage.key], str(k))
             for k, ref in refs.items()}
  except _FormatError as err:
    raise UserError(f"cannot read PyTorch checkpoint {path}: {err}") from None
  except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError,
          KeyError, IndexError, AttributeError, OverflowError, MemoryError) as err:
    raise UserError(f"cannot read PyTorch checkpoint {path}: it is truncated or corrupt "
                    f"({type(err).__name__}: {err})") from None
  return _strip_module(state)
