"""Integer references: what a microcontroller computes for a fake-quantized recurrent layer.

The arithmetic is CMSIS-NN's: integer codes, int32 accumulators for the matrix-vector products,
int64 products with a fixed-point multiplier and a rounding right shift for every rescaling (ties to
even, as the fake quantizer's ``nearbyint``), lookup tables for sigmoid and tanh. The TinyLSTM check
(``recipes/tinylstm/integer_check.py``) and the mixed-precision GRU (:class:`IntegerGRU`) share it.

A multiplier here is an int64 with :data:`SHIFT` fraction bits. At mixed widths a rescaling can be
far above 1 (a 2-bit output re-read at 8 bits), which a 32-bit multiplier holds only with a per-term
shift; int64 at one shift is the same arithmetic, written once.
"""
from __future__ import annotations

import numpy as np
import torch

SHIFT = 30  # fixed-point fraction bits of every requantization multiplier


def multiplier(real: float) -> np.ndarray:
    """``real`` as an int64 with :data:`SHIFT` fraction bits."""
    m = round(real * 2 ** SHIFT)
    if not 0 <= m < 2 ** 52:
        raise ValueError(f"requantization multiplier {real} does not fit 52 bits at shift {SHIFT}")
    return np.array(m, dtype=np.int64)


def lookup_table(fn, in_scale: float, in_codes: np.ndarray, out_scale: float, out_min: int, out_max: int) -> np.ndarray:
    """The nonlinearity on every input code, rounded half to even as the fake quantizer does."""
    values = fn(in_codes.astype(np.float64) * np.float32(in_scale))
    return np.clip(np.rint(values / np.float32(out_scale)), out_min, out_max).astype(np.int32)


