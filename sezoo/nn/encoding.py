"""Weights as a microcontroller or microNPU stores them: integer codes, dense or in a sparse encoding,
bit-packed. This one module decides both what deployable bytes count (``sezoo.metrics.cost``) and what an
export writes (``sezoo.export``), so the two cannot disagree.

A quantized weight is stored as its symmetric per-tensor codes (``bits`` bits each, the zero point fixed
at 0, as ``sezoo.nn.quant`` trains them) and one float32 scale; an unquantized tensor's "codes" are its
float32 bit patterns. The cheapest of these encodings is chosen per tensor:

- ``dense``: every code.
- ``bitmap``: one presence bit per element, then the non-zero codes.
- ``coo16`` / ``coo32``: each non-zero code with its flat index (16 bits where 16 bits address every
  element, at most 65,536 of them, 32 bits otherwise).
- ``rel1`` ... ``rel8``: relative indexing (Han, Mao & Dally, *Deep Compression*, ICLR 2016): each
  non-zero code with the number of zeros before it in ``k`` bits; a longer run of zeros takes filler
  entries (code 0, skip ``2^k - 1``), each advancing ``2^k`` elements. ``k`` is chosen per tensor.

Written by hand because no maintained library packs arbitrary-width codes in these layouts; Arm's Vela
compresses weights with its own codec, reported beside these figures where it is installed.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SCALE_BYTES = 4  # one float32 scale per quantized tensor
REL_WIDTHS = range(1, 9)
FIELDS = ("codes", "bitmap", "index", "skips", "scale")


# ---------------------------------------------------------------------- bit packing
def pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers below ``2^width``, ``width`` bits each, most significant first, as bytes."""
    values = np.asarray(values, dtype=np.uint64)
    if values.size and int(values.max()) >> width:
        raise ValueError(f"a value does not fit in {width} bits")
    bits = (values[:, None] >> np.arange(width - 1, -1, -1, dtype=np.uint64)) & np.uint64(1)
    return np.packbits(bits.astype(np.uint8).reshape(-1))


