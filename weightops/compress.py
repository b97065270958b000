"""One-shot post-training compression of a checkpoint, tensor by tensor.

:func:`compress_checkpoint` (the ``weightops compress`` command, :func:`main`)
reads a safetensors or PyTorch state dict one tensor at a time
(:mod:`weightops.checkpoint`), prunes, clusters and/or quantizes the selected
tensors with the library's own ops (:func:`~weightops.functional.magnitude_mask`,
:func:`~weightops.functional.nm_mask`, :func:`~weightops.functional.kmeans`,
:func:`~weightops.functional.quantize_params` / ``quantize`` /
``dequantize``, :func:`~weightops.storage.pack_bits`) and writes their
compact forms to a safetensors file through
:class:`~weightops.checkpoint.SafetensorsWriter` (atomically: OUT is absent
or complete). :func:`load_compressed` turns that file back into a float
state dict. The format, the error bounds and the command line are in
``docs/compress.md``.

Stored parts of a compressed tensor ``NAME`` (keys ``NAME::part``):

* ``mask``: with ``prune``/``nm``, the keep-mask, 1 bit an element
  (:func:`~weightops.storage.pack_bits`' layout, ``np.packbits`` little
  endian); only the kept elements' values follow, in row-major order;
* quantization (``bits``): ``codes`` (packed at ``bits`` bits), ``scale``
  (float32) and ``zero_point`` (uint8, int32 above 8 bits), asymmetric
  min-max with the range extended to include 0 (``preserve_zero``), per
  tensor or per channel along ``axis``;
* clustering (``clusters=k``): ``indices`` (packed at ``ceil(log2 k)``
  bits) and ``codebook`` (``(k,)`` or ``(C, k)`` per channel, in the
  weight's dtype), or with ``bits`` too the codebook quantized to ``bits``
  bits as a :class:`~weightops.storage.QuantizedTensor` under
  ``codebook::codes``/``scale``/``zero_point``/``qformat``;
* pruning alone: ``values``, the kept values in the weight's dtype.

Tensors not selected are stored verbatim under their own names. A tensor
saved tied to an earlier one (:meth:`~weightops.checkpoint.Checkpoint.aliases`,
e.g. ``lm_head.weight is wte.weight`` in a ``.pt``) is stored once, under
the first name; its entry says ``{"name": ..., "method": "alias", "of":
FIRST}``. Entries of a non-dense layout (sparse tensors) and non-tensor
entries are not written (:attr:`CompressSummary.skipped`). The
header's ``__metadata__`` holds ``weightops.format`` (``"compressed"``),
``weightops.format_version`` (``"1"``) and ``weightops.tensors``: a JSON list,
in the checkpoint's order, of one object per tensor saying how to rebuild it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from numbers import Real
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor

from weightops._checks import FLOAT_DTYPES, fail
from weightops._progress import progress as _progress
from weightops.checkpoint import PathLike, SafetensorsWriter, open_checkpoint
from weightops.functional.clustering import MAX_K, kmeans
from weightops.functional.quantization import dequantize, quantize, quantize_params
from weightops.functional.sparsity import magnitude_mask, nm_mask
from weightops.storage import (
    QuantizedTensor,
    index_bits,
    pack_bits,
    unpack_bits,
    zero_point_dtype,
)

__all__ = ["CompressSummary", "TensorSummary", "compress_checkpoint", "load_compressed", "main"]

#: Version of the layout described in the module docstring.
FORMAT_VERSION = 1
_FORMAT_KEY = "weightops.format"
_VERSION_KEY = "weightops.format_version"
_TENSORS_KEY = "weightops.tensors"
_SOURCE_KEY = "weightops.source_metadata"
_SEP = "::"
#: Elements per step when encoding, decoding and measuring errors: the
#: temporaries (codes, masks, float64 differences) then take a few MB
#: whatever the tensor's size.
_CHUNK = 1 << 20
_DTYPE_NAMES = {str(d).removeprefix("torch."): d for d in FLOAT_DTYPES}
_OP = "compress_checkpoint"


@dataclass(frozen=True)
class _Options:
    sparsity: float | None
    nm: tuple[int, int] | None
    clusters: int | None
    bits: int | None
    axis: int | None


@dataclass(frozen=True)
class _Spec:
    """How one tensor is stored: the JSON object of ``weightops.tensors``."""

    name: str
    method: str  # "raw", "alias" or "compressed"
    dtype: str = ""
    shape: tuple[int, ...] = ()
    prefix: str = ""
    keys: tuple[str, ...] = ()
    sparsity: float | None = None
    nm: tuple[int, int] | None = None
    nm_dim: int | None = None
    kept: int = 0
    bits: int | None = None
    axis: int | None = None
    clusters: int | None = None
    codebook_bits: int | None = None
    of: str = ""  # for "alias": the name of the tensor stored

    def to_json(self) -> dict[str, Any]:
        if self.method == "raw":
            return {"name": self.name, "method": "raw"}
        if self.method == "alias":
            return {"name": self.name, "method": "alias", "of": self.of}
        out = asdict(self)
        del out["of"]
        return out

    @classmethod
    def from_json(cls, value: Any) -> _Spec:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ValueError(f"a tensor entry is not an object with a name: {value!r}")
        if value.get("method") == "raw":
            return cls(value["name"], "raw")
        if value.get("method") == "alias":
            if not isinstance(value.get("of"), str):
                raise ValueError(f"alias entry {value['name']!r} names no tensor")
            return cls(value["name"], "alias", of=value["of"])
        try:
            spec = cls(
                name=value["name"],
                method=value["method"],
                dtype=value["dtype"],
                shape=tuple(int(n) for n in value["shape"]),
                prefix=str(value["prefix"]),
                keys=tuple(str(k) for k in value["keys"]),
                sparsity=value["sparsity"],
                nm=None if value["nm"] is None else (int(value["nm"][0]), int(value["nm"][1])),
                nm_dim=value["nm_dim"],
                kept=int(value["kept"]),
                bits=value["bits"],
                axis=value["axis"],
                clusters=value["clusters"],
                codebook_bits=value["codebook_bits"],
            )
        except (KeyError, TypeError, ValueError, IndexError):
            raise ValueError(f"tensor entry {value.get('name')!r} is malformed") from None
        if spec.method != "compressed" or spec.dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor entry {spec.name!r}: unknown method or dtype")
        if (spec.bits is None) == (spec.clusters is None) and spec.sparsity is None and not spec.nm:
            raise ValueError(f"tensor entry {spec.name!r}: neither quantized, clustered nor pruned")
        return spec

    @property
    def pruned(self) -> bool:
        return self.sparsity is not None or self.nm is not None

    @property
    def work_shape(self) -> tuple[int, ...]:
        """The shape the tensor is processed in: a 0-D tensor as one element."""
        return self.shape or (1,)


@dataclass(frozen=True)
class TensorSummary:
    """One row of :class:`CompressSummary`: a tensor's bytes and reconstruction error.

    Attributes:
        name: the tensor's name.
        shape: its shape.
        dtype: its dtype, e.g. ``"float32"``.
        method: what was done, e.g. ``"prune 0.5 + q4"``, ``"raw"``
            (verbatim), or ``"alias of NAME"`` (tied to ``NAME``, stored once).
        original_bytes: bytes of the tensor in the checkpoint (an alias's
            own size, though it shares its data with ``alias_of``).
        stored_bytes: bytes of every tensor stored for it (codes, masks,
            scales, zero points, codebooks, configuration); 0 for an alias.
        rel_error: ``‖W − Ŵ‖_F / ‖W‖_F`` of the reconstruction ``Ŵ`` (0 when both are 0).
        max_abs_error: ``max |W − Ŵ|``.
        alias_of: for a tensor tied to an earlier one, that tensor's name
            (its errors are that tensor's); ``None`` otherwise.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    method: str
    original_bytes: int
    stored_bytes: int
    rel_error: float
    max_abs_error: float
    alias_of: str | None = None

    @property
    def ratio(self) -> float:
        """``original_bytes / stored_bytes`` (inf when nothing is stored)."""
        return self.original_bytes / self.stored_bytes if self.stored_bytes else math.inf


@dataclass(frozen=True)
class CompressSummary:
    """What :func:`compress_checkpoint` did: one :class:`TensorSummary` per tensor.

    Attributes:
        source: the input checkpoint.
        destination: the compressed file written.
        tensors: one row per tensor, in the checkpoint's order.
        file_bytes: the size of the written file (tensors and header).
        seconds: wall time of the run.
        skipped: ``(name, reason)`` of the input's entries that were not
            written: non-tensor entries and tensors of a non-dense layout
            (sparse). Listed under the table, never silently dropped.
    """

    source: Path
    destination: Path
    tensors: tuple[TensorSummary, ...]
    file_bytes: int
    seconds: float
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def original_bytes(self) -> int:
        """Bytes of all tensors in the input, tied tensors counted once (aliases left out)."""
        return sum(t.original_bytes for t in self.tensors if t.alias_of is None)

    @property
    def stored_bytes(self) -> int:
        """Bytes of all tensors stored (compact forms and verbatim tensors; aliases store none)."""
        return sum(t.stored_bytes for t in self.tensors if t.alias_of is None)

    @property
    def ratio(self) -> float:
        """``original_bytes / stored_bytes``."""
        return self.original_bytes / self.stored_bytes if self.stored_bytes else math.inf

    def to_markdown(self) -> str:
        """The table: per tensor, then the total and the file's size.

        An alias row shows its own size as original bytes and 0 stored, and
        its ratio and errors as ``-``; the totals count a tied tensor once.
        The entries not written are listed under the table (``skipped``).
        """
        head = (
            "tensor",
            "shape",
            "method",
            "original B",
            "stored B",
            "ratio",
            "rel. error",
            "max abs error",
        )
        rows = [
            (
                t.name,
                "×".join(map(str, t.shape)) or "scalar",
                t.method,
                f"{t.original_bytes:,}",
                f"{t.stored_bytes:,}",
                f"{t.ratio:.2f}" if t.alias_of is None else "-",
                f"{t.rel_error:.3g}" if t.alias_of is None else "-",
                f"{t.max_abs_error:.3g}" if t.alias_of is None else "-",
            )
            for t in self.tensors
        ]
        aliases = sum(t.alias_of is not None for t in self.tensors)
        compressed = sum(t.method != "raw" and t.alias_of is None for t in self.tensors)
        tied = f", {aliases} aliases counted once" if aliases else ""
        rows.append(
            (
                f"total ({compressed} of {len(self.tensors)} compressed{tied})",
                "",
                "",
                f"{self.original_bytes:,}",
                f"{self.stored_bytes:,}",
                f"{self.ratio:.2f}",
                "",
                "",
            )
        )
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = {3, 4, 5, 6, 7}

        def line(cells: Sequence[str]) -> str:
            padded = (
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            return "| " + " | ".join(padded) + " |"

        rule = (
            "|"
            + "|".join(
                ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
            )
            + "|"
        )
        lines = [line(head), rule, *(line(r) for r in rows)]
        lines.append("")
        lines.append(
            f"{self.destination}: {self.file_bytes:,} bytes on disk "
            f"({self.original_bytes / max(self.file_bytes, 1):.2f}× smaller), {self.seconds:.1f} s"
        )
        lines.extend(f"skipped {name}: {reason} (not written)" for name, reason in self.skipped)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def _check_options(
    prune: Any, nm: Any, clusters: Any, bits: Any, axis: Any, where: Any, progress: Any
) -> _Options:
    sparsity: float | None = None
    if prune is not None:
        if isinstance(prune, bool) or not isinstance(prune, Real):
            fail(_OP, "prune", "None or a real number in [0, 1)", prune, TypeError)
        sparsity = float(prune)
        if not 0.0 <= sparsity < 1.0:  # also NaN
            fail(_OP, "prune", "None or a real number in [0, 1)", prune)
    pair: tuple[int, int] | None = None
    if nm is not None:
        if isinstance(nm, str):
            pair = _parse_nm(nm)
        elif (
            isinstance(nm, (tuple, list))
            and len(nm) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in nm)
        ):
            pair = (int(nm[0]), int(nm[1]))
        else:
            fail(_OP, "nm", "None, 'N:M' or a pair of ints (n, m)", nm, TypeError)
        assert pair is not None
        if not 1 <= pair[0] <= pair[1]:
            fail(_OP, "nm", "N:M with 1 <= N <= M", f"{pair[0]}:{pair[1]}")
    if sparsity is not None and pair is not None:
        fail(_OP, "prune, nm", "not both given (magnitude or N:M pruning)", (prune, nm))
    for name, value, low, high in (("clusters", clusters, 1, MAX_K), ("bits", bits, 2, 16)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            fail(_OP, name, f"None or an int in [{low}, {high}]", value, TypeError)
        if not low <= value <= high:
            fail(_OP, name, f"an int in [{low}, {high}]", value)
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
        fail(_OP, "axis", "None or an int", axis, TypeError)
    if where is not None and not isinstance(where, str):
        fail(_OP, "where", "None or a glob (str)", where, TypeError)
    if not isinstance(progress, bool):
        fail(_OP, "progress", "a bool", progress, TypeError)
    if sparsity is None and pair is None and clusters is None and bits is None:
        fail(_OP, "prune, nm, clusters, bits", "given, at least one of them", "none")
    return _Options(sparsity, pair, clusters, bits, axis)


def _parse_nm(text: str) -> tuple[int, int]:
    n, sep, m = text.partition(":")
    if not sep or not n.strip().isdigit() or not m.strip().isdigit():
        fail(_OP, "nm", "'N:M' with ints N and M, such as '2:4'", text)
    return int(n), int(m)


def _nm_dim(ndim: int) -> int:
    """N:M groups run along dim 1: the input dimension of Linear and Conv weights."""
    return 1 if ndim >= 2 else 0


def _check_tensor(name: str, shape: tuple[int, ...], opts: _Options) -> None:
    """The options against one selected tensor's shape, before anything is read."""
    work = shape or (1,)
    if opts.axis is not None and not -len(shape) <= opts.axis < len(shape):
        fail(_OP, "axis", f"a dim of every selected tensor; {name!r} has shape {shape}", opts.axis)
    if opts.nm is not None:
        dim = _nm_dim(len(work))
        if work[dim] % opts.nm[1]:
            fail(
                _OP,
                "nm",
                f"N:M with M dividing dim {dim} of every selected tensor "
                f"({name!r} has shape {shape}; leave it out with where)",
                f"{opts.nm[0]}:{opts.nm[1]}",
            )
    if opts.clusters is not None:
        numel = math.prod(work)
        per = numel // work[opts.axis] if opts.axis is not None and numel else numel
        if numel and opts.clusters > per:
            where = "per channel" if opts.axis is not None else "in it"
            fail(
                _OP,
                "clusters",
                f"at most the number of values {where} of every selected tensor "
                f"({name!r} has {per})",
                opts.clusters,
            )


def _spans(shape: tuple[int, ...], multiple: int = 8) -> list[tuple[int, int]]:
    """Row ranges along dim 0 of about :data:`_CHUNK` elements each.

    The rows per span are a multiple of ``multiple`` (8: every span then
    starts on a whole byte of the 1-bit mask).
    """
    rows = shape[0]
    row = math.prod(shape[1:])
    step = max(1, _CHUNK // max(row, 1))
    step = -(-step // multiple) * multiple
    return [(i, min(i + step, rows)) for i in range(0, rows, step)]


def _rows(p: Tensor, i: int, j: int) -> Tensor:
    """Rows ``i:j`` of a per-channel parameter, or the parameter when it is shared by all rows."""
    return p if p.ndim == 0 or p.shape[0] == 1 else p[i:j]


def _pack_mask(mask: Tensor) -> Tensor:
    return pack_bits(mask.reshape(-1), 1)


def _unpack_mask(packed: Tensor, start: int, count: int) -> Tensor:
    """Mask bits ``start:start + count`` (``start`` a multiple of 8) as a bool tensor."""
    first = start // 8
    data = packed[first : first + -(-count // 8)]
    if data.numel() * 8 < count:
        raise ValueError("the mask is shorter than the tensor")
    return unpack_bits(data, 1, count).bool()


def _packed_length(bits: int, count: int) -> int:
    return -(-count * bits // 8) if bits <= 8 else count


def _unpack_range(packed: Tensor, bits: int, start: int, count: int) -> Tensor:
    """Values ``start:start + count`` of a :func:`pack_bits` stream, as int32."""
    if bits > 8:
        return unpack_bits(packed[start : start + count], bits, count)
    # Unpack from the last element before ``start`` that begins a whole byte.
    lead = start % 8
    first = (start - lead) * bits // 8
    values = unpack_bits(
        packed[first : first + _packed_length(bits, lead + count)], bits, lead + count
    )
    return values[lead:]


def _encode(x: Tensor, spec: _Spec, opts: _Options) -> tuple[dict[str, Tensor], _Spec]:
    """The stored parts of ``x`` (the tensor in its work shape) and its completed spec."""
    spans = _spans(tuple(x.shape))
    axis = None if opts.axis is None else opts.axis % x.ndim
    if not all(bool(torch.isfinite(x[i:j]).all()) for i, j in spans):
        raise ValueError(
            f"{_OP}: tensor {spec.name!r} has NaN or inf values; leave it out with where"
        )
    parts: dict[str, Tensor] = {}
    mask: Tensor | None = None
    if opts.sparsity is not None:
        mask = magnitude_mask(x, opts.sparsity)
    elif opts.nm is not None:
        n, m = opts.nm
        dim = _nm_dim(x.ndim)
        # Groups lie within a row (dim 1), or within a span of m·8 elements
        # of a 1-D tensor, so masking span by span is masking the whole.
        mask = (
            torch.cat([nm_mask(x[i:j], n, m, dim=dim) for i, j in _spans(tuple(x.shape), 8 * m)])
            if x.numel()
            else torch.ones_like(x, dtype=torch.bool)
        )
    kept = x.numel() if mask is None else int(mask.count_nonzero())
    if mask is not None:
        parts["mask"] = _pack_mask(mask)
    # Pruned weights are zeros of the tensor being coded, which both codings
    # keep exactly (preserve_zero), so the mask alone restores them.
    if opts.clusters is not None:
        source = x if mask is None else torch.where(mask, x, 0)
        codebook, indices = kmeans(source, opts.clusters, axis=axis, preserve_zero=mask is not None)
        del source
        flat = indices.reshape(-1)
        parts["indices"] = pack_bits(
            flat if mask is None else flat[mask.reshape(-1)], index_bits(opts.clusters)
        )
        del indices, flat
        if opts.bits is None:
            parts["codebook"] = codebook.contiguous()
        else:
            rows = None if codebook.ndim == 1 else 0
            coded = QuantizedTensor.from_float(codebook, opts.bits, axis=rows)
            parts.update(coded.state_dict(prefix="codebook" + _SEP))
    elif opts.bits is not None:
        scale, zero_point = _params(x, mask, opts.bits, axis, spans)
        small = torch.uint8 if opts.bits <= 8 else torch.int32
        codes = []
        for i, j in spans:
            block = x[i:j] if mask is None else torch.where(mask[i:j], x[i:j], 0)
            q = quantize(
                block, _rows(scale, i, j), _rows(zero_point, i, j), bits=opts.bits, axis=axis
            )
            codes.append((q if mask is None else q[mask[i:j]]).reshape(-1).to(small))
        parts["codes"] = pack_bits(torch.cat(codes), opts.bits)
        del codes
        parts["scale"] = scale.contiguous()
        parts["zero_point"] = zero_point.to(zero_point_dtype(opts.bits, False, True)).contiguous()
    else:
        assert mask is not None
        parts["values"] = x.reshape(-1)[mask.reshape(-1)]
    full = _Spec(
        name=spec.name,
        method="compressed",
        dtype=spec.dtype,
        shape=spec.shape,
        prefix=spec.name + _SEP,
        keys=tuple(parts),
        sparsity=opts.sparsity,
        nm=opts.nm,
        nm_dim=None if opts.nm is None else _nm_dim(x.ndim),
        kept=kept,
        bits=opts.bits if opts.clusters is None else None,
        axis=axis,
        clusters=opts.clusters,
        codebook_bits=opts.bits if opts.clusters is not None else None,
    )
    return parts, full


def _params(
    x: Tensor, mask: Tensor | None, bits: int, axis: int | None, spans: list[tuple[int, int]]
) -> tuple[Tensor, Tensor]:
    """:func:`quantize_params` of ``x`` with its pruned weights zeroed, span by span.

    Min-max parameters depend on the minimum and the maximum only (per
    tensor, or per channel along ``axis``), so they are those of the small
    tensor of those extremes, found here span by span: no masked copy of
    the weight is made.
    """
    keep = [d for d in range(x.ndim) if d != axis] if axis is not None else list(range(x.ndim))
    lows, highs = [], []
    for i, j in spans:
        block = x[i:j] if mask is None else torch.where(mask[i:j], x[i:j], 0)
        if axis is None:
            low, high = torch.aminmax(block)
            lows.append(low.reshape(1))
            highs.append(high.reshape(1))
        else:
            lows.append(torch.amin(block, dim=keep) if keep else block.clone())
            highs.append(torch.amax(block, dim=keep) if keep else block.clone())
    if axis == 0:
        low, high = torch.cat(lows), torch.cat(highs)
    else:
        low = torch.stack(lows).amin(dim=0)
        high = torch.stack(highs).amax(dim=0)
    extremes = torch.stack([low, high], dim=-1)
    scale, zero_point = quantize_params(extremes, bits, axis=None if axis is None else 0)
    shape = [n if d == axis else 1 for d, n in enumerate(x.shape)]
    return scale.reshape(shape), zero_point.reshape(shape)


def _need(spec: _Spec, parts: Mapping[str, Tensor], key: str, dtype: torch.dtype) -> Tensor:
    value = parts.get(key)
    if not isinstance(value, Tensor) or value.dtype != dtype:
        got = value.dtype if isinstance(value, Tensor) else "missing"
        raise ValueError(f"tensor {spec.name!r}: part {key!r} must be {dtype}, got {got}")
    return value


def _decode(spec: _Spec, parts: Mapping[str, Tensor]) -> Iterator[tuple[int, int, Tensor]]:
    """The tensor rebuilt span by span: ``(i, j, rows i:j)`` in its work shape and dtype."""
    dtype = _DTYPE_NAMES[spec.dtype]
    shape = spec.work_shape
    numel = math.prod(shape)
    row = math.prod(shape[1:])
    mask_packed = _need(spec, parts, "mask", torch.uint8) if spec.pruned else None
    if mask_packed is not None and mask_packed.numel() != -(-numel // 8):
        raise ValueError(f"tensor {spec.name!r}: the mask does not fit the shape {spec.shape}")
    stream: Tensor | None = None
    bits = 0
    codebook: Tensor | None = None
    values: Tensor | None = None
    scale = zero_point = torch.zeros(())
    if spec.clusters is not None:
        bits = index_bits(spec.clusters)
        stream = _need(spec, parts, "indices", torch.uint8 if bits <= 8 else torch.int16)
        if spec.codebook_bits is None:
            codebook = _need(spec, parts, "codebook", dtype)
        else:
            codebook = QuantizedTensor.from_state_dict(parts, prefix="codebook" + _SEP).dequantize()
        expected = (spec.clusters,) if spec.axis is None else (shape[spec.axis], spec.clusters)
        if tuple(codebook.shape) != expected or codebook.dtype != dtype:
            raise ValueError(
                f"tensor {spec.name!r}: the codebook is not {dtype} of shape {expected}"
            )
    elif spec.bits is not None:
        bits = spec.bits
        stream = _need(spec, parts, "codes", torch.uint8 if bits <= 8 else torch.int16)
        scale = _need(spec, parts, "scale", torch.float32)
        zero_point = _need(spec, parts, "zero_point", zero_point_dtype(bits, False, True))
        params = tuple(n if d == spec.axis else 1 for d, n in enumerate(shape))
        if tuple(scale.shape) != params or tuple(zero_point.shape) != params:
            raise ValueError(f"tensor {spec.name!r}: scale and zero point must have shape {params}")
        zero_point = zero_point.to(torch.int32)
    else:
        values = _need(spec, parts, "values", dtype)
        if values.numel() != spec.kept:
            raise ValueError(f"tensor {spec.name!r}: {values.numel()} values for {spec.kept} kept")
    if stream is not None and stream.numel() != _packed_length(bits, spec.kept):
        raise ValueError(f"tensor {spec.name!r}: the codes do not fit {spec.kept} values")
    offset = 0
    for i, j in _spans(shape):
        block_shape = (j - i, *shape[1:])
        mask = None
        count = (j - i) * row
        if mask_packed is not None:
            mask = _unpack_mask(mask_packed, i * row, count).view(block_shape)
            count = int(mask.count_nonzero())
        if offset + count > spec.kept:
            raise ValueError(f"tensor {spec.name!r}: the mask keeps more than {spec.kept} values")
        if stream is None:
            assert mask is not None and values is not None
            out = torch.zeros(block_shape, dtype=dtype)
            out[mask] = values[offset : offset + count]
        else:
            kept = _unpack_range(stream, bits, offset, count)
            if mask is None:
                codes = kept.view(block_shape)
            else:
                codes = torch.zeros(block_shape, dtype=torch.int32)
                codes[mask] = kept
            if codebook is not None:
                out = _gather(codebook, codes, spec.axis, i, j, spec.clusters or 0)
            else:
                out = dequantize(codes, _rows(scale, i, j), _rows(zero_point, i, j), dtype=dtype)
            if mask is not None:
                out = torch.where(mask, out, torch.zeros((), dtype=dtype))
        offset += count
        yield i, j, out
    if offset != spec.kept:
        raise ValueError(f"tensor {spec.name!r}: the mask keeps {offset} values, not {spec.kept}")


def _gather(codebook: Tensor, index: Tensor, axis: int | None, i: int, j: int, k: int) -> Tensor:
    """``codebook[index]``, per channel along ``axis`` for rows ``i:j`` of the tensor."""
    if index.numel() and int(index.max()) >= k:
        raise ValueError(f"an index is out of the codebook's range [0, {k})")
    if axis is None:
        return codebook[index.long()]
    rows = codebook[i:j] if axis == 0 else codebook
    moved = index.movedim(axis, 0).long()
    channel = torch.arange(moved.shape[0]).view(-1, *[1] * (moved.ndim - 1))
    return rows[channel, moved].movedim(0, axis)


def _errors(x: Tensor, blocks: Iterator[tuple[int, int, Tensor]]) -> tuple[float, float]:
    """(relative Frobenius error, max abs error) of the decoded blocks against ``x``, in float64."""
    err = ref = peak = 0.0
    for i, j, out in blocks:
        want = x[i:j].to(torch.float64, copy=True)
        diff = out.to(torch.float64, copy=True).sub_(want)
        err += float(diff.square_().sum())
        if diff.numel():
            peak = max(peak, math.sqrt(float(diff.max())))
        ref += float(want.square_().sum())
    if ref == 0.0:
        return (0.0 if err == 0.0 else math.inf), peak
    return math.sqrt(err / ref), peak


def _describe(spec: _Spec) -> str:
    steps = []
    if spec.sparsity is not None:
        steps.append(f"prune {spec.sparsity:g}")
    if spec.nm is not None:
        steps.append(f"{spec.nm[0]}:{spec.nm[1]}")
    if spec.clusters is not None:
        cb = "" if spec.codebook_bits is None else f" (codebook q{spec.codebook_bits})"
        steps.append(f"k{spec.clusters}{cb}")
    if spec.bits is not None:
        steps.append(f"q{spec.bits}")
    if spec.axis is not None:
        steps.append(f"axis {spec.axis}")
    return " + ".join(steps)


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def compress_checkpoint(
    src: PathLike,
    dst: PathLike,
    *,
    prune: float | None = None,
    nm: tuple[int, int] | str | None = None,
    clusters: int | None = None,
    bits: int | None = None,
    axis: int | None = None,
    where: str | None = None,
    progress: bool = False,
) -> CompressSummary:
    """Compress a checkpoint tensor by tensor into a safetensors file of compact forms.

    Every selected tensor is pruned (``prune`` or ``nm``), then clustered
    (``clusters``) or quantized (``bits``), and stored in compact form (see
    the module docstring); the others are stored verbatim. With both
    ``clusters`` and ``bits`` the codebook is quantized to ``bits`` bits
    (the indices take ``ceil(log2 k)`` bits). A tensor tied to an earlier
    one (:meth:`~weightops.checkpoint.Checkpoint.aliases`) is stored once,
    as that tensor, and compressed when any name of the two is selected.
    Sparse tensors and non-tensor entries are not written; the summary
    lists them as skipped. The output is written
    atomically: ``dst`` is replaced only once the whole file is written.
    Memory: about a few times the largest tensor (the tensor, its mask,
    spans of ~1M elements of temporaries); k-means needs more, some
    40 bytes per element of the tensor it clusters.

    Args:
        src: a safetensors or PyTorch (``torch.save``) state dict.
        dst: the file to write; never ``src``.
        prune: magnitude pruning, the fraction of each tensor's weights
            zeroed, in ``[0, 1)`` (:func:`~weightops.functional.magnitude_mask`).
        nm: N:M structured pruning, ``(n, m)`` or ``"N:M"`` with
            ``1 <= n <= m``: ``n`` kept of every ``m`` along dim 1 (the input
            dimension of Linear and Conv weights; dim 0 of a 1-D tensor).
        clusters: k-means weight sharing with ``k`` centroids, in ``[1, 65536]``
            (:func:`~weightops.functional.kmeans`, one codebook per tensor or
            per channel along ``axis``).
        bits: min-max quantization to ``bits`` bits, in ``[2, 16]``
            (asymmetric, zero exact); with ``clusters``, of the codebook.
        axis: ``None`` for one scale (codebook) per tensor, or the dim along
            which each channel gets its own.
        where: a glob (``fnmatch``, case-sensitive) on tensor names choosing
            the floating-point tensors to compress; default: every
            floating-point tensor with at least 2 dimensions. A tied group
            is compressed when any of its names matches.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`CompressSummary`.

    Raises:
        FileNotFoundError: ``src`` or ``dst``'s directory does not exist.
        ValueError: ``src`` is not a checkpoint, ``dst`` is ``src``, an
            option is out of range, ``where`` matches no floating-point
            tensor, an option does not fit a selected tensor's shape, or a
            selected tensor holds NaN or inf. Nothing is written then.
        TypeError: an option of the wrong type.
    """
    opts = _check_options(prune, nm, clusters, bits, axis, where, progress)
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"{_OP}: {src}: no such file")
    if dst.is_dir():
        fail(_OP, "dst", "a file path, not a directory", str(dst))
    if src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        fail(_OP, "dst", "a file other than src (the input is never overwritten)", str(dst))
    if not dst.resolve().parent.is_dir():
        raise FileNotFoundError(f"{_OP}: {dst.parent}: no such directory for dst")
    with open_checkpoint(src) as checkpoint:
        names = checkpoint.names()
        floating = {n for n in names if checkpoint.info(n)[1] in FLOAT_DTYPES}
        if where is None:
            chosen = {n for n in floating if len(checkpoint.info(n)[0]) >= 2}
            if not chosen:
                fail(_OP, "src", "a checkpoint with floating-point tensors of >= 2 dims", str(src))
        else:
            matched = {n for n in names if fnmatch.fnmatchcase(n, where)}
            if not matched:
                fail(_OP, "where", f"a glob matching a tensor name of {src}", where)
            chosen = matched & floating
            if not chosen:
                fail(_OP, "where", "a glob matching a floating-point tensor", where)
        aliases = checkpoint.aliases()
        chosen |= {aliases[n] for n in chosen if n in aliases}
        chosen -= set(aliases)
        for name in names:
            if name in chosen:
                _check_tensor(name, checkpoint.info(name)[0], opts)
        for name in names:
            # A stored part NAME::key must not collide with another tensor's name.
            cut = name.find(_SEP)
            while cut >= 0:
                if name[:cut] in chosen:
                    fail(_OP, "src", f"tensor names that do not extend another's by {_SEP!r}", name)
                cut = name.find(_SEP, cut + 1)
        metadata = {
            "format": "pt",
            _FORMAT_KEY: "compressed",
            _VERSION_KEY: str(FORMAT_VERSION),
        }
        if checkpoint.metadata:
            metadata[_SOURCE_KEY] = json.dumps(checkpoint.metadata)
        rows: list[TensorSummary] = []
        index = {name: i for i, name in enumerate(names)}
        specs: list[dict[str, Any]] = []
        with SafetensorsWriter(dst, metadata) as writer:
            for name in _progress(names, desc="compress", enable=progress):
                shape, dtype = checkpoint.info(name)
                dtype_name = str(dtype).removeprefix("torch.")
                if name in aliases:
                    # Tied: stored once, under the first name (already written).
                    of = aliases[name]
                    specs.append(_Spec(name, "alias", of=of).to_json())
                    row = rows[index[of]]
                    rows.append(
                        TensorSummary(
                            name,
                            shape,
                            dtype_name,
                            f"alias of {of}",
                            checkpoint.nbytes(name),
                            0,
                            row.rel_error,
                            row.max_abs_error,
                            alias_of=of,
                        )
                    )
                    continue
                tensor = checkpoint.get(name)
                original = _nbytes(tensor)
                if name not in chosen or tensor.numel() == 0:
                    writer.add(name, tensor)
                    specs.append(_Spec(name, "raw").to_json())
                    rows.append(
                        TensorSummary(name, shape, dtype_name, "raw", original, original, 0.0, 0.0)
                    )
                    del tensor
                    continue
                spec = _Spec(name, "compressed", dtype=dtype_name, shape=shape)
                x = tensor.reshape(spec.work_shape)
                del tensor
                parts, spec = _encode(x, spec, opts)
                for key, part in parts.items():
                    writer.add(spec.prefix + key, part)
                rel, peak = _errors(x, _decode(spec, parts))
                stored = sum(_nbytes(p) for p in parts.values())
                specs.append(spec.to_json())
                rows.append(
                    TensorSummary(
                        name, shape, dtype_name, _describe(spec), original, stored, rel, peak
                    )
                )
                del x, parts
            writer.metadata[_TENSORS_KEY] = json.dumps(specs, separators=(",", ":"))
        skipped = tuple(checkpoint.skipped())
    return CompressSummary(
        source=src,
        destination=dst,
        tensors=tuple(rows),
        file_bytes=dst.stat().st_size,
        seconds=time.perf_counter() - start,
        skipped=skipped,
    )


def load_compressed(path: PathLike) -> dict[str, Tensor]:
    """The float state dict of a file written by :func:`compress_checkpoint`.

    Each compressed tensor is rebuilt in its original dtype and shape
    (pruned weights 0, the others their dequantized or codebook values);
    verbatim tensors are returned as stored. Read tensor by tensor. A tied
    tensor (an ``"alias"`` entry) is the same tensor object as the one it
    is tied to, as ``torch.load`` of the original returns it: an in-place
    change to one shows in the other.

    Args:
        path: a file written by ``weightops compress``.

    Returns:
        ``{name: tensor}`` on the CPU, in the original checkpoint's order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a safetensors file with weightops
            compression metadata of a known version, or its parts are
            malformed.
    """
    with open_checkpoint(path) as checkpoint:
        metadata = checkpoint.metadata
        if metadata.get(_FORMAT_KEY) != "compressed":
            raise ValueError(
                f"load_compressed: {path} has no {_FORMAT_KEY!r} metadata (not written by "
                "weightops compress)"
            )
        if metadata.get(_VERSION_KEY) != str(FORMAT_VERSION):
            raise ValueError(
                f"load_compressed: {path} has format version {metadata.get(_VERSION_KEY)!r}; "
                f"this weightops reads version {FORMAT_VERSION}"
            )
        try:
            entries = json.loads(metadata.get(_TENSORS_KEY, ""))
            if not isinstance(entries, list):
                raise ValueError("weightops.tensors is not a list")
            specs = [_Spec.from_json(entry) for entry in entries]
        except ValueError as error:
            raise ValueError(f"load_compressed: {path}: {error}") from None
        out: dict[str, Tensor] = {}
        for spec in specs:
            try:
                if spec.method == "raw":
                    out[spec.name] = checkpoint.get(spec.name)
                    continue
                if spec.method == "alias":
                    if spec.of not in out:
                        raise ValueError(f"an alias of {spec.of!r}, not an earlier tensor")
                    out[spec.name] = out[spec.of]
                    continue
                parts = {key: checkpoint.get(spec.prefix + key) for key in spec.keys}
                result = torch.empty(spec.work_shape, dtype=_DTYPE_NAMES[spec.dtype])
                for i, j, block in _decode(spec, parts):
                    result[i:j] = block
                out[spec.name] = result.reshape(spec.shape)
            except (KeyError, ValueError, RuntimeError, IndexError) as error:
                raise ValueError(
                    f"load_compressed: {path}: tensor {spec.name!r}: {error}"
                ) from None
    return out


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _axis(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'none' or an int, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="weightops compress",
        description=(
            "Prune, cluster and/or quantize a .safetensors/.pt state dict tensor by tensor "
            "into a compact safetensors file (weightops.load_compressed reads it back). "
            "Default selection: floating-point tensors with >= 2 dims."
        ),
    )
    parser.add_argument("input", metavar="IN", help="the checkpoint (.safetensors, .pt, .bin)")
    parser.add_argument("output", metavar="OUT", help="the compressed .safetensors file")
    parser.add_argument(
        "--prune", type=float, metavar="S", help="magnitude pruning, fraction in [0, 1)"
    )
    parser.add_argument("--nm", metavar="N:M", help="N:M pruning along dim 1, e.g. 2:4")
    parser.add_argument(
        "--clusters", type=int, metavar="K", help="k-means weight sharing, K centroids"
    )
    parser.add_argument(
        "--bits",
        type=int,
        metavar="B",
        help="quantize to B bits in [2, 16] (the codebook with --clusters)",
    )
    parser.add_argument(
        "--axis",
        type=_axis,
        default=None,
        metavar="none|DIM",
        help="per-channel along DIM (default none)",
    )
    parser.add_argument(
        "--where", metavar="GLOB", help="compress the tensors whose names match GLOB"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``weightops compress IN OUT [options]``; returns the exit status.

    0 on success (the table printed on stdout), 2 for bad input (one line on
    stderr, nothing written), 1 when writing fails, 130 when interrupted.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(args_list)
    except _UsageError as error:
        print(f"weightops compress: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as done:  # --help
        return int(done.code or 0)
    try:
        summary = compress_checkpoint(
            args.input,
            args.output,
            prune=args.prune,
            nm=args.nm,
            clusters=args.clusters,
            bits=args.bits,
            axis=args.axis,
            where=args.where,
            progress=not args.quiet and sys.stderr.isatty(),
        )
    except (FileNotFoundError, ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        print(f"weightops compress: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"weightops compress: error: writing {args.output} failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"weightops compress: interrupted; {args.output} was not written", file=sys.stderr)
        return 130
    if not args.quiet:
        print(summary.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