def requantize(acc: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """int64 value with :data:`SHIFT` fraction bits -> nearest integer, saturated to ``[lo, hi]``.

    Ties go to the even neighbour, as the fake quantizer's ``nearbyint`` does: with the scales QAT
    learns, exact ties are common (a cell range of 254/255 makes i*g land on k + 1/2 for every odd k),
    and rounding them up would make the reference drift from the PyTorch model.
    """
    acc = np.asarray(acc, dtype=np.int64)
    floor = acc >> SHIFT
    rest = acc - (floor << SHIFT)
    half = 1 << (SHIFT - 1)
    return np.clip(floor + ((rest > half) | ((rest == half) & (floor % 2 == 1))), lo, hi)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


# ---------------------------------------------------------------------------- the GRU step
class IntegerGRU:
    """One :class:`~sezoo.nn.gru.QuantGRULayer` with every site quantized, in integer arithmetic.

    Built from the layer (:meth:`from_layer`) into plain integer tensors (:attr:`tensors`, what a
    target flashes: weight codes, int64 biases at the accumulator's fraction bits, multipliers and
    lookup tables) and run from those alone. Each site keeps its own width: codes are saturated to
    that site's range, so a 3-bit r_hn really has 7 levels here too.
    """

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.t = tensors
        self.hidden = int(tensors["w_hh"].shape[1])

    def _range(self, site: str) -> tuple[int, int]:
        lo, hi = self.t[f"range.{site}"]
        return int(lo), int(hi)

    @classmethod
    @torch.no_grad()
    def from_layer(cls, layer, input_scale: float) -> IntegerGRU:
        from sezoo.nn.gru import GRU_SITES

        missing = [name for name in GRU_SITES if getattr(layer, name).quantizer is None]
        if missing:
            raise ValueError(f"the integer GRU needs every site quantized; these are float: {missing}")
        q = {name: getattr(layer, name).quantizer for name in GRU_SITES}
        s = {name: q[name].scale_for(getattr(layer, "weight_ih" if name == "w_ih" else "weight_hh"))
             if name in ("w_ih", "w_hh") else q[name].scale_for(torch.zeros(1)) for name in GRU_SITES}
        t: dict[str, np.ndarray] = {f"range.{n}": np.array([q[n].qmin, q[n].qmax], np.int64) for n in GRU_SITES}
        t["w_ih"] = np.rint(layer.weight_ih.numpy() / np.float32(s["w_ih"])).astype(np.int32)
        t["w_hh"] = np.rint(layer.weight_hh.numpy() / np.float32(s["w_hh"])).astype(np.int32)
        t["b_ih"] = np.rint(layer.bias_ih.numpy().astype(np.float64) / s["ih_out"] * 2 ** SHIFT).astype(np.int64)
        t["b_hh"] = np.rint(layer.bias_hh.numpy().astype(np.float64) / s["hh_out"] * 2 ** SHIFT).astype(np.int64)
        t |= {
            "m_ih": multiplier(s["w_ih"] * input_scale / s["ih_out"]),
            "m_hh": multiplier(s["w_hh"] * s["state"] / s["hh_out"]),
            "m_r_i": multiplier(s["ih_out"] / s["r_pre"]), "m_r_h": multiplier(s["hh_out"] / s["r_pre"]),
            "m_z_i": multiplier(s["ih_out"] / s["z_pre"]), "m_z_h": multiplier(s["hh_out"] / s["z_pre"]),
            "m_r_hn": multiplier(s["r_sigmoid"] * s["hh_out"] / s["r_hn"]),
            "m_n_i": multiplier(s["ih_out"] / s["n_pre"]), "m_n_rhn": multiplier(s["r_hn"] / s["n_pre"]),
            "m_new": multiplier(s["z_sigmoid"] * s["n_tanh"] / s["new_part"]),
            "m_kept": multiplier(s["z_sigmoid"] * s["state"] / s["kept_part"]),
            "m_h_new": multiplier(s["new_part"] / s["state"]), "m_h_kept": multiplier(s["kept_part"] / s["state"]),
        }
        for table, pre, out, fn in (("lut_r", "r_pre", "r_sigmoid", _sigmoid), ("lut_z", "z_pre", "z_sigmoid", _sigmoid),
                                    ("lut_n", "n_pre", "n_tanh", np.tanh)):
            codes = np.arange(q[pre].qmin, q[pre].qmax + 1)
            t[table] = lookup_table(fn, s[pre], codes, s[out], q[out].qmin, q[out].qmax)
        # 1 - z in z's codes: z's scale is 1 / qmax exactly (a fixed range of 1), so 1 is qmax codes.
        t["z_one"] = np.array(q["z_sigmoid"].qmax, np.int64)
        return cls(t)

    def input_projection(self, x: np.ndarray) -> np.ndarray:
        """Input codes ``[T, in]`` -> ih_out codes ``[T, 3H]`` (the half of every step that needs no state)."""
        acc = x.astype(np.int64) @ self.t["w_ih"].T.astype(np.int64)
        return requantize(acc * self.t["m_ih"] + self.t["b_ih"], *self._range("ih_out"))

    def step(self, gi: np.ndarray, h: np.ndarray, given: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """ih_out codes ``[3H]`` and state codes ``[H]`` -> every site's codes of the step (``state``: h').

        ``given``: codes to use as the operators' inputs in place of the ones this step computes
        (PyTorch's), so that each operator's arithmetic is checked alone.
        """
        t, H = self.t, self.hidden
        codes: dict[str, np.ndarray] = {}

        def put(name: str, value: np.ndarray) -> np.ndarray:
            codes[name] = value
            return np.asarray(given[name], np.int64) if given is not None and name in given else value

        def table(name: str, pre: str, value: np.ndarray) -> np.ndarray:
            return t[name][value - self._range(pre)[0]].astype(np.int64)

        gh = put("hh_out", requantize((t["w_hh"].astype(np.int64) @ h.astype(np.int64)) * t["m_hh"] + t["b_hh"],
                                      *self._range("hh_out")))
        i_r, i_z, i_n = gi[:H].astype(np.int64), gi[H:2 * H].astype(np.int64), gi[2 * H:].astype(np.int64)
        h_r, h_z, h_n = gh[:H], gh[H:2 * H], gh[2 * H:]
        r_pre = put("r_pre", requantize(i_r * t["m_r_i"] + h_r * t["m_r_h"], *self._range("r_pre")))
        z_pre = put("z_pre", requantize(i_z * t["m_z_i"] + h_z * t["m_z_h"], *self._range("z_pre")))
        r = put("r_sigmoid", table("lut_r", "r_pre", r_pre))
        z = put("z_sigmoid", table("lut_z", "z_pre", z_pre))
        r_hn = put("r_hn", requantize(r * h_n * t["m_r_hn"], *self._range("r_hn")))
        n_pre = put("n_pre", requantize(i_n * t["m_n_i"] + r_hn * t["m_n_rhn"], *self._range("n_pre")))
        n = put("n_tanh", table("lut_n", "n_pre", n_pre))
        new = put("new_part", requantize((t["z_one"] - z) * n * t["m_new"], *self._range("new_part")))
        kept = put("kept_part", requantize(z * h.astype(np.int64) * t["m_kept"], *self._range("kept_part")))
        put("state", requantize(new * t["m_h_new"] + kept * t["m_h_kept"], *self._range("state")))
        return codes

    def run(self, x: np.ndarray) -> np.ndarray:
        """Input codes ``[T, in]`` -> state codes ``[T, H]``, on its own states."""
        gi, h, states = self.input_projection(x), np.zeros(self.hidden, np.int64), []
        for frame in gi:
            h = self.step(frame, h)["state"]
            states.append(h)
        return np.stack(states)


@torch.no_grad()
def gru_site_codes(layer, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The fake-quantized layer's codes at every activation site, ``[T, ...]``, for one input ``[1, T, in]``."""
    from sezoo.nn.gru import GRU_SITES

    captured: dict[str, list[torch.Tensor]] = {}
    hooks = [getattr(layer, name).register_forward_hook(
        lambda module, args, out, name=name: captured.setdefault(name, []).append(out[0] if out.dim() > 1 else out))
        for name in GRU_SITES[2:]]
    try:
        layer.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    codes = {}
    for name, outputs in captured.items():
        scale = getattr(layer, name).quantizer.scale_for(torch.zeros(1))
        stacked = torch.cat(outputs) if name == "ih_out" else torch.stack(outputs)
        codes[name] = torch.round(stacked / scale).numpy().astype(np.int64)
    return codes


def compare_gru(layer, x: torch.Tensor, input_scale: float) -> dict:
    """The integer GRU against the fake-quantized layer on input ``[1, T, in]`` (already on the input
    site's grid), in quantization steps of each site. ``step``: every operator of every step fed
    PyTorch's codes for its inputs (each operator's arithmetic alone: within one step is the bar);
    ``free_running``: the integer GRU on its own states for the whole input, where a one-code
    difference in a 2-bit gate feeds back."""
    reference = IntegerGRU.from_layer(layer, input_scale)
    expected = gru_site_codes(layer, x)
    x_codes = torch.round(x[0] / input_scale).numpy().astype(np.int64)
    gi = reference.input_projection(x_codes)
    worst = {"ih_out": int(np.abs(gi - expected["ih_out"]).max())}
    previous = np.vstack([np.zeros_like(expected["state"][:1]), expected["state"][:-1]])
    for t in range(len(x_codes)):
        given = {name: expected[name][t] for name in expected if name != "ih_out"}
        for name, codes in reference.step(expected["ih_out"][t], previous[t], given).items():
            worst[name] = max(worst.get(name, 0), int(np.abs(codes - expected[name][t]).max()))
    free = np.abs(reference.run(x_codes) - expected["state"])
    return {"frames": int(len(x_codes)), "step_max_difference": worst,
            "step_within_one": all(v <= 1 for v in worst.values()),
            "free_running_max_difference": int(free.max()), "free_running_exact_fraction": float((free == 0).mean()),
            "integer_bytes": int(sum(v.nbytes for v in reference.t.values()))}
