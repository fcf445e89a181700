"""PyTorch checkpoints read without PyTorch: both formats, every dtype, and nothing in a pickle ever runs.

The fixtures in ../shared/fixtures were written by `torch.save`; the other files here are written by a small
writer of PyTorch's two formats (opcode by opcode, independently of the reader), so that dtypes, byte orders,
views and hostile or inconsistent files can be tested without torch.
"""
import collections
import struct
import sys
import zipfile

import numpy as np
import pytest

from tfhyper import pytorch_checkpoint
from tfhyper.pytorch_checkpoint import CheckpointError, read_checkpoint

MARKER = "tfhyper-pwned"
CHECKPOINTS = {
    "compressai_hyperprior_n32_m48.pth.tar": "compressai_hyperprior_n32_m48.npz",
    "compressai_factorized_n32_m48.legacy.pth.tar": "compressai_factorized_n32_m48.npz",
}


@pytest.fixture(autouse=True)
def no_torch(monkeypatch, tmp_path):
    """Every test runs with `import torch` failing, in a fresh current directory (where a marker would appear)."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.chdir(tmp_path)


def params_of(npz_path):
    with np.load(npz_path) as archive:
        return {name[len("param/") :]: archive[name] for name in archive.files if name.startswith("param/")}


# -- a writer of PyTorch's formats, protocol 2 opcodes by hand -----------------------------------------------------

STORAGE_NAMES = {"<f4": "FloatStorage", "<f8": "DoubleStorage", "<f2": "HalfStorage", "<i8": "LongStorage",
                 "<i4": "IntStorage", "<i2": "ShortStorage", "|i1": "CharStorage", "|u1": "ByteStorage",
                 "|b1": "BoolStorage"}  # fmt: skip


class View:
    """A tensor of `size` and `stride` (in elements) at `offset` in the storage `key`."""

    def __init__(self, key, offset, size, stride):
        self.key, self.offset, self.size, self.stride = key, offset, tuple(size), tuple(stride)


def op_global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def op_str(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_int(value):
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes(8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def op_tuple(items):
    return b"(" + b"".join(items) + b"t"


def op_tensor(view, storage_type, numel, legacy):
    pid = [op_str("storage"), op_global("torch", storage_type), op_str(view.key), op_str("cpu"), op_int(numel)]
    if legacy:
        pid.append(b"N")
    return (op_global("torch._utils", "_rebuild_tensor_v2")
            + op_tuple([op_tuple(pid) + b"Q", op_int(view.offset), op_tuple(map(op_int, view.size)),
                        op_tuple(map(op_int, view.stride)), b"\x89",
                        op_global("collections", "OrderedDict") + b")R"]) + b"R")  # fmt: skip


def op_dict(items, ordered):
    """A dict, or an OrderedDict carrying `_metadata` state as torch's state_dict() does."""
    body = b"(" + b"".join(op_str(key) + value for key, value in items) + b"u"
    if not ordered:
        return b"}" + body
    metadata = b"}" + op_str("_metadata") + b"}" + b"s"
    return op_global("collections", "OrderedDict") + b")R" + body + metadata + b"b"


