"""Compact storage of quantized weights: bit packing and :class:`QuantizedTensor`.

:func:`pack_bits` stores unsigned integers of ``bits`` bits densely:

* ``bits`` 1 to 7: a little-endian bitstream of ``uint8``: element ``i``
  occupies stream bits ``[i·b, (i+1)·b)``, least significant bit first, and
  stream bit ``k`` is bit ``k mod 8`` of byte ``⌊k/8⌋`` (``np.packbits`` with
  ``bitorder="little"`` of the values' bits, least significant first). So 4
  bits hold two codes a byte (the first in the low nibble), 3 bits hold 8
  codes in 3 bytes, and 1 bit is a mask at 1/8 byte an element;
  ``⌈n·b/8⌉`` bytes, the unused high bits of the last byte zero;
* ``bits`` 8: one ``uint8`` an element;
* ``bits`` 9 to 16: the ``int16`` bit pattern of each value (values
  ``≥ 2^15`` read as negative ``int16``); ``2n`` bytes.

:class:`QuantizedTensor` is the compact form of a min-max quantized weight
(:func:`weightops.functional.quantize`): its unsigned codes ``q − q_min``
packed as above, the float32 scales and the zero points, plus the
configuration needed to turn them back into the codes and into the values
of :func:`weightops.functional.fake_quantize`, bit for bit.
:func:`save_quantized` / :func:`load_quantized` write and read them, with
plain tensors, in ``.safetensors`` files (the ``io`` extra).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from weightops._checks import check_weight, fail
from weightops.functional.quantization import (
    QuantParams,
    check_quantization,
    code_range,
    dequantize,
    quantize,
    quantize_params,
)

__all__ = [
    "ClusteredTensor",
    "QuantizedTensor",
    "index_bits",
    "load_quantized",
    "pack_bits",
    "save_quantized",
    "unpack_bits",
    "zero_point_dtype",
]

#: Elements per step of packing and unpacking: the temporaries (int64 words
#: of 8 codes, one shifted column at a time, the padded tail) then take a few
#: MB whatever the input's size, instead of several bytes per element of it.
_CHUNK = 1 << 20

_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

#: Version of the ``qformat`` layout written by :meth:`QuantizedTensor.state_dict`.
QFORMAT_VERSION = 1
#: Entries of ``qformat`` before the shape.
_HEADER = 7
#: Dtype codes in ``qformat``; append only, never renumber.
_DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: 0,
    torch.float64: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
}
_SYMMETRIC, _PRESERVE_ZERO = 1, 2
_KEYS = ("codes", "scale", "zero_point", "qformat")
#: safetensors metadata naming the quantized tensors of a file.
_META_KEY = "weightops.quantized"


def _check_bits(op: str, bits: Any, low: int = 1) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        fail(op, "bits", f"an int in [{low}, 16]", bits, TypeError)
    if not low <= bits <= 16:
        fail(op, "bits", f"an int in [{low}, 16]", bits)
    return int(bits)


def _layout(bits: int) -> tuple[int, int]:
    """(codes per word, bytes per word) of the bitstream for ``bits`` in 1..7.

    A width dividing 8 packs ``8/b`` codes into each byte; any other packs 8
    codes into ``b`` bytes through an int64 word (8·7 = 56 bits fit).
    """
    return (8 // bits, 1) if 8 % bits == 0 else (8, bits)


def _packed_numel(bits: int, numel: int) -> int:
    """Elements of :func:`pack_bits`'s result for ``numel`` values."""
    return (numel * bits + 7) // 8 if bits <= 8 else numel


def _packed_dtype(bits: int) -> torch.dtype:
    return torch.uint8 if bits <= 8 else torch.int16


def _pack_words(chunk: Tensor, bits: int, out: Tensor) -> None:
    """Pack a 1-D chunk (its length a multiple of 8 or the last one) into ``out``."""
    per_word, word_bytes = _layout(bits)
    pad = -chunk.numel() % per_word
    if pad:
        chunk = torch.cat([chunk, chunk.new_zeros(pad)])
    columns = chunk.reshape(-1, per_word)
    wide = torch.uint8 if word_bytes == 1 else torch.int64
    word = columns[:, 0].to(wide, copy=True)
    for j in range(1, per_word):
        word |= columns[:, j].to(wide) << (j * bits)
    if word_bytes == 1:
        out.copy_(word[: out.numel()])
        return
    packed = torch.empty((word.numel(), word_bytes), dtype=torch.uint8, device=word.device)
    for k in range(word_bytes):
        packed[:, k] = (word >> (8 * k)) & 0xFF
    out.copy_(packed.reshape(-1)[: out.numel()])


