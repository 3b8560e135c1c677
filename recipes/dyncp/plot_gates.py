"""Each block's channel on/off pattern over time for one utterance (like Figure 1 of the paper).

    python recipes/dyncp/plot_gates.py --model RUN_FOLDER --wav NOISY.wav --out gates.png

The top panel is the noisy log-spectrogram; below it one panel per block, channels sorted by how often
they are open, white = computed, black = skipped, with the block's keep ratio in its title.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from sezoo.data.audio import read_audio  # noqa: E402
from sezoo.inference import resolve_model  # noqa: E402


def plot_gates(model, waveform: torch.Tensor, out: Path, title: str = "") -> list[float]:
    if not getattr(model, "gated", False):
        raise ValueError("the model has no channel gates (train the gated stage: stage=gated or stage=all)")
    with torch.no_grad():
        spec = model.stft(waveform[None])
        model.mask(model.features(spec))
    gates = [g[0] for g in model.block_gates()]
    keep = [float(g.mean()) for g in gates]
    fig, axes = plt.subplots(len(gates) + 1, 1, figsize=(9, 1.1 * (len(gates) + 1) + 1), sharex=True)
    seconds = waveform.numel() / model.sample_rate
    axes[0].imshow((spec[0].abs() + 1e-6).log10().numpy(), origin="lower", aspect="auto", cmap="magma",
                   extent=(0, seconds, 0, model.sample_rate / 2000))
    axes[0].set_ylabel("kHz")
    axes[0].set_title(title or "noisy input")
    for k, (ax, g) in enumerate(zip(axes[1:], gates)):
        order = torch.argsort(g.mean(dim=1), descending=True)
        ax.imshow(g[order].numpy(), origin="upper", aspect="auto", cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest", extent=(0, seconds, g.shape[0], 0))
        ax.set_ylabel(f"B{k}", rotation=0, labelpad=12)
        ax.set_yticks([])
        ax.text(1.005, 0.5, f"{100 * keep[k]:.0f}%", transform=ax.transAxes, va="center", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="gated run folder, export or zoo name")
    parser.add_argument("--wav", required=True, help="a noisy utterance")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()
    model = resolve_model(args.model)
    keep = plot_gates(model, read_audio(args.wav, model.sample_rate, 512), Path(args.out), Path(args.wav).name)
    print(f"wrote {args.out}; keep per block: {', '.join(f'{k:.2f}' for k in keep)}; mean {sum(keep) / len(keep):.3f}")


if __name__ == "__main__":
    main()
