"""Int8 streaming ONNX exports (``sezoo export --int8``), by one of two routes:

- **A QAT model keeps its trained ranges.** Every quantizer site of at most 8 bits becomes an ONNX
  ``QuantizeLinear``/``DequantizeLinear`` pair with the scale QAT trained (weights: their own range;
  activations: the moving average QAT froze), and every such weight is stored as its int8 codes with
  one ``DequantizeLinear``: nothing is recalibrated, the file holds the deployable integers, and the
  graph computes what the fake-quantized model computes (tested). A site's narrower width (2..7 bits,
  a mixed-precision plan) is its clamp inside int8; sites wider than 8 bits stay fake-quantized in
  float, as opset 18 has no int16 ``QuantizeLinear``.
- **Any other model is calibrated on the embedded corpus.** Its float step graph goes through ONNX
  Runtime's static quantizer (QDQ format, int8 weights per output channel, int8 activations) with
  ranges observed on the steps of real streams: the first files of the `mini` validation split,
  streamed hop by hop through the float graph, state included.

The QDQ format is chosen over ORT's QOperator format because it is what both routes can write and what
other runtimes (TFLite converters, TensorRT) read; ORT fuses the pairs into integer kernels where it has
them. Whether that is faster than float depends on the graph: measure it (``sezoo bench --int8``).
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed
from torch import nn

CALIBRATION_FILES = 4  # mini validation recordings streamed for the ranges (about 2,500 steps at a 16 ms hop)


# ------------------------------------------------------------------------------ QAT: trained ranges
class QDQQuantizer:
    """A trained :class:`sezoo.nn.quant.Quantizer` spelled as ONNX QuantizeLinear/DequantizeLinear.

    Signed sites use int8 (zero point 0, clamped first to the symmetric ``[-qmax, qmax]`` that the
    training used, since QuantizeLinear would saturate at -128), unsigned sites uint8. A weight site
    holds its codes (a buffer of its site), so the exported graph stores int8 and dequantizes it.
    """

    def __init__(self, quantizer, scale: float, site: nn.Module | None = None):
        from sezoo.nn.quant import _float32

        if quantizer.bits > 8:
            raise ValueError(f"a {quantizer.bits}-bit site has no int8 QuantizeLinear")
        self.bits, self.signed = quantizer.bits, quantizer.signed
        self.qmin, self.qmax = quantizer.qmin, quantizer.qmax
        self.scale = _float32(scale)
        self.dtype = torch.int8 if self.signed else torch.uint8
        self.limits = (-128, 127) if self.signed else (0, 255)
        self.site = site  # a weight site holds the codes as its buffer ``int8_codes``
        self.enabled = True

    def _dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized_decomposed.dequantize_per_tensor(codes, self.scale, 0, *self.limits, self.dtype)

    def __call__(self, x: torch.Tensor, training: bool = False) -> torch.Tensor:
        if self.site is not None:
            return self._dequantize(self.site.int8_codes)
        x = torch.clamp(x, self.qmin * self.scale, self.qmax * self.scale)
        codes = torch.ops.quantized_decomposed.quantize_per_tensor(x, self.scale, 0, *self.limits, self.dtype)
        return self._dequantize(codes)


class _Recorder:
    """Wraps a weight quantizer for one eager step: records the tensor it quantizes (a pruned or masked
    weight is computed inside the model, so the parameter alone is not what the site sees)."""

    def __init__(self, quantizer):
        self.quantizer, self.seen = quantizer, []

    def __call__(self, x, training=False):
        self.seen.append(x.detach().clone())
        return self.quantizer(x, training)


def is_qat(model: nn.Module) -> bool:
    from sezoo.nn.quant import quant_sites

    return any(s.quantizer is not None and s.quantizer.enabled for s in quant_sites(model).values())


def with_qdq_sites(model: nn.Module) -> tuple[nn.Module, dict]:
    """A copy of a QAT model whose sites of at most 8 bits quantize through QuantizeLinear/DequantizeLinear
    with their trained scales (weights as int8 codes), and a summary: sites converted and kept in float."""
    from sezoo.nn.quant import quant_sites

    model = copy.deepcopy(model).eval()
    sites = {n: s for n, s in quant_sites(model).items() if s.quantizer is not None and s.quantizer.enabled}
    weights = {n: s for n, s in sites.items() if s.param and s.quantizer.bits <= 8}
    for site in weights.values():
        site.quantizer = _Recorder(site.quantizer)
    with torch.no_grad():  # one eager step shows each weight site the tensor it quantizes
        framing = model.stream_framing()
        width = framing.frame // 2 + 1 if framing.kind == "stft_mask" else framing.frame
        model.stream_step(torch.zeros(1, width), torch.ones(1), *model.stream_state().values())
    summary = {"int8": [], "float": []}
    for name, site in sites.items():
        if site.quantizer.__class__ is _Recorder:
            recorder = site.quantizer
            if not recorder.seen:
                raise RuntimeError(f"weight site {name!r} was not used by stream_step: cannot store its codes")
            weight = recorder.seen[0]
            quantizer = recorder.quantizer
            scale = quantizer.scale_for(weight)
            deployed = QDQQuantizer(quantizer, scale, site)
            codes = torch.clamp(torch.round(weight * (1.0 / deployed.scale)), quantizer.qmin, quantizer.qmax)
            # A buffer, not a plain attribute: the exporter gives buffers static shapes (a constant it
            # lifts as an input gets symbolic ones, which a torch.cond branch then cannot match).
            site.register_buffer("int8_codes", codes.to(deployed.dtype), persistent=False)
            site.quantizer = deployed
            summary["int8"].append(name)
        elif site.quantizer.bits <= 8:
            site.quantizer = QDQQuantizer(site.quantizer, site.quantizer.scale_for(torch.zeros(())))
            summary["int8"].append(name)
        else:
            summary["float"].append(name)
    return model, summary


# ------------------------------------------------------------------------ others: corpus calibration
def calibration_files(folder: str | Path | None = None, count: int = CALIBRATION_FILES) -> list[Path]:
    """The recordings whose streamed steps calibrate the ranges: ``folder``'s first ``count`` audio
    files, by default the `mini` corpus' validation noisy files."""
    from sezoo.data.audio import list_audio
    from sezoo.data.datamodule import data_root

    if folder is None:
        folder = data_root() / "mini" / "val" / "noisy"
        hint = "build the corpus (`make data`) or pass --calibration FOLDER"
    else:
        hint = "pass a folder of noisy recordings"
    folder = Path(folder)
    files = list_audio(folder) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no audio to calibrate the int8 ranges in {folder}: {hint}")
    return files[:count]