def unpack_bits(data: np.ndarray, width: int, count: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(data, dtype=np.uint8))[: count * width].reshape(count, width)
    return (bits.astype(np.uint64) << np.arange(width - 1, -1, -1, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def _bytes(count: int, width: int) -> int:
    return -(-count * width // 8)


# ---------------------------------------------------------------------- sizes
def _gaps(nonzero: np.ndarray) -> np.ndarray:
    """Zeros before each non-zero element (flat order)."""
    where = np.flatnonzero(nonzero)
    return np.diff(where, prepend=-1) - 1


def encoding_sizes(nonzero: np.ndarray | torch.Tensor, bits: int) -> dict[str, int]:
    """Bytes of the payload in every encoding, for a tensor whose non-zero pattern is ``nonzero``."""
    nonzero = np.asarray(nonzero, dtype=bool).reshape(-1)
    numel, count = nonzero.size, int(nonzero.sum())
    index_width, coordinate = (16, "coo16") if numel <= 1 << 16 else (32, "coo32")
    sizes = {"dense": _bytes(numel, bits), "bitmap": _bytes(numel, 1) + _bytes(count, bits),
             coordinate: _bytes(count, index_width) + _bytes(count, bits)}
    gaps = _gaps(nonzero)
    for k in REL_WIDTHS:
        entries = count + int((gaps >> k).sum())
        sizes[f"rel{k}"] = _bytes(entries, k) + _bytes(entries, bits)
    return sizes


def cheapest(sizes: dict[str, int]) -> str:
    """The smallest encoding; dense on a tie (it needs no decoding)."""
    return min(sizes, key=lambda name: (sizes[name], name != "dense"))


# ---------------------------------------------------------------------- codes
def weight_codes(weight: torch.Tensor, bits: int) -> tuple[np.ndarray, float]:
    """The integer codes a ``bits``-bit weight quantizer gives ``weight`` and their scale: exactly what
    QAT's fake quantization multiplies back (``codes * scale``)."""
    from sezoo.nn.quant import Quantizer

    quantizer = Quantizer(bits, signed=True, kind="weight")
    weight = weight.detach().float().cpu()
    scale = quantizer.scale_for(weight)
    codes = torch.round(quantizer(weight, training=False) / scale).to(torch.int64)
    return codes.numpy().reshape(-1), scale


# ---------------------------------------------------------------------- one tensor
def encode(tensor: torch.Tensor, bits: int | None) -> tuple[dict[str, torch.Tensor], dict]:
    """A tensor as stored: ``bits`` set: quantized codes and scale; ``None``: float32 values.

    Returns the stored arrays (uint8 byte strings, the scale as float32) by field name and what
    decoding needs (shape, bits, encoding, entry count).
    """
    if bits is None:
        flat = tensor.detach().float().cpu().reshape(-1).numpy()
        nonzero = flat != 0  # -0.0 stores as 0.0: equal in value
        symbols, width, scale = flat.view(np.uint32).astype(np.uint64), 32, None
    else:
        codes, scale = weight_codes(tensor, bits)
        nonzero = codes != 0
        symbols, width = (codes + (1 << (bits - 1))).astype(np.uint64), bits  # offset binary
    sizes = encoding_sizes(nonzero, width)
    encoding = cheapest(sizes)
    parts: dict[str, np.ndarray] = {}
    count = int(nonzero.sum())
    if encoding == "dense":
        parts["codes"], count = pack_bits(symbols, width), symbols.size
    elif encoding == "bitmap":
        parts["bitmap"] = np.packbits(nonzero)
        parts["codes"] = pack_bits(symbols[nonzero], width)
    elif encoding.startswith("coo"):
        parts["index"] = pack_bits(np.flatnonzero(nonzero), int(encoding[3:]))
        parts["codes"] = pack_bits(symbols[nonzero], width)
    else:  # relative indexing with fillers
        k = int(encoding[3:])
        gaps = _gaps(nonzero)
        fillers = gaps >> k
        count = int(nonzero.sum() + fillers.sum())
        skips = np.full(count, (1 << k) - 1, dtype=np.uint64)
        entry_symbols = np.full(count, 0 if bits is None else 1 << (bits - 1), dtype=np.uint64)  # the code 0
        real = np.cumsum(fillers + 1) - 1
        skips[real] = gaps & ((1 << k) - 1)
        entry_symbols[real] = symbols[nonzero]
        parts["skips"] = pack_bits(skips, k)
        parts["codes"] = pack_bits(entry_symbols, width)
    assert sum(p.size for p in parts.values()) == sizes[encoding]
    stored = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in parts.items()}
    if scale is not None:
        stored["scale"] = torch.tensor([scale], dtype=torch.float32)
    info = {"shape": list(tensor.shape), "bits": bits, "encoding": encoding, "count": count}
    return stored, info


def decode(stored: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
    """The float32 tensor :func:`encode` stored (a quantized one as ``codes * scale``)."""
    bits, encoding, count = info["bits"], info["encoding"], info["count"]
    numel = math.prod(info["shape"])
    width = 32 if bits is None else bits
    symbols = unpack_bits(stored["codes"].numpy(), width, count)
    if encoding == "dense":
        positions = np.arange(numel)
    elif encoding == "bitmap":
        positions = np.flatnonzero(np.unpackbits(stored["bitmap"].numpy())[:numel])
    elif encoding.startswith("coo"):
        positions = unpack_bits(stored["index"].numpy(), int(encoding[3:]), count).astype(np.int64)
    elif encoding.startswith("rel"):
        skips = unpack_bits(stored["skips"].numpy(), int(encoding[3:]), count).astype(np.int64)
        positions = np.cumsum(skips + 1) - 1
    else:
        raise ValueError(f"unknown weight encoding {encoding!r}: written by a newer sezoo? Upgrade sezoo")
    if bits is None:
        values = symbols.astype(np.uint32).view(np.float32)
    else:
        values = (symbols.astype(np.int64) - (1 << (bits - 1))).astype(np.float32) * float(stored["scale"][0])
    flat = np.zeros(numel, dtype=np.float32)
    flat[positions] = values
    return torch.from_numpy(flat).reshape(info["shape"])


# ---------------------------------------------------------------------- a state dict
def pack_state(state: dict[str, torch.Tensor], quantized_bits: dict[str, int]) -> tuple[dict[str, torch.Tensor], dict]:
    """A state dict as an export stores it: every quantized weight (``quantized_bits``: name -> bits) as
    its codes, and every float tensor whose cheapest encoding is sparse, encoded; the rest as they are.
    Returns the tensors to save (encoded ones as ``name:field``) and the decoding information by name."""
    tensors, packed = {}, {}
    for name, tensor in state.items():
        bits = quantized_bits.get(name)
        if bits is None and (not tensor.is_floating_point() or
                             cheapest(encoding_sizes((tensor != 0).cpu().numpy(), 32)) == "dense"):
            tensors[name] = tensor.detach().cpu().contiguous()
            continue
        stored, info = encode(tensor, bits)
        tensors.update({f"{name}:{field}": array for field, array in stored.items()})
        packed[name] = info
    return tensors, packed


def unpack_state(tensors: dict[str, torch.Tensor], packed: dict) -> dict[str, torch.Tensor]:
    """The state dict :func:`pack_state` packed, every tensor float32 again."""
    state = {name: tensor for name, tensor in tensors.items() if name.rpartition(":")[0] not in packed}
    for name, info in packed.items():
        state[name] = decode({field: tensors[f"{name}:{field}"] for field in FIELDS if f"{name}:{field}" in tensors}, info)
    return state
