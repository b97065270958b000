"""Checkpoint files read and written one tensor at a time.

:func:`open_checkpoint` opens a ``.safetensors`` file or a PyTorch
checkpoint (``torch.save`` of a state dict: ``.pt``, ``.pth``, ``.bin``),
decided from the file's first bytes, never from its name. A
:class:`Checkpoint` lists the tensors and their shapes and dtypes without
reading any data, and :meth:`Checkpoint.get` reads one tensor:

* safetensors: the JSON header is parsed here, and each tensor is read by
  ``seek`` + ``readinto`` straight into a fresh ``torch.empty`` buffer, so
  reading a checkpoint larger than memory tensor by tensor keeps the
  resident memory near one tensor (no memory map whose pages pile up);
* PyTorch: ``torch.load(weights_only=True, mmap=True)`` (``mmap`` for the
  zip format of ``torch.save`` since 1.6; the legacy format is read whole);
  each tensor is copied out and its mapped pages dropped again.
  The state dict is the file's top-level mapping, or the mapping under
  ``"state_dict"`` or ``"model"`` (training checkpoints); its non-tensor
  entries, and its tensors of a layout other than dense (strided), such as
  sparse tensors, are listed by :meth:`Checkpoint.skipped`. Tensors saved
  tied (one storage under several names, e.g. ``lm_head.weight is
  wte.weight``) are listed by :meth:`Checkpoint.aliases`.

:class:`SafetensorsWriter` writes a ``.safetensors`` file tensor by tensor:
the data goes to a temporary file in the destination's directory as it
comes, and :meth:`SafetensorsWriter.commit` writes the header and the data
into a second temporary file, ``fsync`` s it and renames it onto the
destination (``os.replace``, atomic on POSIX), so the destination is either
untouched or complete, never partial. A process killed before the rename
leaves only its hidden temporaries (``.NAME.weightops-PID-*.tmp``), which
the next writer of the same destination removes once process ``PID`` is
gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import math
import mmap
import os
import stat
import struct
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import torch
from torch import Tensor

__all__ = ["Checkpoint", "SafetensorsWriter", "open_checkpoint"]

PathLike = str | os.PathLike[str]

#: safetensors dtype names and torch dtypes, both ways (those this torch has).
_ST_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, attr)
    for name, attr in (
        ("F64", "float64"),
        ("F32", "float32"),
        ("F16", "float16"),
        ("BF16", "bfloat16"),
        ("I64", "int64"),
        ("I32", "int32"),
        ("I16", "int16"),
        ("I8", "int8"),
        ("U8", "uint8"),
        ("BOOL", "bool"),
        ("U16", "uint16"),
        ("U32", "uint32"),
        ("U64", "uint64"),
        ("F8_E4M3", "float8_e4m3fn"),
        ("F8_E5M2", "float8_e5m2"),
        ("C64", "complex64"),
    )
    if hasattr(torch, attr)
}
_TORCH_DTYPES = {dtype: name for name, dtype in _ST_DTYPES.items()}

#: safetensors' own limit on the JSON header (100 MB): a larger length field
#: means the file is something else.
_MAX_HEADER = 100_000_000
#: Bytes per step when copying data between files.
_COPY = 1 << 24
#: The first bytes of a ``torch.save`` file: a zip archive (the default
#: since torch 1.6) or a pickle (the legacy format, protocol 2 and up).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
#: Keys under which training checkpoints keep their state dict.
_NESTED = ("state_dict", "model")
_TEMP_TAG = ".weightops-"


def _not_a_checkpoint(path: PathLike, why: str) -> ValueError:
    return ValueError(f"{os.fspath(path)} is not a safetensors or PyTorch checkpoint ({why})")


def _safetensors_header(file: IO[bytes], size: int) -> tuple[int, dict[str, Any]] | None:
    """(data start, header) when ``file`` looks like safetensors, else None.

    The header is a little-endian u64 length, then that many bytes of a JSON
    object starting with ``{``.
    """
    file.seek(0)
    head = file.read(9)
    if len(head) < 9:
        return None
    (length,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or length > min(_MAX_HEADER, size - 8):
        return None
    file.seek(8)
    try:
        header = json.loads(file.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    return 8 + length, header


class Checkpoint:
    """An open checkpoint file: tensor names, shapes and dtypes, and one tensor at a time.

    Made by :func:`open_checkpoint`; a context manager (:meth:`close` on exit).

    Attributes:
        path: the file.
        format: ``"safetensors"`` or ``"torch"``.
        metadata: safetensors' ``__metadata__`` (str to str); ``{}`` for a
            PyTorch checkpoint.
    """

    def __init__(
        self,
        path: Path,
        format: Literal["safetensors", "torch"],
        metadata: dict[str, str],
        entries: dict[str, tuple[tuple[int, ...], torch.dtype]],
        *,
        file: io.BufferedReader | None = None,
        offsets: dict[str, tuple[int, int]] | None = None,
        tensors: Mapping[str, Tensor] | None = None,
        skipped: list[tuple[str, str]] | None = None,
        aliases: dict[str, str] | None = None,
        mapped: bool = False,
    ) -> None:
        self.path = path
        self.format = format
        self.metadata = metadata
        self._entries = entries
        self._file = file
        self._offsets = offsets or {}
        self._tensors = tensors
        self._skipped = skipped or []
        self._aliases = aliases or {}
        self._mapped = mapped
        self._closed = False

    def names(self) -> list[str]:
        """The tensors' names, in the file's order."""
        return list(self._entries)

    def info(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        """``(shape, dtype)`` of tensor ``name``, without reading its data.

        Raises:
            KeyError: no tensor of that name.
        """
        if name not in self._entries:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        return self._entries[name]

    def nbytes(self, name: str) -> int:
        """Bytes of tensor ``name``'s data."""
        shape, dtype = self.info(name)
        return math.prod(shape) * dtype.itemsize

    def get(self, name: str) -> Tensor:
        """Tensor ``name``, on the CPU.

        A fresh tensor that owns its memory. For safetensors it is read with
        ``readinto`` (no memory map). For a PyTorch checkpoint it is a copy
        of what ``torch.load(mmap=True)`` maps, whose pages are then dropped
        from this process (``madvise(MADV_DONTNEED)``), so that the memory
        map does not accumulate in the resident size either.

        Raises:
            KeyError: no tensor of that name.
            ValueError: the file is shorter than its header says.
            RuntimeError: the checkpoint is closed.
        """
        shape, dtype = self.info(name)
        if self._closed:
            raise RuntimeError(f"{self.path}: the checkpoint is closed")
        if self._tensors is not None:
            mapped = self._tensors[name]
            tensor = mapped.clone()
            if self._mapped:
                _drop_pages(mapped)
            return tensor
        assert self._file is not None
        begin, end = self._offsets[name]
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        self._file.seek(begin)
        view = buffer.numpy().data.cast("B")
        done = 0
        while done < len(view):
            count = self._file.readinto(view[done:])
            if not count:
                raise ValueError(
                    f"{self.path}: truncated: tensor {name!r} runs past the file's end"
                )
            done += count
        if dtype == torch.uint8:
            return buffer.view(shape)
        return buffer.view(dtype).view(shape)

    def skipped(self) -> list[tuple[str, str]]:
        """``(name, reason)`` of every entry that :meth:`names` leaves out (PyTorch checkpoints).

        Those are the entries that are not tensors and the tensors whose
        layout is not dense (strided): sparse (``torch.sparse_coo``,
        ``torch.sparse_csr``, ...) and other layouts, with a reason such as
        ``"sparse layout (torch.sparse_coo)"``. Their data is never read.
        """
        return list(self._skipped)

    def aliases(self) -> dict[str, str]:
        """``{alias: canonical}`` for tensors saved tied (PyTorch checkpoints).

        Two names are the same tensor when they view the same storage in the
        same way: same storage address, storage offset, shape, stride and
        dtype (``torch.save`` keeps ``lm_head.weight is wte.weight`` as one
        storage). Each such name maps to the first of its group in the
        file's order, which is not itself a key. Computed when the file is
        opened, from the memory-mapped tensors' metadata, reading no data.
        Empty tensors are never aliases. ``{}`` for safetensors, whose
        format has no shared tensors.
        """
        return dict(self._aliases)

    def close(self) -> None:
        """Release the file; further :meth:`get` calls raise."""
        self._closed = True
        if self._file is not None:
            self._file.close()
        self._tensors = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"Checkpoint({os.fspath(self.path)!r}, format={self.format!r}, tensors={len(self)})"


def open_checkpoint(path: PathLike) -> Checkpoint:
    """Open a safetensors or PyTorch checkpoint; the format is read from the bytes.

    Args:
        path: a ``.safetensors`` file, or a ``torch.save`` file of a state
            dict (a mapping of names to tensors, possibly under
            ``"state_dict"`` or ``"model"``), whatever its suffix.

    Returns:
        An open :class:`Checkpoint`.

    Raises:
        FileNotFoundError: ``path`` does not exist (or is a directory).
        ValueError: ``"PATH is not a safetensors or PyTorch checkpoint (why)"``
            for anything else, including a PyTorch file that
            ``torch.load(weights_only=True)`` refuses or that holds no
            mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    file = path.open("rb")
    try:
        size = os.fstat(file.fileno()).st_size
        found = _safetensors_header(file, size)
        if found is not None:
            return _open_safetensors(path, file, size, *found)
        file.seek(0)
        head = file.read(4)
    except BaseException:
        file.close()
        raise
    file.close()
    if head == _ZIP_MAGIC or head[:2] in _PICKLE_PROTOCOLS:
        return _open_torch(path, zipped=head == _ZIP_MAGIC)
    raise _not_a_checkpoint(path, "neither a safetensors header nor a torch.save file")


def _open_safetensors(
    path: Path, file: io.BufferedReader, size: int, start: int, header: dict[str, Any]
) -> Checkpoint:
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _not_a_checkpoint(path, "__metadata__ is not a mapping of str to str")
    entries: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    offsets: dict[str, tuple[int, int]] = {}
    for name, entry in header.items():
        try:
            dtype = _ST_DTYPES[entry["dtype"]]
            shape = tuple(int(n) for n in entry["shape"])
            begin, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _not_a_checkpoint(path, f"bad header entry for {name!r}: {entry!r}") from None
        if min(shape, default=0) < 0 or not 0 <= begin <= end or start + end > size:
            raise _not_a_checkpoint(path, f"bad header entry for {name!r}: {entry!r}")
        if end - begin != math.prod(shape) * dtype.itemsize:
            raise _not_a_checkpoint(path, f"tensor {name!r}: its size does not match its shape")
        entries[name] = (shape, dtype)
        offsets[name] = (start + begin, start + end)
    return Checkpoint(path, "safetensors", dict(metadata), entries, file=file, offsets=offsets)


def _open_torch(path: Path, *, zipped: bool) -> Checkpoint:
    if zipped and not zipfile.is_zipfile(path):
        raise _not_a_checkpoint(path, "a damaged zip archive")
    mapped = zipped and not path.name.endswith(".safetensors")
    try:
        if path.name.endswith(".safetensors"):
            # torch.load reads a path of that suffix as safetensors: hand it
            # the open file instead (read whole, as mmap needs a path).
            with path.open("rb") as file:
                loaded = torch.load(file, map_location="cpu", weights_only=True)
        else:
            # mmap needs the zip format; the legacy pickle format is read whole.
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise _not_a_checkpoint(path, f"torch.load(weights_only=True) failed: {reason}") from None
    if not isinstance(loaded, Mapping):
        raise _not_a_checkpoint(path, f"it holds a {type(loaded).__name__}, not a state dict")
    skipped: list[tuple[str, str]] = []
    for key in _NESTED:
        if isinstance(loaded.get(key), Mapping):
            skipped += [
                (str(k), f"outside the state dict under {key!r}") for k in loaded if k != key
            ]
            loaded = loaded[key]
            break
    tensors: dict[str, Tensor] = {}
    for name, value in loaded.items():
        if not isinstance(name, str):
            skipped.append((str(name), f"its key is a {type(name).__name__}, not a str"))
        elif not isinstance(value, Tensor):
            skipped.append((name, f"not a tensor ({type(value).__name__})"))
        elif value.layout != torch.strided:
            # Sparse and other layouts have no single storage to copy out
            # (untyped_storage() raises for them): listed, never read.
            kind = "sparse" if "sparse" in str(value.layout) else "non-dense"
            skipped.append((name, f"{kind} layout ({value.layout})"))
        else:
            tensors[name] = value
    entries = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    return Checkpoint(
        path,
        "torch",
        {},
        entries,
        tensors=tensors,
        skipped=skipped,
        aliases=_aliases(tensors),
        mapped=mapped,
    )


def _aliases(tensors: Mapping[str, Tensor]) -> dict[str, str]:
    """``{alias: first name}`` of the tensors that view one storage identically.

    Only metadata is read (addresses, offsets, shapes, strides): no page of a
    memory-mapped storage is touched.
    """
    first: dict[tuple[Any, ...], str] = {}
    out: dict[str, str] = {}
    for name, tensor in tensors.items():
        if tensor.numel() == 0:
            continue  # empty storages may all sit at address 0
        key = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        if key in first:
            out[name] = first[key]
        else:
            first[key] = name
    return out


def _drop_pages(tensor: Tensor) -> None:
    """Unmap the memory-mapped pages of ``tensor``'s storage from this process.

    Pages of ``torch.load(mmap=True)`` count in the resident size once read
    and stay mapped; reading a checkpoint larger than memory would show it
    all resident. ``MADV_DONTNEED`` drops them: the mapping is private and
    never written here, so a later access reads the same bytes from the file.
    Without ``madvise`` (not Linux or BSD) this does nothing, nor for a
    tensor of a layout other than strided (it has no single storage).
    """
    if tensor.layout != torch.strided:
        return
    storage = tensor.untyped_storage()
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or storage.nbytes() == 0:
        return
    page = mmap.PAGESIZE
    start = storage.data_ptr() // page * page
    end = -(-(storage.data_ptr() + storage.nbytes()) // page) * page
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), ctypes.c_int(advice))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Remove temporaries of earlier writers of ``path`` whose process is gone."""
    prefix = f".{path.name}{_TEMP_TAG}"
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            pid = entry.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


class SafetensorsWriter:
    """Write a ``.safetensors`` file one tensor at a time, atomically.

    :meth:`add` appends each tensor's bytes to a temporary file next to
    ``path``; :meth:`commit` writes the header and the data to a second
    temporary file, ``fsync`` s it and ``os.replace`` s it onto ``path``.
    ``path`` is not touched before that rename. :meth:`abort` removes the
    temporaries. As a context manager it commits when the block succeeds and
    aborts on any exception, ``KeyboardInterrupt`` included.

    In the file, tensors are ordered by decreasing element size (then in the
    order added), so each tensor's data is aligned to its element size, as
    the ``safetensors`` library writes them; the header is padded with
    spaces to a multiple of 8 bytes. Memory use is one tensor's bytes at a
    time plus a 16 MB copy buffer at commit.

    Args:
        path: the file to write.
        metadata: str to str, the header's ``__metadata__``; more entries
            may be added to :attr:`metadata` before :meth:`commit`.

    Raises:
        FileNotFoundError: ``path``'s directory does not exist.
        TypeError: ``metadata`` is not a mapping of str to str.

    >>> import tempfile
    >>> from safetensors import safe_open
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with SafetensorsWriter(f"{d}/a.safetensors", {"note": "hi"}) as w:
    ...         w.add("x", torch.arange(3.0))
    ...     with safe_open(f"{d}/a.safetensors", "pt") as f:
    ...         f.metadata(), f.get_tensor("x")
    ({'note': 'hi'}, tensor([0., 1., 2.]))
    """

    def __init__(self, path: PathLike, metadata: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: its directory does not exist")
        self.metadata: dict[str, str] = dict(metadata or {})
        _check_metadata(self.metadata)
        _remove_stale(self.path)
        self._prefix = f".{self.path.name}{_TEMP_TAG}{os.getpid()}-"
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        self._size = 0
        self._final: str | None = None
        self._done = False
        fd, self._data_path = tempfile.mkstemp(
            prefix=self._prefix, suffix=".data.tmp", dir=self.path.parent
        )
        self._data: IO[bytes] | None = os.fdopen(fd, "w+b")

    @property
    def names(self) -> list[str]:
        """The names added so far."""
        return list(self._entries)

    def add(self, name: str, tensor: Tensor) -> None:
        """Append ``tensor`` (copied to the CPU, made contiguous) as ``name``.

        Raises:
            TypeError: ``name`` is not a str or ``tensor`` not a tensor, or its
                dtype has no safetensors name.
            ValueError: ``name`` is empty, ``"__metadata__"`` or already added.
            RuntimeError: the writer was committed or aborted.
        """
        op = "SafetensorsWriter.add"
        if self._data is None:
            raise RuntimeError(f"{op}: the writer is already committed or aborted")
        if not isinstance(name, str):
            raise TypeError(f"{op}: name must be a str, got {type(name).__name__}")
        if not name or name == "__metadata__" or name in self._entries:
            raise ValueError(f"{op}: name must be new, non-empty and not __metadata__: {name!r}")
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{op}: tensor must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype not in _TORCH_DTYPES:
            raise TypeError(
                f"{op}: tensor {name!r} has dtype {tensor.dtype}, unknown to safetensors"
            )
        data = tensor.detach().to("cpu").contiguous()
        flat = (
            data.reshape(-1).view(torch.uint8)
            if data.numel()
            else torch.empty(0, dtype=torch.uint8)
        )
        self._data.write(flat.numpy().data)
        nbytes = flat.numel()
        self._entries[name] = (data.dtype, tuple(data.shape), self._size, nbytes)
        self._size += nbytes

    def commit(self) -> None:
        """Write the file: header and data to a temporary, ``fsync``, rename onto ``path``.

        Raises:
            RuntimeError: already committed or aborted.
            TypeError: :attr:`metadata` is not a mapping of str to str.
            OSError: writing failed; the temporaries are removed and
                ``path`` is left as it was.
        """
        if self._data is None:
            raise RuntimeError("SafetensorsWriter.commit: already committed or aborted")
        _check_metadata(self.metadata)
        try:
            self._write_final()
            assert self._final is not None
            os.replace(self._final, self.path)
            self._final = None
            # The rename itself reaches the disk with the directory's fsync.
            with contextlib.suppress(OSError):
                fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        self._done = True

    def _write_final(self) -> None:
        assert self._data is not None
        # Widest elements first: every tensor then starts at a multiple of its
        # element size (safetensors forbids gaps between tensors).
        order = sorted(self._entries, key=lambda n: -self._entries[n][0].itemsize)
        header: dict[str, Any] = {}
        if self.metadata:
            header["__metadata__"] = self.metadata
        offset = 0
        for name in order:
            dtype, shape, _, nbytes = self._entries[name]
            header[name] = {
                "dtype": _TORCH_DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        fd, self._final = tempfile.mkstemp(prefix=self._prefix, suffix=".tmp", dir=self.path.parent)
        # mkstemp makes the file private (0o600); give it the mode a plain
        # open() would, or keep that of the file it replaces.
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(struct.pack("<Q", len(text)))
            out.write(text)
            self._data.flush()
            for name in order:
                _, _, start, nbytes = self._entries[name]
                self._data.seek(start)
                while nbytes:
                    chunk = self._data.read(min(nbytes, _COPY))
                    if not chunk:
                        raise OSError(f"{self._data_path}: temporary data file is truncated")
                    out.write(chunk)
                    nbytes -= len(chunk)
            out.flush()
            os.fsync(out.fileno())

    def _cleanup(self) -> None:
        if self._data is not None:
            self._data.close()
            self._data = None
        for temp in (self._data_path, self._final):
            if temp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        self._final = None

    def abort(self) -> None:
        """Remove the temporaries; ``path`` is left as it was. Idempotent."""
        self._cleanup()

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None and not self._done and self._data is not None:
            self.commit()
        else:
            self.abort()

    def __del__(self) -> None:
        # A writer dropped without commit or abort leaves no temporaries.
        with contextlib.suppress(Exception):
            self._cleanup()


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TypeError("SafetensorsWriter: metadata must be a mapping of str to str")