def _recorded_feeds(float_folder: Path, files: list[Path]) -> list[dict]:
    """The ONNX feeds of every step when ``files`` stream through the float export, state included."""
    from sezoo.data.audio import read_audio
    from sezoo.streaming import Framing, FrameStreamer, OnnxStep, stream_enhance

    class RecordingStep(OnnxStep):
        def __init__(self, folder):
            super().__init__(folder)
            self.feeds = []

        def __call__(self, frame, valid):
            feed = {name: value for name, value, fed in zip(self.state_names, self.state, self._state_fed) if fed}
            feed["frame"] = frame.copy()
            if self._takes_valid:
                feed["valid"] = self.valid_feed(valid)
            self.feeds.append(feed)
            return super().__call__(frame, valid)

    step = RecordingStep(float_folder)
    meta = step.meta
    for path in files:
        streamer = FrameStreamer(Framing(**meta["framing"]), step, meta["delay_frames"], meta["latency_samples"])
        stream_enhance(streamer, read_audio(path, meta["sample_rate"]).numpy(), meta["framing"]["hop"])
    return step.feeds


def quantize_calibrated(float_folder: Path, out_folder: Path, files: list[Path]) -> dict:
    """ONNX Runtime's static QDQ quantization of ``float_folder``'s step graph into ``out_folder``."""
    from sezoo.streaming import ONNX_FILE

    feeds = _recorded_feeds(float_folder, files)
    root = logging.getLogger()  # the quantizer warns on the root logger about every node it leaves in float
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        _quantize_static(float_folder / ONNX_FILE, out_folder / ONNX_FILE, feeds)
    finally:
        root.setLevel(level)
    return {"route": "calibrated", "method": "onnxruntime quantize_static, QDQ, MinMax, int8 weights per channel, "
            "int8 activations", "calibration_files": [p.name for p in files], "calibration_steps": len(feeds)}


def _quantize_static(source: Path, target: Path, feeds: list[dict]) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="sezoo-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), Feeds(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibMaxIntermediateOutputs": 256})  # bounded memory over the steps


def export_int8(model: nn.Module, folder: str | Path, calibration: str | Path | None = None) -> Path:
    """The int8 streaming export of ``model`` in ``folder`` (the same files as :func:`export_onnx`, with
    an ``int8`` record in ``stream.json``): trained ranges for a QAT model, calibrated ones otherwise."""
    from sezoo.streaming import ONNX_FILE, ONNX_META, ONNX_STATE, export_onnx

    folder = Path(folder)
    if is_qat(model):
        if calibration is not None:
            raise ValueError("--calibration applies to float models only: a QAT model's int8 export keeps its "
                             "trained ranges")
        qdq, summary = with_qdq_sites(model)
        export_onnx(qdq, folder)
        record = {"route": "qat", "method": "trained ranges as QuantizeLinear/DequantizeLinear, weights as int8 codes",
                  "int8_sites": len(summary["int8"]), "float_sites": summary["float"]}
    else:
        files = calibration_files(calibration)
        with tempfile.TemporaryDirectory(prefix="sezoo-float-") as tmp:
            float_folder = export_onnx(model, tmp)
            folder.mkdir(parents=True, exist_ok=True)
            record = quantize_calibrated(float_folder, folder, files)
            for name in (ONNX_META, ONNX_STATE):
                shutil.copyfile(float_folder / name, folder / name)
    meta = json.loads((folder / ONNX_META).read_text())
    meta["int8"] = record
    (folder / ONNX_META).write_text(json.dumps(meta, indent=1))
    assert (folder / ONNX_FILE).exists()
    return folder


def int8_bytes(folder: str | Path) -> int:
    """Bytes of the weights stored as 8-bit integers in an export (initializers of more than one element:
    the scalars are zero points)."""
    import onnx

    from sezoo.streaming import ONNX_FILE

    graph = onnx.load(str(Path(folder) / ONNX_FILE)).graph
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    sizes = (int(np.prod(t.dims, dtype=np.int64)) for t in graph.initializer if t.data_type in eight_bit)
    return sum(size for size in sizes if size > 1)
