"""Integer check of a quantized TinyLSTM: export its integers, run them in numpy, compare with PyTorch.

``python recipes/tinylstm/integer_check.py --model runs/tinylstm/<name>-pruned-int8 --wav noisy.wav``

1. :func:`export_integer` writes what a microcontroller would flash: int8 weights, int32 biases and
   requantization multipliers (31-bit fixed point, shift 30), and 8-bit lookup tables for sigmoid and
   tanh, as one safetensors file (``integer.safetensors``).
2. :class:`IntegerLSTM` reads only that file and runs the LSTM step in integer arithmetic: int32
   accumulators for the matrix-vector products, int64 products with a rounding right shift for every
   rescaling (CMSIS-NN's requantization, ties to even), table lookups for the nonlinearities.
3. Every layer's hidden and cell states, frame by frame, are compared with the fake-quantized PyTorch
   model's in quantization steps: each integer step fed PyTorch's previous state (the step's
   arithmetic; within one step is the bar), and the integer LSTM running on its own states.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sezoo.models import TinyLSTM  # noqa: E402
from sezoo.nn.integer import SHIFT, lookup_table as _lut, multiplier as _multiplier, requantize as _requantize  # noqa: E402

def _scale(site, tensor: torch.Tensor | None = None) -> float:
    q = site.quantizer
    if q is None:
        raise ValueError("the model is not quantized: export a run of stage int8 (or skip)")
    return q.scale_for(tensor if tensor is not None else torch.zeros(1))


@torch.no_grad()
def export_integer(model: TinyLSTM) -> dict[str, np.ndarray]:
    """The LSTM layers of a QAT-trained TinyLSTM as integers (no skip gates: stage int8)."""
    tensors: dict[str, np.ndarray] = {}
    in_scale = _scale(model.input_quant)
    tensors["input_scale"] = np.array(in_scale, dtype=np.float32)  # the front end quantizes its features with it
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for k, layer in enumerate(model.layers):
        w_ih, w_hh, bias = layer.weights()
        s_ih, s_hh = _scale(layer.w_ih_quant, w_ih), _scale(layer.w_hh_quant, w_hh)
        s_z, s_c = _scale(layer.gates_quant), _scale(layer.cell_quant)
        s_sig, s_tanh, s_tc, s_h = (_scale(site) for site in (layer.sigmoid_quant, layer.tanh_quant,
                                                                layer.cell_tanh_quant, layer.hidden_quant))
        code8 = np.arange(-127, 128)
        p = f"layer{k}."
        tensors |= {
            p + "w_ih": np.rint(w_ih.numpy() / s_ih).astype(np.int8),
            p + "w_hh": np.rint(w_hh.numpy() / s_hh).astype(np.int8),
            p + "bias": np.rint(bias.numpy().astype(np.float64) / s_z * 2 ** SHIFT).astype(np.int64),
            p + "m_ih": _multiplier(s_ih * in_scale / s_z),
            p + "m_hh": _multiplier(s_hh * s_h / s_z),
            p + "m_fc": _multiplier(s_sig),             # f * c  -> cell scale
            p + "m_ig": _multiplier(s_sig * s_tanh / s_c),  # i * g  -> cell scale
            p + "m_h": _multiplier(s_sig * s_tc / s_h),     # o * tanh(c) -> hidden scale
            p + "lut_sigmoid": _lut(sigmoid, s_z, code8, s_sig, 0, 255),
            p + "lut_tanh": _lut(np.tanh, s_z, code8, s_tanh, -127, 127),
            p + "lut_cell_tanh": _lut(np.tanh, s_c, code8, s_tc, -127, 127),
        }
        in_scale = s_h
    return tensors


class IntegerLSTM:
    """The exported LSTM layers in integer arithmetic, one frame at a time."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.t = tensors
        self.layers = sorted({int(k.split(".")[0][5:]) for k in tensors if k.startswith("layer")})

    def step(self, k: int, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = {name.split(".", 1)[1]: v for name, v in self.t.items() if name.startswith(f"layer{k}.")}
        acc_x = t["w_ih"].astype(np.int32) @ x.astype(np.int32)  # int32 accumulators
        acc_h = t["w_hh"].astype(np.int32) @ h.astype(np.int32)
        z = _requantize(acc_x.astype(np.int64) * t["m_ih"] + acc_h.astype(np.int64) * t["m_hh"] + t["bias"], -127, 127)
        i, f, g, o = np.split(z, 4)
        i, f, o = (t["lut_sigmoid"][v + 127].astype(np.int64) for v in (i, f, o))
        g = t["lut_tanh"][g + 127].astype(np.int64)
        c = _requantize(f * c * t["m_fc"] + i * g * t["m_ig"], -127, 127)
        h = _requantize(o * t["lut_cell_tanh"][c + 127].astype(np.int64) * t["m_h"], -127, 127)
        return h, c

    def run(self, x_codes: np.ndarray) -> list[np.ndarray]:
        """Input feature codes [T, bins] -> each layer's hidden codes [T, H]."""
        outputs, x = [], x_codes.astype(np.int64)
        for k in self.layers:
            hidden = self.t[f"layer{k}.w_hh"].shape[1]
            h, c = np.zeros(hidden, np.int64), np.zeros(hidden, np.int64)
            states = []
            for frame in x:
                h, c = self.step(k, frame, h, c)
                states.append(h)
            x = np.stack(states)
            outputs.append(x)
        return outputs


@torch.no_grad()
def torch_codes(model: TinyLSTM, waveform: torch.Tensor) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The fake-quantized model's input codes [T, bins] and each layer's (hidden, cell) codes [T, H],
    stepped with the layer's own ``cell`` so that the cell state is visible too."""
    model.eval()
    spec = model.stft(waveform[None])
    x = model.input_quant((spec.abs() + 1e-12) ** model.compression).transpose(1, 2)
    x_codes = torch.round(x[0] / _scale(model.input_quant)).numpy()
    states = []
    for layer in model.layers:
        w_ih, w_hh, bias = layer.weights()
        h = c = x.new_zeros(1, layer.hidden_size)
        hs, cs = [], []
        for t in range(x.shape[1]):
            h, c = layer.cell(x[:, t] @ w_ih.T + bias + h @ w_hh.T, c)
            hs.append(h[0])
            cs.append(c[0])
        x = torch.stack(hs)[None]
        states.append((torch.round(torch.stack(hs) / _scale(layer.hidden_quant)).numpy(),
                       torch.round(torch.stack(cs) / _scale(layer.cell_quant)).numpy()))
    return x_codes, states


def compare(model: TinyLSTM, waveform: torch.Tensor, folder: Path | None = None) -> dict:
    """Two comparisons, in quantization steps. ``step``: every frame's integer step fed PyTorch's
    previous state and input (the step's arithmetic alone). ``free_running``: the integer LSTM on its
    own states for the whole utterance (where a rounding difference can feed back)."""
    tensors = export_integer(model)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / "integer.safetensors"))
        tensors = load_file(str(folder / "integer.safetensors"))  # the reference reads what was written
    reference = IntegerLSTM(tensors)
    x_codes, expected = torch_codes(model, waveform)
    free = reference.run(x_codes)
    report = {"frames": int(x_codes.shape[0]), "layers": []}
    inputs = x_codes.astype(np.int64)
    for k, ((h_torch, c_torch), h_free) in enumerate(zip(expected, free)):
        h_prev = np.vstack([np.zeros_like(h_torch[:1]), h_torch[:-1]]).astype(np.int64)
        c_prev = np.vstack([np.zeros_like(c_torch[:1]), c_torch[:-1]]).astype(np.int64)
        stepped = [reference.step(k, inputs[t], h_prev[t], c_prev[t]) for t in range(len(inputs))]
        step_h = np.abs(np.stack([h for h, _ in stepped]) - h_torch)
        step_c = np.abs(np.stack([c for _, c in stepped]) - c_torch)
        free_h = np.abs(h_free - h_torch)
        report["layers"].append({
            "layer": k, "units": int(h_torch.shape[1]),
            "step_max_difference": int(max(step_h.max(), step_c.max())),
            "step_exact_fraction": float(((step_h == 0) & (step_c == 0)).mean()),
            "free_running_max_difference": int(free_h.max()),
            "free_running_exact_fraction": float((free_h == 0).mean()),
        })
        inputs = h_torch.astype(np.int64)
    report["step_within_one"] = all(r["step_max_difference"] <= 1 for r in report["layers"])
    # What the free-running drift does to the enhanced audio: the same (fake-quantized) mask head and
    # iSTFT on the integer LSTM's last hidden states, against the PyTorch model's output.
    with torch.no_grad():
        last = model.layers[-1]
        hidden = torch.from_numpy(free[-1]).float()[None] * _scale(last.hidden_quant)
        spec = model.stft(waveform[None])
        mask = model.mask_quant(torch.sigmoid(model.mask_fc(hidden))).transpose(1, 2)
        integer_out = model.stft.inverse(spec * mask, waveform.shape[-1])
        torch_out = model(waveform[None])
        error = (integer_out - torch_out).pow(2).sum()
        report["output_snr_db"] = float(10 * torch.log10(torch_out.pow(2).sum() / error)) if error > 0 else float("inf")
    report["integer_bytes"] = int(sum(v.nbytes for v in tensors.values()))
    return report


def main(argv: list[str] | None = None) -> dict:
    from sezoo.data.audio import read_audio
    from sezoo.export import load_exported
    from sezoo.training import portable

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a stage-int8 run folder (or its export)")
    parser.add_argument("--wav", required=True, help="one noisy utterance")
    parser.add_argument("--out", help="folder for integer.safetensors and integer_check.json (default: the model's)")
    args = parser.parse_args(argv)
    model = load_exported(args.model)
    if not isinstance(model, TinyLSTM) or model.skip_updates:
        sys.exit(f"error: {args.model} is not a TinyLSTM without skip gates (use the pruned-int8 stage)")
    waveform = read_audio(args.wav, model.sample_rate)
    folder = Path(args.out or args.model)
    report = compare(model, waveform, folder)
    report["wav"] = portable(str(Path(args.wav).resolve()))  # no machine paths in a committed report
    (folder / "integer_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