def _unpack_words(chunk: Tensor, bits: int, out: Tensor) -> None:
    """Inverse of :func:`_pack_words`: ``out`` (int32) receives the values."""
    per_word, word_bytes = _layout(bits)
    n_words = -(-out.numel() // per_word)
    pad = n_words * word_bytes - chunk.numel()
    if pad:
        chunk = torch.cat([chunk, chunk.new_zeros(pad)])
    if word_bytes == 1:
        word = chunk.to(torch.int32)
    else:
        columns = chunk.reshape(-1, word_bytes)
        word = columns[:, 0].to(torch.int64, copy=True)
        for k in range(1, word_bytes):
            word |= columns[:, k].to(torch.int64) << (8 * k)
    whole = out.numel() == n_words * per_word
    values = (
        out.view(n_words, per_word)
        if whole
        else torch.empty((n_words, per_word), dtype=torch.int32, device=chunk.device)
    )
    mask = (1 << bits) - 1
    for j in range(per_word):
        values[:, j] = (word >> (j * bits)) & mask
    if not whole:
        out.copy_(values.reshape(-1)[: out.numel()])


def _pack(flat: Tensor, bits: int) -> Tensor:
    """:func:`pack_bits` of a 1-D integer tensor already known to be in range."""
    numel = flat.numel()
    out = torch.empty(_packed_numel(bits, numel), dtype=_packed_dtype(bits), device=flat.device)
    for start in range(0, numel, _CHUNK):
        chunk = flat[start : start + _CHUNK]
        if bits < 8:
            first = start * bits // 8  # _CHUNK is a multiple of 8: a whole byte
            _pack_words(chunk, bits, out[first : first + _packed_numel(bits, chunk.numel())])
        elif bits == 8:
            out[start : start + chunk.numel()] = chunk
        else:
            # The int16 of the value's low 16 bits: v for v < 2^15, v − 2^16 above.
            out[start : start + chunk.numel()] = (chunk.to(torch.int32) ^ 0x8000) - 0x8000
    return out


def pack_bits(values: Tensor, bits: int) -> Tensor:
    """Store unsigned integers in ``[0, 2^bits)`` densely (layout: module docstring).

    Args:
        values: an integer (or bool) tensor of any shape, on any device,
            every element in ``[0, 2^bits)``; read in row-major order.
        bits: 1 to 16.

    Returns:
        A 1-D tensor on ``values``' device: ``uint8`` of ``⌈n·bits/8⌉``
        elements for ``bits ≤ 8``, ``int16`` of ``n`` elements above.
        Vectorized, in chunks of ``2^20`` elements so that temporaries stay
        small whatever the input's size.

    Raises:
        TypeError: ``values`` is not an integer or bool tensor; ``bits`` not an int.
        ValueError: ``bits`` outside 1..16, or a value outside ``[0, 2^bits)``
            (checked with one min/max reduction, a host sync on a GPU).

    >>> pack_bits(torch.tensor([1, 2, 15]), 4)
    tensor([33, 15], dtype=torch.uint8)
    >>> pack_bits(torch.tensor([True, False, True]), 1)
    tensor([5], dtype=torch.uint8)
    """
    op = "pack_bits"
    if not isinstance(values, Tensor) or values.dtype not in _INTEGER_DTYPES:
        got = values.dtype if isinstance(values, Tensor) else type(values).__name__
        fail(op, "values", "a bool or integer tensor", got, TypeError)
    bits = _check_bits(op, bits)
    flat = values.reshape(-1)
    if flat.numel() and flat.dtype != torch.bool:
        low, high = torch.aminmax(flat)
        if int(low) < 0 or int(high) >= 1 << bits:
            fail(op, "values", f"in [0, 2^{bits})", f"values in [{int(low)}, {int(high)}]")
    return _pack(flat, bits)


def unpack_bits(packed: Tensor, bits: int, numel: int) -> Tensor:
    """The ``numel`` values that :func:`pack_bits` stored in ``packed``.

    Args:
        packed: :func:`pack_bits`'s result: ``uint8`` for ``bits ≤ 8``,
            ``int16`` above, with exactly as many elements as it returns
            for ``numel`` values (any shape; read in row-major order).
        bits: 1 to 16, as given to :func:`pack_bits`.
        numel: the number of values packed.

    Returns:
        A 1-D ``int32`` tensor of ``numel`` values in ``[0, 2^bits)``, on
        ``packed``'s device.

    Raises:
        TypeError: ``packed`` is not a tensor of the dtype for ``bits``;
            ``bits`` or ``numel`` not an int.
        ValueError: ``bits`` outside 1..16, ``numel`` negative, or
            ``packed`` of the wrong length.

    >>> unpack_bits(torch.tensor([33, 15], dtype=torch.uint8), 4, 3)
    tensor([ 1,  2, 15], dtype=torch.int32)
    """
    op = "unpack_bits"
    bits = _check_bits(op, bits)
    if isinstance(numel, bool) or not isinstance(numel, int):
        fail(op, "numel", "an int >= 0", numel, TypeError)
    if numel < 0:
        fail(op, "numel", "an int >= 0", numel)
    dtype = _packed_dtype(bits)
    if not isinstance(packed, Tensor) or packed.dtype != dtype:
        got = packed.dtype if isinstance(packed, Tensor) else type(packed).__name__
        fail(op, "packed", f"a {dtype} tensor for bits={bits}", got, TypeError)
    length = _packed_numel(bits, numel)
    if packed.numel() != length:
        fail(op, "packed", f"{length} elements for {numel} values of {bits} bits", packed.numel())
    flat = packed.reshape(-1)
    out = torch.empty(numel, dtype=torch.int32, device=packed.device)
    for start in range(0, numel, _CHUNK):
        part = out[start : start + _CHUNK]
        if bits < 8:
            first = start * bits // 8
            _unpack_words(flat[first : first + _packed_numel(bits, part.numel())], bits, part)
        elif bits == 8:
            part.copy_(flat[start : start + part.numel()])
        else:
            # Masked to ``bits``: a corrupt pattern cannot give a value out of range.
            part.copy_(flat[start : start + part.numel()].to(torch.int32) & ((1 << bits) - 1))
    return out


def zero_point_dtype(bits: int, symmetric: bool, preserve_zero: bool) -> torch.dtype:
    """The smallest well-supported dtype holding every zero point of the configuration.

    Zero points lie in ``[q_min, q_max]``. ``uint16`` (for asymmetric codes of
    9 to 16 bits) is not used: it is a storage-only dtype in torch (no
    ``aminmax``, no arithmetic on every backend) and not every safetensors
    reader knows it; ``int32`` costs 2 more bytes per group.
    """
    if not preserve_zero:
        return torch.float32
    if symmetric:
        return torch.int8 if bits <= 8 else torch.int16
    return torch.uint8 if bits <= 8 else torch.int32


def _params_shape(shape: tuple[int, ...], axis: int | None, group_size: int | None) -> list[int]:
    """Shape of the scale and zero point that :func:`quantize_params` returns."""
    if group_size is not None:
        return [*shape[:-1], shape[-1] // group_size, 1]
    if axis is None:
        return [1] * len(shape)
    return [n if d == axis else 1 for d, n in enumerate(shape)]


class QuantizedTensor:
    """A min-max quantized weight in compact form: packed codes, scales, zero points.

    Holds the unsigned codes ``u = q − q_min`` (``q`` as returned by
    :func:`weightops.functional.quantize`) packed by :func:`pack_bits`, the
    float32 ``scale``, the ``zero_point`` (with ``preserve_zero``: an integer
    in ``uint8`` for asymmetric codes of up to 8 bits, ``int32`` for 9 to 16
    bits, ``int8``/``int16`` for symmetric codes; without it the float32
    ``w_min``) and the configuration: shape and dtype of the original weight,
    ``bits``, ``symmetric``, ``axis``, ``group_size``, ``preserve_zero``.

    :meth:`dequantize` equals :func:`weightops.functional.fake_quantize` of the
    original weight with the same settings bit for bit, in the weight's dtype,
    and re-quantizing its values with :meth:`params` gives the same codes
    (tested for every ``bits``, mode and granularity). For float16 and
    bfloat16 weights that holds for the float32 values
    (``dequantize(torch.float32)``), and, as tested, for the values rounded
    to the half dtype too: the weight itself is a half value of that code,
    and rounding to the nearest half value lands no farther from the float32
    value than it. That second fact is observed (by the tests and a search
    of about 40 000 random cases), not proven, since quantize rounds a float32
    product. It needs the weight to be half: a float32 weight's values
    rounded to a half dtype (``dequantize(torch.bfloat16)``) do not
    re-quantize to their codes in general.

    The constructor takes the parts as they are stored (see
    :meth:`from_state_dict`) and checks their dtypes and shapes;
    :meth:`from_float` is the usual way in.

    Unlike torch's quantized tensors (``torch.quantize_per_tensor``), this is
    not a tensor subclass and has no arithmetic: it is a storage format,
    of 2 to 16 bits, per group as well as per tensor and per channel.

    >>> w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    >>> qt = QuantizedTensor.from_float(w, 2)
    >>> qt.codes()
    tensor([[0, 1, 1, 3]], dtype=torch.int32)
    >>> qt.dequantize()
    tensor([[-1.,  0.,  0.,  2.]])
    >>> qt.nbytes  # 1 byte of codes, a float32 scale and a uint8 zero point
    6
    """

    def __init__(
        self,
        packed: Tensor,
        scale: Tensor,
        zero_point: Tensor,
        *,
        shape: tuple[int, ...] | torch.Size,
        dtype: torch.dtype,
        bits: int,
        symmetric: bool = False,
        axis: int | None = None,
        group_size: int | None = None,
        preserve_zero: bool = True,
    ) -> None:
        op = "QuantizedTensor"
        if not isinstance(shape, (tuple, torch.Size)) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            fail(op, "shape", "a tuple of ints >= 0", shape, TypeError)
        shape = tuple(int(n) for n in shape)
        if not isinstance(dtype, torch.dtype) or dtype not in _DTYPE_CODES:
            fail(op, "dtype", "float16, bfloat16, float32 or float64", dtype, TypeError)
        # The quantization ops' own checks of bits, flags, axis and group_size
        # against the shape, asked of a meta tensor: no data, no computation.
        check_quantization(
            op, torch.empty(shape, device="meta"), bits, symmetric, axis, group_size, preserve_zero
        )
        self.shape = torch.Size(shape)
        self.dtype = dtype
        self.bits = bits
        self.symmetric = symmetric
        self.axis = None if axis is None else axis % len(shape)
        self.group_size = group_size
        self.preserve_zero = preserve_zero

        numel = math.prod(shape)
        codes_dtype = _packed_dtype(bits)
        length = _packed_numel(bits, numel)
        if not isinstance(packed, Tensor) or packed.dtype != codes_dtype:
            got = packed.dtype if isinstance(packed, Tensor) else type(packed).__name__
            fail(op, "packed", f"a {codes_dtype} tensor for bits={bits}", got, TypeError)
        if packed.shape != (length,):
            fail(op, "packed", f"of shape ({length},)", tuple(packed.shape))
        params = torch.Size(_params_shape(shape, self.axis, group_size))
        zero_dtype = zero_point_dtype(bits, symmetric, preserve_zero)
        for name, value, want in (
            ("scale", scale, torch.float32),
            ("zero_point", zero_point, zero_dtype),
        ):
            if not isinstance(value, Tensor) or value.dtype != want:
                got = value.dtype if isinstance(value, Tensor) else type(value).__name__
                fail(op, name, f"a {want} tensor", got, TypeError)
            if value.shape != params:
                fail(op, name, f"of shape {tuple(params)}", tuple(value.shape))
            if value.device != packed.device:
                fail(op, name, f"on the codes' device ({packed.device})", value.device)
        self.packed = packed
        self.scale = scale
        self.zero_point = zero_point

    @classmethod
    def from_float(
        cls,
        weight: Tensor,
        bits: int = 8,
        *,
        symmetric: bool = False,
        axis: int | None = None,
        group_size: int | None = None,
        preserve_zero: bool = True,
    ) -> QuantizedTensor:
        """Quantize ``weight`` (min-max, as :func:`weightops.functional.quantize`) and pack it.

        Args:
            weight: float16, bfloat16, float32 or float64, any shape and device.
            bits, symmetric, axis, group_size, preserve_zero: as
                :func:`weightops.functional.quantize_params`.

        Returns:
            The compact form, on ``weight``'s device; it shares no memory with ``weight``.

        Raises:
            TypeError, ValueError: as :func:`weightops.functional.quantize_params`.
        """
        check_weight("QuantizedTensor.from_float", weight)
        settings: dict[str, Any] = {
            "symmetric": symmetric,
            "axis": axis,
            "group_size": group_size,
            "preserve_zero": preserve_zero,
        }
        with torch.no_grad():
            scale, zero_point = quantize_params(weight, bits, **settings)
            codes = quantize(weight, scale, zero_point, bits=bits, **settings)
        q_min = code_range(bits, symmetric)[0]
        unsigned = codes.reshape(-1)
        if q_min:
            unsigned = unsigned - q_min
        # Copies: a parameter may be a view of the weight itself (a 1-D
        # weight per channel without preserve_zero), and a stored tensor
        # must own its memory (safetensors refuses shared storage).
        return cls(
            _pack(unsigned, bits),
            scale.detach().to(torch.float32, copy=True).contiguous(),
            zero_point.detach()
            .to(zero_point_dtype(bits, symmetric, preserve_zero), copy=True)
            .contiguous(),
            shape=tuple(weight.shape),
            dtype=weight.dtype,
            **settings,
            bits=bits,
        )

    @property
    def device(self) -> torch.device:
        """The device of the stored tensors."""
        return self.packed.device

    @property
    def numel(self) -> int:
        """Elements of the original weight."""
        return self.shape.numel()

    @property
    def nbytes(self) -> int:
        """Bytes of the packed codes, scales and zero points.

        Not counted: the ``qformat`` configuration tensor (``8·(7 + ndim)``
        bytes in :meth:`state_dict`), the Python objects, and a file's own
        header (safetensors' JSON index).
        """
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scale, self.zero_point))

    def codes(self) -> Tensor:
        """The int32 codes, equal to :func:`weightops.functional.quantize` of the weight."""
        codes = unpack_bits(self.packed, self.bits, self.numel)
        q_min = code_range(self.bits, self.symmetric)[0]
        if q_min:
            codes += q_min
        return codes.reshape(self.shape)

    def params(self) -> QuantParams:
        """Scale and zero point as :func:`weightops.functional.quantize_params`
        returns them (an integer zero point as int32), for
        :func:`weightops.functional.quantize` / ``dequantize``."""
        if self.preserve_zero:
            return QuantParams(self.scale, self.zero_point.to(torch.int32))
        return QuantParams(self.scale, self.zero_point)

    def dequantize(self, dtype: torch.dtype | None = None) -> Tensor:
        """The values of the codes, in ``dtype`` (default: the original weight's dtype).

        Computed in float32 as :func:`weightops.functional.dequantize`, then
        rounded to ``dtype``: equal bit for bit to
        :func:`weightops.functional.fake_quantize` of the original weight
        with the same settings.
        """
        dtype = self.dtype if dtype is None else dtype
        if dtype not in _DTYPE_CODES:
            fail(
                "QuantizedTensor.dequantize",
                "dtype",
                "float16, bfloat16, float32, float64 or None",
                dtype,
                TypeError,
            )
        scale, zero_point = self.params()
        return dequantize(self.codes(), scale, zero_point, group_size=self.group_size, dtype=dtype)

    def qformat(self) -> Tensor:
        """The configuration as an int64 tensor (layout: :meth:`state_dict`)."""
        flags = _SYMMETRIC * self.symmetric + _PRESERVE_ZERO * self.preserve_zero
        header = [
            QFORMAT_VERSION,
            self.bits,
            flags,
            -1 if self.axis is None else self.axis,
            0 if self.group_size is None else self.group_size,
            _DTYPE_CODES[self.dtype],
            len(self.shape),
        ]
        return torch.tensor([*header, *self.shape], dtype=torch.int64)

    def state_dict(self, prefix: str = "") -> dict[str, Tensor]:
        """Everything needed to rebuild this tensor, as four tensors.

        Keys (after ``prefix``): ``codes`` (the packed codes), ``scale``,
        ``zero_point`` and ``qformat``: int64 ``[version, bits, flags, axis,
        group_size, dtype, ndim, *shape]`` with version 1, flags
        ``1·symmetric + 2·preserve_zero``, axis −1 for per tensor or per
        group, group_size 0 for none, dtype 0 float32, 1 float64,
        2 float16, 3 bfloat16. ``qformat`` is on the CPU, the others where
        this tensor is. The tensors are this object's own, not copies.
        """
        return {
            prefix + "codes": self.packed,
            prefix + "scale": self.scale,
            prefix + "zero_point": self.zero_point,
            prefix + "qformat": self.qformat(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], prefix: str = "") -> QuantizedTensor:
        """Rebuild a :class:`QuantizedTensor` from :meth:`state_dict`'s keys under ``prefix``.

        Other keys of ``state`` are ignored. Dtypes, shapes and the
        configuration are checked; the values of the codes and zero points
        are not.

        Raises:
            TypeError: ``state`` is not a mapping.
            ValueError: a key is missing, ``qformat`` is malformed or of an
                unknown version, or a part does not fit the configuration.
        """
        op = "QuantizedTensor.from_state_dict"
        if not isinstance(state, Mapping):
            fail(op, "state", "a mapping of names to tensors", type(state).__name__, TypeError)
        missing = [prefix + key for key in _KEYS if prefix + key not in state]
        if missing:
            keys = [prefix + key for key in _KEYS]
            fail(op, "state", f"a mapping holding the keys {keys}", f"one without {missing}")
        qformat = state[prefix + "qformat"]
        if (
            not isinstance(qformat, Tensor)
            or qformat.dtype != torch.int64
            or qformat.ndim != 1
            or qformat.numel() < _HEADER
        ):
            got = qformat.dtype if isinstance(qformat, Tensor) else type(qformat).__name__
            fail(op, prefix + "qformat", f"a 1-D int64 tensor of >= {_HEADER} elements", got)
        version, bits, flags, axis, group_size, dtype, ndim, *shape = qformat.tolist()
        if version != QFORMAT_VERSION:
            fail(op, prefix + "qformat", f"of version {QFORMAT_VERSION}", f"version {version}")
        dtypes = {code: dtype for dtype, code in _DTYPE_CODES.items()}
        if ndim != len(shape) or flags not in range(4) or dtype not in dtypes:
            fail(op, prefix + "qformat", "a valid [version, bits, flags, axis, ...]", qformat)
        try:
            return cls(
                state[prefix + "codes"],
                state[prefix + "scale"],
                state[prefix + "zero_point"],
                shape=tuple(shape),
                dtype=dtypes[dtype],
                bits=bits,
                symmetric=bool(flags & _SYMMETRIC),
                axis=None if axis == -1 else axis,
                group_size=None if group_size == 0 else group_size,
                preserve_zero=bool(flags & _PRESERVE_ZERO),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{op}: {prefix}* does not describe a QuantizedTensor: {error}"
            ) from None

    def to(self, device: torch.device | str) -> QuantizedTensor:
        """A copy on ``device`` (``self`` when it is there already, as ``Tensor.to``)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return QuantizedTensor(
            self.packed.to(device),
            self.scale.to(device),
            self.zero_point.to(device),
            shape=self.shape,
            dtype=self.dtype,
            bits=self.bits,
            symmetric=self.symmetric,
            axis=self.axis,
            group_size=self.group_size,
            preserve_zero=self.preserve_zero,
        )

    def __repr__(self) -> str:
        fields = (
            f"shape={tuple(self.shape)}",
            f"dtype={self.dtype}",
            f"bits={self.bits}",
            f"symmetric={self.symmetric}",
            f"axis={self.axis}",
            f"group_size={self.group_size}",
            f"preserve_zero={self.preserve_zero}",
            f"nbytes={self.nbytes}",
            f"device={self.device}",
        )
        return f"QuantizedTensor({', '.join(fields)})"


#: Version of the ``cformat`` layout written by :meth:`ClusteredTensor.state_dict`.
CFORMAT_VERSION = 1
_CKEYS = ("indices", "codebook", "cformat")


def index_bits(k: int) -> int:
    """Bits per index of a ``k``-entry codebook: ``ceil(log2 k)``, at least 1."""
    return max(1, (k - 1).bit_length())


class ClusteredTensor:
    """A clustered (weight-shared) weight in compact form: packed indices and a codebook.

    Indices into a ``(k,)`` codebook, or into row ``c`` of a ``(C, k)``
    codebook for the slices along ``axis`` (per channel), packed by
    :func:`pack_bits` at :func:`index_bits` ``(k)`` bits each, plus the
    codebook in the weight's dtype. :meth:`dequantize` gives
    ``codebook[indices]``, the value :class:`weightops.Cluster` computes.

    >>> ct = ClusteredTensor(torch.tensor([[0, 1, 1, 0]]), torch.tensor([0.5, 2.0]), 2)
    >>> ct.dequantize()
    tensor([[0.5000, 2.0000, 2.0000, 0.5000]])
    >>> ct.nbytes  # 4 one-bit indices in a byte, two float32 values
    9
    """

    def __init__(
        self, indices: Tensor, codebook: Tensor, k: int, *, axis: int | None = None
    ) -> None:
        op = "ClusteredTensor"
        if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.is_complex():
            fail(op, "indices", "an integer tensor", getattr(indices, "dtype", indices), TypeError)
        check_weight(op, codebook, "codebook")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1 << 16:
            fail(op, "k", "an int in [1, 65536]", k)
        if axis is None:
            expected: tuple[int, ...] = (k,)
        else:
            if isinstance(axis, bool) or not isinstance(axis, int):
                fail(op, "axis", "None or an int", axis, TypeError)
            if not -indices.ndim <= axis < indices.ndim:
                fail(op, "axis", f"None or an int in [{-indices.ndim}, {indices.ndim - 1}]", axis)
            axis %= indices.ndim
            expected = (indices.shape[axis], k)
        if tuple(codebook.shape) != expected:
            fail(op, "codebook", f"of shape {expected}", tuple(codebook.shape))
        self.shape = indices.shape
        self.k, self.axis = k, axis
        self.codebook = codebook
        self.packed = pack_bits(indices.reshape(-1), index_bits(k))

    @property
    def nbytes(self) -> int:
        """Bytes of the packed indices and the codebook (not the small ``cformat``)."""
        return sum(t.numel() * t.element_size() for t in (self.packed, self.codebook))

    def indices(self) -> Tensor:
        """The int32 indices, the weight's shape."""
        return unpack_bits(self.packed, index_bits(self.k), self.shape.numel()).reshape(self.shape)

    def dequantize(self) -> Tensor:
        """``codebook[indices]``, in the codebook's dtype."""
        index = self.indices()
        if self.axis is None:
            return self.codebook[index.long()]
        moved = index.movedim(self.axis, 0).long()
        rows = torch.arange(moved.shape[0], device=index.device).view(-1, *[1] * (moved.ndim - 1))
        return self.codebook[rows, moved].movedim(0, self.axis)

    def state_dict(self, prefix: str = "") -> dict[str, Tensor]:
        """Keys ``indices`` (packed), ``codebook`` and ``cformat``: int64
        ``[version, k, axis (-1: none), ndim, *shape]``, version 1."""
        axis = -1 if self.axis is None else self.axis
        cformat = torch.tensor(
            [CFORMAT_VERSION, self.k, axis, len(self.shape), *self.shape], dtype=torch.int64
        )
        return {
            prefix + "indices": self.packed,
            prefix + "codebook": self.codebook,
            prefix + "cformat": cformat,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], prefix: str = "") -> ClusteredTensor:
        """Rebuild from :meth:`state_dict`'s keys under ``prefix``.

        Raises:
            ValueError: a key is missing or ``cformat`` is malformed.
        """
        op = "ClusteredTensor.from_state_dict"
        missing = [prefix + key for key in _CKEYS if prefix + key not in state]
        if missing:
            fail(op, "state", f"a mapping holding {[prefix + k for k in _CKEYS]}", missing)
        cformat = state[prefix + "cformat"]
        if cformat.dtype != torch.int64 or cformat.ndim != 1 or cformat.numel() < 4:
            fail(op, prefix + "cformat", "a 1-D int64 tensor of >= 4 elements", cformat)
        version, k, axis, ndim, *shape = cformat.tolist()
        if version != CFORMAT_VERSION or ndim != len(shape):
            fail(op, prefix + "cformat", f"of version {CFORMAT_VERSION}", cformat)
        packed = state[prefix + "indices"]
        numel = math.prod(shape)
        try:
            indices = unpack_bits(packed, index_bits(k), numel).reshape(shape)
            return cls(indices, state[prefix + "codebook"], k, axis=None if axis == -1 else axis)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{op}: {prefix}* does not describe a ClusteredTensor: {error}"
            ) from None

    def __repr__(self) -> str:
        return (
            f"ClusteredTensor(shape={tuple(self.shape)}, k={self.k}, axis={self.axis}, "
            f"dtype={self.codebook.dtype}, nbytes={self.nbytes})"
        )