def storage_bytes(array, bfloat16=False):
    if bfloat16:
        return (np.asarray(array, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    return np.ascontiguousarray(array).tobytes()


def state_pickle(tensors, storages, legacy, ordered=False, wrap=None):
    """tensors: name -> View; storages: key -> (storage type name, numel)."""
    items = [(name, op_tensor(view, storages[view.key][0], storages[view.key][1], legacy))
             for name, view in tensors.items()]  # fmt: skip
    state = op_dict(items, ordered)
    if wrap is not None:  # a training checkpoint {"epoch": 3, "state_dict": ...}
        state = b"}(" + op_str("epoch") + op_int(3) + op_str(wrap) + state + b"u"
    return b"\x80\x02" + state + b"."


def simple(arrays):
    """Each array in its own contiguous storage: (tensors, storages, raw bytes per key)."""
    tensors, storages, raw = {}, {}, {}
    for index, (name, array) in enumerate(arrays.items()):
        key = str(index)
        bfloat16 = isinstance(array, tuple)
        if bfloat16:
            array = array[1]
        storage_type = "BFloat16Storage" if bfloat16 else STORAGE_NAMES[array.dtype.str]
        strides = [int(np.prod(array.shape[i + 1 :])) for i in range(array.ndim)]
        tensors[name] = View(key, 0, array.shape, strides)
        storages[key] = (storage_type, array.size)
        raw[key] = storage_bytes(array, bfloat16)
    return tensors, storages, raw


def write_zip(path, tensors, storages, raw, byteorder="little", **kwargs):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", state_pickle(tensors, storages, False, **kwargs))
        archive.writestr("archive/byteorder", byteorder)
        for key, data in raw.items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")


def legacy_header():
    magic = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little") + b"."
    protocol = b"\x80\x02" + b"M" + struct.pack("<H", 1001) + b"."
    sys_info = b"\x80\x02}(" + op_str("protocol_version") + op_int(1001) + op_str("little_endian") + b"\x88u."
    return magic + protocol + sys_info


def write_legacy(path, tensors, storages, raw, **kwargs):
    keys = list(raw)
    key_list = b"\x80\x02]" + b"(" + b"".join(op_str(k) for k in keys) + b"e."
    chunks = [struct.pack("<q", storages[k][1]) + raw[k] for k in keys]
    path.write_bytes(legacy_header() + state_pickle(tensors, storages, True, **kwargs) + key_list + b"".join(chunks))


WRITERS = {"zip": write_zip, "legacy": write_legacy}


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "float32": rng.normal(size=(2, 3, 4)).astype(np.float32),
        "float64": rng.normal(size=(5,)),
        "float16": rng.normal(size=(3, 2)).astype(np.float16),
        "int64": np.array([-(2**40), 0, 7], np.int64),
        "int32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3),
        "int16": np.array([-300, 300], np.int16),
        "int8": np.array([-128, 127], np.int8),
        "uint8": np.array([0, 255, 9], np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(1.5, np.float32),
        "empty": np.zeros((0, 4), np.float32),
    }


# -- the fixtures written by torch.save ----------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint, npz", CHECKPOINTS.items())
def test_fixtures_equal_their_npz_parameters_exactly(shared_dir, checkpoint, npz):
    state = read_checkpoint(shared_dir / "fixtures" / checkpoint)
    expected = params_of(shared_dir / "fixtures" / npz)
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and state[key].shape == value.shape, key
        np.testing.assert_array_equal(state[key], value, err_msg=key)
        assert not state[key].flags.writeable  # tensors may share storage: nobody may write through one


def test_hostile_fixture_is_refused_and_runs_nothing(shared_dir, tmp_path):
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(shared_dir / "fixtures" / "hostile_pickle.pth.tar")
    message = str(error.value)
    assert "\n" not in message and "refused" in message and "system" in message and "hostile_pickle" in message
    assert not (tmp_path / MARKER).exists()


# -- files of the writer above -------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("ordered", [False, True])
def test_every_dtype_round_trips(tmp_path, writer, ordered):
    arrays = sample_arrays()
    path = tmp_path / "dtypes.pth"
    WRITERS[writer](path, *simple(arrays), ordered=ordered)
    state = read_checkpoint(path)
    assert type(state) is (collections.OrderedDict if ordered else dict) and list(state) == list(arrays)
    for name, array in arrays.items():
        assert state[name].dtype == array.dtype and state[name].shape == array.shape, name
        np.testing.assert_array_equal(state[name], array, err_msg=name)


@pytest.mark.parametrize("writer", WRITERS)
def test_bfloat16_becomes_float32_with_the_same_values(tmp_path, writer):
    values = np.array([1.0, -2.5, 0.0078125, 2.0**100, -0.0, 3.0], np.float32)  # each exactly a bfloat16
    WRITERS[writer](tmp_path / "bf16.pth", *simple({"w": ("bfloat16", values)}))
    state = read_checkpoint(tmp_path / "bf16.pth")
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["w"], values)


def test_big_endian_zip_records_are_swapped(tmp_path):
    value = np.array([[1.25, -3.0], [7.5, 1e-3]], np.float64)
    tensors, storages, _ = simple({"w": value})
    write_zip(tmp_path / "be.pth", tensors, storages, {"0": value.astype(">f8").tobytes()}, byteorder="big")
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "be.pth")["w"], value)


