"""Stored weights: integer codes and sparse encodings round-trip exactly, an export writes what deployable
bytes count, and a pruned int8 model loads back computing the same output."""
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sezoo.callbacks import QuantizationAwareTraining
from sezoo.export import export_model, load_exported
from sezoo.metrics.cost import deployable_bytes, model_bit_widths
from sezoo.models import create_model
from sezoo.nn.encoding import decode, encode, encoding_sizes, pack_bits, unpack_bits
from sezoo.nn.quant import Quantizer
from sezoo.weights import PACKED_KEY, WEIGHTS


def test_bit_packing_round_trips_any_width():
    rng = np.random.default_rng(0)
    for width in (1, 3, 8, 13, 32):
        values = rng.integers(0, 2 ** width, size=101, dtype=np.uint64)
        packed = pack_bits(values, width)
        assert packed.size == -(-101 * width // 8)
        assert np.array_equal(unpack_bits(packed, width, 101), values)
    with pytest.raises(ValueError, match="does not fit in 3 bits"):
        pack_bits(np.array([8]), 3)


def _sparse(shape, density, seed=0):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator)
    return values * (torch.rand(shape, generator=generator) < density)


@pytest.mark.parametrize("tensor, bits, encoding", [
    (_sparse((64, 64), 1.0), 8, "dense"),
    (_sparse((64, 64), 0.3), 8, "bitmap"),
    (_sparse((64, 64), 0.05), 4, "rel6"),
    (torch.zeros(65_536).index_fill_(0, torch.arange(0, 65_536, 1000), 1.0).view(256, 256), 8, "coo16"),
    (torch.zeros(90_000).index_fill_(0, torch.arange(0, 90_000, 1000), 1.0).view(300, 300), 8, "coo32"),
    (_sparse((32, 40), 0.5), None, "bitmap"),
])
def test_each_encoding_round_trips_exactly_in_the_bytes_counted(tensor, bits, encoding):
    stored, info = encode(tensor, bits)
    assert info["encoding"] == encoding
    if bits is None:
        expected, nonzero, width = tensor, tensor != 0, 32
    else:
        expected = Quantizer(bits, kind="weight")(tensor, training=False)  # what QAT multiplies with
        nonzero, width = expected != 0, bits
    assert torch.equal(decode(stored, info), expected)
    payload = sum(t.numel() * t.element_size() for field, t in stored.items() if field != "scale")
    assert payload == encoding_sizes(nonzero.numpy(), width)[encoding]


def test_pruned_int8_dtln_exports_in_the_counted_encoding_and_loads_back_exact(tmp_path):
    model = create_model("dtln", hidden1=[32], hidden2=[32], basis=64)
    QuantizationAwareTraining({"*": 8}).attach(model)
    with torch.no_grad():  # 90 % of each matrix pruned, as a PruningSchedule leaves it
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.mul_(torch.rand_like(parameter) > 0.9)
    model.eval()
    from sezoo.nn.quant import quantization_state

    folder = export_model(model, tmp_path / "export", extra={"quantization": quantization_state(model)})
    with safe_open(str(folder / WEIGHTS), framework="pt") as handle:
        packed = json.loads(handle.metadata()[PACKED_KEY])
        stored = {key: handle.get_tensor(key) for key in handle.keys()}
    widths = model_bit_widths(model)
    assert set(widths) <= set(packed)  # every quantized weight is stored as codes (and all-zero floats encoded)
    counted = deployable_bytes(model, widths)
    for entry in counted.tensors:
        if entry.name in packed:
            assert packed[entry.name]["encoding"] == entry.encoding
            written = sum(t.numel() * t.element_size() for key, t in stored.items() if key.startswith(entry.name + ":"))
            assert written == entry.bytes, entry.name
    assert stored[next(iter(packed)) + ":codes"].dtype == torch.uint8
    loaded = load_exported(folder)
    audio = torch.randn(1, 4000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(audio), model(audio))
    assert deployable_bytes(loaded, model_bit_widths(loaded)).total == counted.total