def _safetensors(op: str) -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError(
            f"{op} needs safetensors: pip install 'weightops[io]' (the io extra)"
        ) from None
    return safetensors


Compact = QuantizedTensor | ClusteredTensor
_CLUSTERED_KEY = "weightops.clustered"


def save_quantized(path: str | os.PathLike[str], tensors: Mapping[str, Compact | Tensor]) -> None:
    """Write quantized and plain tensors to a ``.safetensors`` file.

    A :class:`QuantizedTensor` named ``name`` is stored as its
    :meth:`~QuantizedTensor.state_dict` with prefix ``name + "."``; a plain
    tensor as it is (made contiguous). The file's metadata lists the
    quantized names under ``"weightops.quantized"`` (a JSON list), so
    :func:`load_quantized` tells them apart from plain tensors; a
    :class:`ClusteredTensor` likewise, listed under ``"weightops.clustered"``.

    Raises:
        TypeError: ``tensors`` is not a mapping, or a value is neither.
        ImportError: safetensors is missing.
        ValueError: a name is not a non-empty str, or two entries write the same key.
    """
    op = "save_quantized"
    if not isinstance(tensors, Mapping):
        fail(op, "tensors", "a mapping of names to tensors", type(tensors).__name__, TypeError)
    flat: dict[str, Tensor] = {}
    quantized: list[str] = []
    clustered: list[str] = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            fail(op, "tensors", "keyed by non-empty strs", name)
        if isinstance(value, QuantizedTensor):
            parts = value.state_dict(prefix=name + ".")
            quantized.append(name)
        elif isinstance(value, ClusteredTensor):
            parts = value.state_dict(prefix=name + ".")
            clustered.append(name)
        elif isinstance(value, Tensor):
            parts = {name: value.contiguous()}
        else:
            fail(
                op,
                f"tensors[{name!r}]",
                "a QuantizedTensor, ClusteredTensor or Tensor",
                type(value),
                TypeError,
            )
        clash = sorted(flat.keys() & parts.keys())
        if clash:
            fail(op, "tensors", "names whose stored keys do not collide", clash)
        flat.update(parts)
    metadata = {
        _META_KEY: json.dumps(sorted(quantized)),
        _CLUSTERED_KEY: json.dumps(sorted(clustered)),
    }
    _safetensors(op).torch.save_file(flat, os.fspath(path), metadata=metadata)