@pytest.mark.parametrize("writer", WRITERS)
def test_views_of_a_shared_storage(tmp_path, writer):
    base = np.arange(12, dtype=np.float32)
    tensors = {
        "whole": View("s", 0, (3, 4), (4, 1)),
        "transposed": View("s", 0, (4, 3), (1, 4)),
        "row": View("s", 8, (4,), (1,)),
        "column": View("s", 1, (3,), (4,)),
    }
    WRITERS[writer](tmp_path / "views.pth", tensors, {"s": ("FloatStorage", 12)}, {"s": base.tobytes()})
    state = read_checkpoint(tmp_path / "views.pth")
    grid = base.reshape(3, 4)
    for name, expected in (("whole", grid), ("transposed", grid.T), ("row", grid[2]), ("column", grid[:, 1])):
        np.testing.assert_array_equal(state[name], expected, err_msg=name)


@pytest.mark.parametrize("writer", WRITERS)
def test_training_checkpoints_are_unwrapped_by_the_converter(tmp_path, writer):
    from tfhyper import convert

    arrays = {"g_a.0.bias": np.arange(4, dtype=np.float32)}
    WRITERS[writer](tmp_path / "run.pth.tar", *simple(arrays), wrap="state_dict")
    assert read_checkpoint(tmp_path / "run.pth.tar")["epoch"] == 3
    state = convert.read_state_dict(tmp_path / "run.pth.tar")
    assert list(state) == ["g_a.0.bias"]
    np.testing.assert_array_equal(state["g_a.0.bias"], arrays["g_a.0.bias"])


# -- refusing what a state dict never holds ------------------------------------------------------------------------


def hostile_pickle(module, name, argument):
    """A pickle that calls module.name(argument) when loaded naively."""
    return b"\x80\x02}(" + op_str("w") + op_global(module, name) + op_tuple([op_str(argument)]) + b"Ru."


@pytest.mark.parametrize(
    "module, name",
    [("posix", "system"), ("os", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "getoutput"),
     ("builtins", "getattr"), ("torch.storage", "_load_from_bytes"), ("numpy.core.multiarray", "_reconstruct"),
     ("torch", "load"), ("collections", "namedtuple")],
)  # fmt: skip
@pytest.mark.parametrize("writer", WRITERS)
def test_any_other_global_is_refused_before_it_runs(tmp_path, module, name, writer):
    command = f"echo x > {MARKER}"
    argument = command if name in ("system", "getoutput") else f"open({MARKER!r}, 'w')"
    data = hostile_pickle(module, name, argument)
    path = tmp_path / "hostile.pth"
    if writer == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", data)
    else:
        path.write_bytes(legacy_header() + data + b"\x80\x02](e.")
    with pytest.raises(CheckpointError, match=f"refused to load the global {module}.{name}") as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / MARKER).exists()


@pytest.mark.parametrize("writer", WRITERS)
def test_tensor_outside_its_storage_is_refused(tmp_path, writer):
    for view in (View("s", 2, (3,), (1,)), View("s", 0, (2, 2), (1, 3))):
        WRITERS[writer](tmp_path / "oob.pth", {"w": view}, {"s": ("FloatStorage", 4)}, {"s": bytes(16)})
        with pytest.raises(CheckpointError, match="outside its storage"):
            read_checkpoint(tmp_path / "oob.pth")


