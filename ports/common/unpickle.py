"""Read torch checkpoints (zip or legacy) and pickles without executing their code.

``pickle`` calls whatever global a file names; a checkpoint is therefore code. This unpickler
resolves only an allow-list: tensor/storage rebuild functions (reimplemented here with numpy, so
torch is not needed), plain containers, and numpy array reconstruction. Classes of frameworks a
caller names in ``stub_modules`` (e.g. a Lightning ``Specifications`` dataclass, fastai layers)
become inert ``Stub`` objects that only record their arguments and state. Anything else raises
``UnsafePickleError`` naming the global.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global that is not on the allow-list."""


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
}
_TORCH_DTYPES = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16, "bfloat16": "bfloat16",
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "bool": np.bool_, "complex64": np.complex64, "complex128": np.complex128,
}


class _StorageType:
    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage:
    """Raw bytes of a torch storage plus its element dtype."""

    def __init__(self, data: bytes, dtype):
        self.data, self.dtype = data, dtype

    def array(self) -> np.ndarray:
        if self.dtype == "bfloat16":
            raw = np.frombuffer(self.data, dtype="<u2").astype(np.uint32) << 16
            return raw.view(np.float32)
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<"))


def _rebuild_tensor(storage: _Storage, offset, size, stride, *args, **kwargs) -> np.ndarray:
    flat = storage.array()
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(flat[offset], copy=True)
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                           strides=tuple(s * item for s in stride))
    return np.array(view, copy=True)  # own memory, native order


def _rebuild_parameter(data, *args, **kwargs):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


class Stub:
    """Inert stand-in for a framework object: records constructor args and pickled state."""

    _module = "?"
    _name = "?"

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs = args, kwargs

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) form
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._state = state

    def __repr__(self):
        return f"<Stub {self._module}.{self._name}>"

    @classmethod
    def qualname(cls) -> str:
        return f"{cls._module}.{cls._name}"


_stub_classes: dict[tuple[str, str], type] = {}


def stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _stub_classes:
        _stub_classes[key] = type(name, (Stub,), {"_module": module, "_name": name})
    return _stub_classes[key]


def _reconstructor(cls, base, state):
    # copyreg._reconstructor(cls, object, None): how plain classes (dataclasses) pickle.
    if not (isinstance(cls, type) and issubclass(cls, Stub)) or base is not object:
        raise UnsafePickleError(f"copyreg._reconstructor on {cls!r} is not allowed")
    return cls.__new__(cls)


def _numpy_reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise UnsafePickleError(f"numpy reconstruct of {cls!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


def _encode(text, encoding="latin1"):  # _codecs.encode, used by protocol-2 bytes
    return text.encode(encoding)


_SAFE: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "list"): list,
    ("builtins", "dict"): dict, ("builtins", "tuple"): tuple, ("builtins", "slice"): slice,
    ("builtins", "complex"): complex, ("builtins", "bytearray"): bytearray,
    ("builtins", "object"): object,
    ("__builtin__", "set"): set, ("__builtin__", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor, ("copy_reg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _encode,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, *, stub_modules: Iterable[str] = (), storages=None,
                 rebuild=None):
        super().__init__(file)
        self.stub_modules = tuple(stub_modules)
        self.storages = storages  # zip format: key -> bytes loader; legacy: dict filled later
        self.rebuild = rebuild  # legacy format: tensors are rebuilt once storages are read

    def find_class(self, module: str, name: str):
        if self.rebuild and module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return self.rebuild
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        if module in ("torch.storage", "torch") and name in ("UntypedStorage", "TypedStorage"):
            return _StorageType(name, np.uint8)
        if any(module == m or module.startswith(m + ".") for m in self.stub_modules):
            return stub_class(module, name)
        raise UnsafePickleError(f"refusing to load global {module}.{name}: not on the allow-list")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafePickleError(f"unsupported persistent id {pid!r}")
        _, stype, key, _location, *rest = pid
        dtype = stype if isinstance(stype, (str, type)) or stype == "bfloat16" else None
        if isinstance(stype, _StorageType):
            dtype = stype.dtype
        if callable(self.storages):  # zip archive
            return _Storage(self.storages(str(key)), dtype)
        # legacy format: storage bytes come after the pickle; resolve lazily
        return self.storages.setdefault(str(key), _LazyStorage(dtype))


class _LazyStorage(_Storage):
    def __init__(self, dtype):
        super().__init__(b"", dtype)


def _legacy_load(f: BinaryIO, stub_modules) -> Any:
    """torch < 1.6 file: magic, protocol, sys info, object pickle, storage keys, raw storages."""
    def plain():  # even the header pickles go through the allow-list
        return RestrictedUnpickler(f, storages={}).load()

    magic = plain()
    if magic != 0x1950A86A20F9469CFC6C:
        raise pickle.UnpicklingError("not a torch legacy checkpoint (bad magic number)")
    plain()  # protocol version
    plain()  # sys info
    storages: dict[str, _LazyStorage] = {}
    rebuilt: list = []

    def deferred_rebuild(storage, offset, size, stride, *a, **k):
        holder = _DeferredTensor(storage, offset, size, stride)
        rebuilt.append(holder)
        return holder

    obj = RestrictedUnpickler(f, stub_modules=stub_modules, storages=storages,
                              rebuild=deferred_rebuild).load()
    keys = plain()
    for key in keys:
        (n,) = struct.unpack("<q", f.read(8))
        st = storages[str(key)]
        itemsize = 2 if st.dtype == "bfloat16" else np.dtype(st.dtype).itemsize
        st.data = f.read(n * itemsize)
    return _resolve_deferred(obj)


class _DeferredTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)


