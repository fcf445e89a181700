"""PyTorch checkpoints (`.pth`, `.pth.tar`, `.pt`) read with the standard library and numpy alone, safely.

CompressAI publishes its trained weights as files written by `torch.save`, in one of PyTorch's two formats:

- the zip format (torch >= 1.6): a zip archive (entries stored, not compressed) whose `<archive>/data.pkl` is
  a pickle of the state dict, each tensor's bytes in a record `<archive>/data/<key>`, and `<archive>/byteorder`
  ("little" or "big"; absent in older files, which are little-endian);
- the legacy format (torch < 1.6): five pickles one after another, a magic number, the protocol version (1001),
  a dict describing the writing machine, the state dict, and the list of storage keys, followed, for each key in
  that order, by the storage's element count (8 bytes, little-endian) and its bytes (little-endian).

In both, a tensor is pickled as a call `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
whose storage is a persistent id `("storage", torch.FloatStorage, key, location, numel, ...)`.

A pickle is a program: loading one with `pickle.load` runs any function the file names (`os.system` included).
`read_checkpoint` unpickles with an unpickler that resolves only an explicit allow-list of globals, each mapped
to a function of this module that builds numpy arrays (torch is never imported), and refuses every other global
before anything is called. Sizes are checked before memory is allocated: a storage may not declare more bytes
than its record (or the rest of the file) holds, a tensor must lie inside its storage and hold no more elements
than it (zero strides could otherwise expand a tiny file into any amount of memory), and a file or pickle beyond
`MAX_FILE_BYTES` / `MAX_PICKLE_BYTES` is refused unread.

Tensors come back as read-only numpy arrays (views of their storage, which tensors may share as in PyTorch);
bfloat16, which numpy lacks, comes back as float32 with the same values.
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

# torch.save's largest CompressAI bmshj2018 file is tens of MB; a limit far above that bounds memory use.
MAX_FILE_BYTES = 2 * 1024**3
MAX_PICKLE_BYTES = 256 * 1024**2
MAX_DIMENSIONS = 64

# Legacy format: the first two pickles (torch/serialization.py's MAGIC_NUMBER and PROTOCOL_VERSION).
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_ZIP_SIGNATURE = b"PK\x03\x04"
_BFLOAT16 = "bfloat16"  # numpy has no such dtype: stored as uint16, returned as float32


class CheckpointError(ValueError):
    """A file that is not a readable PyTorch state dict: truncated, corrupted, too large, or asking to run code."""


class _StorageType:
    """What `torch.FloatStorage` (and the other storage classes) unpickle to: only the element type."""

    def __init__(self, name, dtype):
        self.name = name
        self.dtype = dtype

    @property
    def itemsize(self):
        return 2 if self.dtype == _BFLOAT16 else np.dtype(self.dtype).itemsize

    @property
    def result_dtype(self):
        return np.dtype(np.float32) if self.dtype == _BFLOAT16 else np.dtype(self.dtype)

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TYPES = {
    name: _StorageType(name, dtype)
    for name, dtype in (
        ("FloatStorage", "<f4"),
        ("DoubleStorage", "<f8"),
        ("HalfStorage", "<f2"),
        ("BFloat16Storage", _BFLOAT16),
        ("LongStorage", "<i8"),
        ("IntStorage", "<i4"),
        ("ShortStorage", "<i2"),
        ("CharStorage", "i1"),
        ("ByteStorage", "u1"),
        ("BoolStorage", "?"),
        ("UntypedStorage", "u1"),
    )
}


class _TensorClass:
    """What `torch.Tensor` and `torch.nn.Parameter` unpickle to: a name `_rebuild_from_type_v2` may be given."""

    def __init__(self, name):
        self.name = name


_TENSOR_CLASSES = {("torch", "Tensor"): _TensorClass("Tensor"),
                   ("torch.nn.parameter", "Parameter"): _TensorClass("Parameter")}


# -- the allowed globals: each builds numpy arrays from checked arguments ------------------------------------------


def _check_int(value, what):
    if type(value) is not int or value < 0:
        raise CheckpointError(f"a tensor's {what} is {value!r}, not a non-negative integer")
    return value


def _tensor_view(storage, offset, size, stride):
    """The array torch would rebuild: `size` elements at `stride` (in elements) from `offset` in `storage`."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise CheckpointError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise CheckpointError(f"a tensor has size {size!r} and stride {stride!r}")
    if len(size) > MAX_DIMENSIONS:
        raise CheckpointError(f"a tensor has {len(size)} dimensions")
    offset = _check_int(offset, "offset")
    size = tuple(_check_int(s, "size") for s in size)
    stride = tuple(_check_int(s, "stride") for s in stride)
    count = int(np.prod(size, dtype=object))
    if count:
        last = offset + sum((s - 1) * t for s, t in zip(size, stride))
        if last >= storage.size or count > storage.size:
            raise CheckpointError(f"a tensor of size {size} at offset {offset}, stride {stride} lies outside its "
                                  f"storage of {storage.size} elements")
    else:
        offset = 0
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(t * storage.itemsize for t in stride), writeable=False
    )
    return view