@pytest.mark.parametrize("writer", WRITERS)
def test_zero_strides_cannot_expand_a_small_file(tmp_path, writer):
    view = View("s", 0, (100000, 100000), (0, 0))  # 40 GB of float32 from 4 bytes
    WRITERS[writer](tmp_path / "bomb.pth", {"w": view}, {"s": ("FloatStorage", 1)}, {"s": bytes(4)})
    with pytest.raises(CheckpointError, match="outside its storage"):
        read_checkpoint(tmp_path / "bomb.pth")


@pytest.mark.parametrize("writer", WRITERS)
def test_storage_larger_than_the_file_is_refused_before_allocation(tmp_path, writer):
    numel = 2**40  # 4 TiB declared, 16 bytes present
    tensors = {"w": View("s", 0, (4,), (1,))}
    WRITERS[writer](tmp_path / "big.pth", tensors, {"s": ("FloatStorage", numel)}, {"s": bytes(16)})
    with pytest.raises(CheckpointError, match="declares"):
        read_checkpoint(tmp_path / "big.pth")


def test_legacy_storage_count_must_match_its_declaration(tmp_path):
    arrays = {"w": np.arange(4, dtype=np.float32)}
    tensors, storages, raw = simple(arrays)
    write_legacy(tmp_path / "ok.pth", tensors, storages, raw)
    data = bytearray((tmp_path / "ok.pth").read_bytes())
    count_at = len(data) - 16 - 8
    assert struct.unpack("<q", data[count_at : count_at + 8]) == (4,)
    data[count_at : count_at + 8] = struct.pack("<q", 3)
    (tmp_path / "bad.pth").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="holds 3 elements, declared 4"):
        read_checkpoint(tmp_path / "bad.pth")


# -- truncated, corrupted, or not a checkpoint at all --------------------------------------------------------------


def one_line_error(path):
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.3, 0.6, 0.9999])
def test_truncated_checkpoints_give_one_clear_error(shared_dir, tmp_path, checkpoint, fraction):
    data = (shared_dir / "fixtures" / checkpoint).read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: max(4, int(len(data) * fraction))])
    assert "truncated" in one_line_error(path)


def test_corrupted_zip_record_is_detected(shared_dir, tmp_path):
    source = shared_dir / "fixtures" / "compressai_hyperprior_n32_m48.pth.tar"
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo(next(n for n in archive.namelist() if n.endswith("/data/2")))
    data = bytearray(source.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 100] ^= 0xFF  # one bit pattern inside a weight: only the CRC can tell
    path = tmp_path / "corrupted.pth"
    path.write_bytes(bytes(data))
    assert "corrupted" in one_line_error(path)


def test_corrupted_legacy_magic_is_detected(shared_dir, tmp_path):
    data = bytearray((shared_dir / "fixtures" / "compressai_factorized_n32_m48.legacy.pth.tar").read_bytes())
    data[6] ^= 0x01  # inside the magic number
    path = tmp_path / "corrupted.pth"
    path.write_bytes(bytes(data))
    assert "not a PyTorch checkpoint" in one_line_error(path)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + bytes(100), b"PK\x03\x04garbage", bytes(range(256))])
def test_other_files_give_one_clear_error(tmp_path, content):
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    one_line_error(path)


def test_zip_without_a_pickle_is_not_a_checkpoint(tmp_path):
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "data.pkl" in one_line_error(tmp_path / "plain.zip")


def test_oversized_files_are_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(pytorch_checkpoint, "MAX_FILE_BYTES", 100)
    path = tmp_path / "large.pth"
    path.write_bytes(bytes(101))
    assert "more than a checkpoint may have" in one_line_error(path)


def test_pickle_of_a_module_is_refused(tmp_path):
    pid = op_tuple([op_str("module"), op_str("g"), op_str("source.py"), op_str("class G: pass")]) + b"Q"
    data = b"\x80\x02}(" + op_str("w") + pid + b"u."
    path = tmp_path / "module.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    assert "persistent id 'module'" in one_line_error(path)