def _resolve_deferred(obj, memo=None):
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _DeferredTensor):
        out = _rebuild_tensor(*obj.args)
    elif isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _resolve_deferred(obj[k], memo)
        out = obj
    elif isinstance(obj, list):
        obj[:] = [_resolve_deferred(v, memo) for v in obj]
        out = obj
    elif isinstance(obj, tuple):
        out = tuple(_resolve_deferred(v, memo) for v in obj)
    elif isinstance(obj, Stub):
        for k, v in list(vars(obj).items()):
            setattr(obj, k, _resolve_deferred(v, memo))
        out = obj
    else:
        out = obj
    memo[id(obj)] = out
    return out


def restricted_load(source: str | os.PathLike | bytes | BinaryIO, *,
                    stub_modules: Iterable[str] = ()) -> Any:
    """Load a torch checkpoint (zip or legacy) or a plain pickle without running its code."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            data = fh.read()
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.read()
    buf = io.BytesIO(data)
    if zipfile.is_zipfile(buf):
        with zipfile.ZipFile(buf) as zf:
            names = zf.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise pickle.UnpicklingError("zip archive has no data.pkl: not a torch checkpoint")
            root = pkl[: -len("data.pkl")]
            with zf.open(pkl) as fh:
                up = RestrictedUnpickler(io.BytesIO(fh.read()), stub_modules=stub_modules,
                                         storages=lambda key: zf.read(f"{root}data/{key}"))
                return up.load()
    buf.seek(0)
    try:
        return _legacy_load(buf, stub_modules)
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError):
        buf.seek(0)
    return RestrictedUnpickler(buf, stub_modules=stub_modules, storages={}).load()


def stub_tree_state_dict(module: Stub, prefix: str = "") -> dict[str, np.ndarray]:
    """state_dict of a pickled ``torch.nn.Module`` tree whose classes were stubbed."""
    out: dict[str, np.ndarray] = {}
    d = vars(module)
    for k, v in (d.get("_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = v
    non_persistent = d.get("_non_persistent_buffers_set") or set()
    for k, v in (d.get("_buffers") or {}).items():
        if v is not None and k not in non_persistent:
            out[prefix + k] = v
    for k, sub in (d.get("_modules") or {}).items():
        if sub is not None:
            out.update(stub_tree_state_dict(sub, f"{prefix}{k}."))
    return out


def is_stub(obj: Any, qualname: str | None = None) -> bool:
    return isinstance(obj, Stub) and (qualname is None or type(obj).qualname() == qualname)


__all__ = ["UnsafePickleError", "RestrictedUnpickler", "restricted_load", "Stub", "stub_class",
           "stub_tree_state_dict", "is_stub", "Path"]