def _rebuild_tensor(storage, storage_offset, size, stride):
    """torch._utils._rebuild_tensor (older files)."""
    return _tensor_view(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2: what every tensor of a state dict is pickled as. Gradient flags, hooks
    and metadata concern training in PyTorch and are dropped."""
    return _tensor_view(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): an nn.Parameter is its tensor here."""
    if not isinstance(data, np.ndarray):
        raise CheckpointError(f"a parameter holds a {type(data).__name__}, not a tensor")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2: a tensor of class `new_type` rebuilt by `func(*args)`; only plain
    tensors and parameters, rebuilt by the functions above, are accepted."""
    if func not in _REBUILDERS or not isinstance(new_type, _TensorClass) or not isinstance(args, tuple):
        raise CheckpointError("a tensor of an unsupported class or rebuilt by an unsupported function")
    return func(*args)


def _encode(text, encoding="latin1"):
    """_codecs.encode: how protocol 2 pickles bytes (as a latin-1 string to encode); nothing else is allowed."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("_codecs.encode is allowed only to rebuild bytes from latin-1")
    return text.encode("latin1")


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter)

_ALLOWED = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _encode,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
    **_TENSOR_CLASSES,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED` globals; storages come from `load_storage(persistent_id)`."""

    def __init__(self, stream, load_storage=None):
        super().__init__(stream)
        self._load_storage = load_storage

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise CheckpointError(f"refused to load the global {module}.{name}: a tensor state dict never needs it "
                                  "(the file may be hostile)") from None

    def persistent_load(self, pid):
        if self._load_storage is None:
            raise CheckpointError("a storage where none may be")
        return self._load_storage(pid)


def _unpickle(stream, load_storage=None):
    """The next pickle in `stream`, through the restricted unpickler; any failure is one CheckpointError."""
    try:
        return _RestrictedUnpickler(stream, load_storage).load()
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError("the pickle nests too deeply") from None
    except Exception as error:  # a truncated or corrupted pickle fails in many ways
        raise CheckpointError(f"truncated or corrupted pickle ({type(error).__name__}: {_first_line(error)})") from None


def _first_line(error):
    return (str(error).strip().splitlines() or [""])[0]


def _storage_id(pid, fields):
    """The persistent id's (storage type, key, location, numel, *rest), checked; `fields` is its length."""
    if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
        kind = pid[0] if isinstance(pid, tuple) and pid else pid
        raise CheckpointError(f"unsupported persistent id {kind!r} (only tensor storages are read; a pickled "
                              "module or class is not a state dict)")
    if len(pid) != fields:
        raise CheckpointError(f"a storage id has {len(pid)} fields, expected {fields}")
    storage_type, key, location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"a storage of type {storage_type!r}")
    if not isinstance(key, str) or not isinstance(location, str):
        raise CheckpointError(f"a storage key {key!r} at {location!r}")
    return storage_type, key, _check_int(numel, "storage size"), pid[5:]


def _as_storage(raw, storage_type, byteorder="little"):
    """A 1-D read-only array of the storage's elements from its raw bytes."""
    if storage_type.dtype == _BFLOAT16:
        bits = np.frombuffer(raw, ("<" if byteorder == "little" else ">") + "u2")
        values = (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        dtype = np.dtype(storage_type.dtype)
        if byteorder == "big":
            dtype = dtype.newbyteorder(">")
        values = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="), copy=True)
    values.flags.writeable = False
    return values


# -- the zip format (torch >= 1.6) --------------------------------------------------------------------------------


def _zip_prefix(archive):
    pickles = [name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")]
    top_level = [name for name in pickles if name.count("/") <= 1]
    if len(top_level) != 1:
        raise CheckpointError("not a PyTorch checkpoint (a zip archive without exactly one data.pkl)")
    return top_level[0][: -len("data.pkl")]


def _record_info(archive, name, limit):
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"the record {name} is missing") from None
    if info.file_size > limit:
        raise CheckpointError(f"the record {name} declares {info.file_size} bytes, more than allowed ({limit})")
    return info


def _read_record(archive, name, limit):
    return archive.read(_record_info(archive, name, limit))


def _read_zip(archive):
    prefix = _zip_prefix(archive)
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
        byteorder = _read_record(archive, f"{prefix}byteorder", 16).decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"unknown byte order {byteorder!r}")
    storages = {}
    budget = [MAX_FILE_BYTES]  # bytes all records may still expand to (a compressed record could be a zip bomb)

    def load_storage(pid):
        storage_type, key, numel, _ = _storage_id(pid, 5)
        if key not in storages:
            info = _record_info(archive, f"{prefix}data/{key}", budget[0])
            nbytes = numel * storage_type.itemsize
            if nbytes > info.file_size:
                raise CheckpointError(f"storage {key} declares {nbytes} bytes but its record holds {info.file_size}")
            budget[0] -= info.file_size
            try:
                raw = archive.read(info)
            except (zipfile.BadZipFile, EOFError) as error:  # a CRC that does not match, a record cut short
                raise CheckpointError(f"the record {info.filename} is truncated or corrupted ({error})") from None
            storages[key] = (storage_type, _as_storage(raw[:nbytes], storage_type, byteorder))
        if storages[key][0] is not storage_type:
            raise CheckpointError(f"storage {key} is read as two types")
        return storages[key][1]

    return _unpickle(io.BytesIO(_read_record(archive, f"{prefix}data.pkl", MAX_PICKLE_BYTES)), load_storage)


# -- the legacy format (torch < 1.6) ------------------------------------------------------------------------------


class _Cursor:
    """Reads the legacy format's consecutive pickles and storages from bytes held in memory."""

    def __init__(self, data):
        self.data = data
        self.stream = io.BytesIO(data)

    def pickle(self, load_storage=None):
        return _unpickle(self.stream, load_storage)

    def take(self, count, what):
        left = len(self.data) - self.stream.tell()
        if count > left:
            raise CheckpointError(f"truncated: {what} declares {count} bytes, the file holds {left} more")
        return self.stream.read(count)


def _read_legacy_header(cursor):
    if cursor.pickle() != LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (no legacy-format magic number)")
    protocol = cursor.pickle()
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"legacy protocol version {protocol!r}, expected {LEGACY_PROTOCOL}")
    sys_info = cursor.pickle()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise CheckpointError("written by a big-endian machine in the legacy format, which is not supported")


def _read_legacy(data):
    cursor = _Cursor(data)
    _read_legacy_header(cursor)
    declared = {}  # key -> (storage type, numel, buffer the tensors are views of)

    def load_storage(pid):
        storage_type, key, numel, (view_metadata,) = _storage_id(pid, 6)
        if key not in declared:
            if numel * storage_type.itemsize > len(data):
                raise CheckpointError(f"storage {key} declares {numel * storage_type.itemsize} bytes, more than "
                                      f"the file's {len(data)}")
            declared[key] = (storage_type, numel, np.zeros(numel, storage_type.result_dtype))
        if declared[key][:2] != (storage_type, numel):
            raise CheckpointError(f"storage {key} is declared twice differently")
        buffer = declared[key][2]
        if view_metadata is None:
            return buffer
        _, offset, size = view_metadata  # (root key, element offset, element count)
        if _check_int(offset, "view offset") + _check_int(size, "view size") > numel:
            raise CheckpointError(f"a view of storage {key} lies outside it")
        return buffer[offset : offset + size]

    value = cursor.pickle(load_storage)
    keys = cursor.pickle()
    if not isinstance(keys, list) or sorted(keys) != sorted(declared):
        raise CheckpointError("the list of storage keys does not match the storages used")
    for key in keys:
        storage_type, numel, buffer = declared[key]
        (count,) = struct.unpack("<q", cursor.take(8, f"storage {key}'s size"))
        if count != numel:
            raise CheckpointError(f"storage {key} holds {count} elements, declared {numel}")
        raw = cursor.take(numel * storage_type.itemsize, f"storage {key}")
        buffer[...] = _as_storage(raw, storage_type)
    for _, _, buffer in declared.values():
        buffer.flags.writeable = False
    return value


# -- the public entry point ----------------------------------------------------------------------------------------


def read_checkpoint(path):
    """What `torch.load(path)` would return for a state-dict checkpoint, with tensors as numpy arrays, without torch.

    Either format; containers are dicts, OrderedDicts, lists and tuples of tensors and plain values. Raises
    `CheckpointError` (a ValueError) with one line naming the file for anything else: a global outside the
    allow-list (nothing in the file is run), a truncated or corrupted file, inconsistent sizes.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: {size} bytes, more than a checkpoint may have ({MAX_FILE_BYTES})")
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        if head == _ZIP_SIGNATURE:
            return _read_zip_file(path)
        with open(path, "rb") as f:
            return _read_legacy(f.read())
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _read_zip_file(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_zip(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        raise CheckpointError(f"truncated or corrupted zip archive ({_first_line(error)})") from None