def load_quantized(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> dict[str, Compact | Tensor]:
    """Read a file written by :func:`save_quantized`, onto ``device``.

    Returns:
        ``{name: QuantizedTensor or Tensor}``, sorted by name, exactly as
        saved. A file without weightops metadata reads as plain tensors.

    Raises:
        ImportError: safetensors is missing.
        ValueError: the metadata or a quantized tensor's keys are malformed.
    """
    op = "load_quantized"
    safetensors = _safetensors(op)
    with safetensors.safe_open(os.fspath(path), framework="pt", device=str(device)) as file:
        metadata = file.metadata() or {}
        flat = {key: file.get_tensor(key) for key in file.keys()}
    out: dict[str, Compact | Tensor] = {}
    kinds: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
        (_META_KEY, QuantizedTensor, _KEYS),
        (_CLUSTERED_KEY, ClusteredTensor, _CKEYS),
    )
    for meta_key, kind, keys in kinds:
        try:
            names = json.loads(metadata.get(meta_key, "[]"))
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError
        except ValueError:
            fail(op, f"metadata[{meta_key!r}]", "a JSON list of names", metadata[meta_key])
        for name in names:
            out[name] = kind.from_state_dict(flat, prefix=name + ".")
            for key in keys:
                del flat[name + "." + key]
    out.update(flat)
    return dict(sorted(out.items()))
