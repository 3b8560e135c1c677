"""nsNet2, Microsoft's DNS Challenge baseline, with early exits (Miccini et al., "Dynamic nsNet2", MLSP 2023).

The trunk is nsNet2 as the DNS baseline code defines it: 16 kHz, a 20 ms sqrt-Hann window, 10 ms hop and
320-point FFT (161 bins), input ``log10(max(|X|^2, 1e-12))``; FC 161->400 ReLU, GRU 400, GRU 400,
FC 400->600 ReLU, FC 600->600 ReLU, FC 600->161 sigmoid; the gain is clipped at -80 dB and multiplies
the complex noisy spectrum. 2,687,561 parameters (Microsoft's ONNX holds the same tensors plus two scalar
constants) and 2,681,000 MACs per frame, 268.1 MMAC/s.

Exits. Exit 1 reads the trunk after GRU 1, exit 2 after GRU 2, exit 3 is the trunk's own decoder (the
original output). ``topology`` says what an early exit's branch holds:

- ``"none"``: no early exits: the original nsNet2 (the recipe's dense baseline).
- ``"plain"``: a projection ``hidden -> 161`` and the clipped sigmoid, on the trunk's features as they are.
  The trunk's GRU output then has to be mask-ready for the exit and a good input for the next layer at once.
- ``"split1"`` / ``"split2"``: the paper's split information flow: the branch gets its own copies of the
  decoder layers that follow (``split1``: FC ``hidden -> branch_width`` ReLU; ``split2``: that and
  FC ``branch_width -> branch_width`` ReLU), then its own ``-> 161`` output layer, so that an ancillary
  feature extractor, not the trunk, makes the features mask-ready. ``branch_width=600`` copies the
  decoder's width.

Operating points (:meth:`NsNet2.set_operating_point`), chosen when the model runs:

- ``exit=k``: every frame leaves at exit k; nothing after it is computed.
- ``policy="budget", macs_per_second=X``: a fixed schedule that interleaves the two fixed exits around
  ``X`` (frame t goes deeper when ``floor((t+1) r) > floor(t r)``, r the share of deep frames), so its
  mean cost is X. This is "mixing fixed exits", the line the adaptive policy has to beat.
- ``policy="adaptive", threshold=p``: :class:`ExitPolicy` decides per frame, from the features at
  hand, whether to continue past exit 1 and then past exit 2; ``p`` (the probability to continue that
  it takes to go on) trades quality for MACs at run time.

A frame that leaves early computes nothing after its exit. GRU 2 is then not run on that frame and its
state is *held* (the skip-RNN convention: the deeper GRU sees only the frames that reached it, as if the
others were not there). Offline this is exactly GRU 2 run on the subsequence of frames that reach it,
which is how :meth:`NsNet2.forward` computes it; the streaming step holds the state, and the two agree
(tested).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sezoo.metrics.cost import counting_upper_bound, ledger_active, report_macs
from sezoo.models._base import SEModel
from sezoo.models._registry import register_model
from sezoo.nn.stft import STFT
from sezoo.streaming import Framing

MIN_GAIN = 10 ** (-80 / 20)  # the baseline clips its gain at -80 dB
TOPOLOGIES = ("none", "plain", "split1", "split2")
POLICIES = ("adaptive", "budget")
EXITS = (1, 2, 3)


def log_power(magnitude: torch.Tensor) -> torch.Tensor:
    """The DNS baseline's input feature: ``log10`` of the power spectrum, floored at 1e-12."""
    return torch.log10(magnitude.pow(2).clamp_min(1e-12))


def gain(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits).clamp_min(MIN_GAIN)


class ExitBranch(nn.Module):
    """An early exit's own layers: ``copies`` FC+ReLU layers of ``width`` (0: none), then ``-> bins``."""

    def __init__(self, hidden: int, bins: int, copies: int, width: int):
        super().__init__()
        layers, size = [], hidden
        for _ in range(copies):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        self.layers = nn.Sequential(*layers, nn.Linear(size, bins))

    @property
    def macs_per_frame(self) -> int:
        return sum(m.weight.numel() for m in self.layers if isinstance(m, nn.Linear))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return gain(self.layers(h))


class ExitPolicy(nn.Module):
    """Per frame, whether to continue past exit 1 (from GRU 1's output) and past exit 2 (from GRU 2's).

    One linear score per decision, ``p = sigmoid(score)`` the probability to continue. Training samples
    a hard decision with logistic noise at ``temperature`` and passes the gradient straight through
    (the binary Gumbel-softmax), so the enhanced output and the cost are both differentiable in the
    scores; evaluation continues where ``p > threshold``.

    It is a utilization source (:class:`sezoo.callbacks.UtilizationLoss`): ``last_utilization`` is the
    mean executed MACs per frame as a fraction of the full nsNet2's, so the callback's ``target`` is the
    MAC budget as a share of the dense model.
    """

    def __init__(self, hidden: int, temperature: float = 1.0):
        super().__init__()
        self.scores = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(2))
        self.temperature = temperature
        self.last_utilization: torch.Tensor | None = None
        self.last_depth: torch.Tensor | None = None  # [B, T] exit taken per frame (1..3), last forward

    @property
    def macs_per_decision(self) -> int:
        return self.scores[0].weight.numel()

    def probability(self, h: torch.Tensor, decision: int) -> torch.Tensor:
        """``[..., hidden]`` -> the probability to continue past exit ``decision + 1``, ``[...]``."""
        return torch.sigmoid(self.scores[decision](h)[..., 0])

    def sample(self, h: torch.Tensor, decision: int) -> torch.Tensor:
        """Training: a hard 0/1 decision ``[...]`` whose gradient is the relaxed one's."""
        logits = self.scores[decision](h)[..., 0]
        uniform = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logits + torch.log(uniform) - torch.log1p(-uniform)) / self.temperature)
        return (soft > 0.5).to(soft.dtype) + soft - soft.detach()


@register_model("nsnet2")
class NsNet2(SEModel):
    """Args:
        topology: ``"none"`` (the original nsNet2), ``"plain"``, ``"split1"`` or ``"split2"`` (see the module).
        n_fft: FFT size and window length (sqrt-Hann); 320 at 16 kHz is the baseline's 20 ms.
        hop: samples per frame (160: 10 ms).
        hidden: width of the input FC and of both GRUs (400).
        decoder: width of the two decoder FC layers (600).
        branch_width: width of a split branch's own FC layers (600: copies of the decoder's).
        sample_rate: the rate the model was trained at.
    """

    def __init__(self, topology: str = "plain", n_fft: int = 320, hop: int = 160, hidden: int = 400,
                 decoder: int = 600, branch_width: int = 600, sample_rate: int = 16000):
        super().__init__()
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology={topology!r}: choose from {', '.join(TOPOLOGIES)}")
        self.topology, self.sample_rate = topology, sample_rate
        self.stft = STFT(n_fft, hop, "sqrt_hann")
        bins = self.stft.n_bins
        self.encoder = nn.Linear(bins, hidden)
        self.gru1 = nn.GRU(hidden, hidden, batch_first=True)
        self.gru2 = nn.GRU(hidden, hidden, batch_first=True)
        self.decoder = nn.Sequential(nn.Linear(hidden, decoder), nn.ReLU(), nn.Linear(decoder, decoder), nn.ReLU(),
                                     nn.Linear(decoder, bins))
        copies = {"plain": 0, "split1": 1, "split2": 2}.get(topology)
        self.exits = nn.ModuleList() if copies is None else nn.ModuleList(
            ExitBranch(hidden, bins, copies, branch_width) for _ in range(2))
        self.policy = None if copies is None else ExitPolicy(hidden)
        self.exit, self.policy_name, self.threshold, self.budget = 3, None, 0.5, None

    # ------------------------------------------------------------------ operating points
    @property
    def n_exits(self) -> int:
        return len(self.exits) + 1

    def set_operating_point(self, exit: int | None = None, policy: str | None = None, threshold: float = 0.5,
                            macs_per_second: float | None = None) -> None:
        """``exit=k`` (a fixed exit), ``policy="adaptive"`` (with ``threshold``) or ``policy="budget"``
        (with ``macs_per_second``); see the module's docstring."""
        if (exit is None) == (policy is None):
            raise ValueError(f"set_operating_point: give exit=1..{self.n_exits} or policy={'|'.join(POLICIES)}, "
                             f"not both; got exit={exit}, policy={policy}")
        if exit is not None:
            if exit not in range(1, self.n_exits + 1):
                raise ValueError(f"exit={exit}: this nsNet2 (topology={self.topology}) has exits 1..{self.n_exits}")
            self.exit, self.policy_name = int(exit), None
            if self.policy is not None:  # a fixed exit is static: it is no utilization source while it holds
                self.policy.last_utilization = self.policy.last_depth = None
            return
        if policy not in POLICIES:
            raise ValueError(f"policy={policy!r}: choose from {', '.join(POLICIES)}")
        if self.policy is None:
            raise ValueError(f"policy={policy}: topology={self.topology} has no early exits")
        if policy == "adaptive":
            if not 0.0 < threshold < 1.0:
                raise ValueError(f"threshold={threshold}: a probability in (0, 1)")
            self.threshold = float(threshold)
        else:
            low, high = self.exit_macs_per_second(1), self.exit_macs_per_second(3)
            if macs_per_second is None or not low <= macs_per_second <= high:
                raise ValueError(f"policy=budget: macs_per_second={macs_per_second} must lie between exit 1's "
                                 f"{low:.4g} and exit 3's {high:.4g}")
            self.budget = float(macs_per_second)
        self.policy_name = policy

    @property
    def reports_own_macs(self) -> bool:
        # A policy's MACs depend on the input; the model reports what ran (the FLOP counter sees the same
        # work, as each layer runs on the frames that reach it: tests compare the two).
        return self.policy_name is not None

    # ------------------------------------------------------------------ cost (closed form)
    def _costs(self) -> dict[str, int]:
        h = self.gru1.hidden_size
        return {"encoder": self.encoder.weight.numel(), "gru": 3 * h * (self.gru1.input_size + h),
                "decoder": sum(m.weight.numel() for m in self.decoder if isinstance(m, nn.Linear)),
                "exits": [e.macs_per_frame for e in self.exits],
                "decision": self.policy.macs_per_decision if self.policy is not None else 0}

    def exit_macs_per_frame(self, exit: int) -> int:
        """MACs of a frame that leaves at a fixed ``exit`` (no policy)."""
        c = self._costs()
        trunk = c["encoder"] + min(exit, 2) * c["gru"]
        return trunk + (c["decoder"] if exit == 3 else c["exits"][exit - 1])

    def exit_macs_per_second(self, exit: int) -> float:
        return self.exit_macs_per_frame(exit) * self.sample_rate / self.stft.hop

    def depth_macs_per_frame(self, depth: int) -> int:
        """MACs of a frame that an adaptive policy sends to exit ``depth`` (its decisions included)."""
        return self.exit_macs_per_frame(depth) + min(depth, 2) * self._costs()["decision"]

    def _budget_share(self) -> tuple[int, int, int]:
        """The budget policy: (shallow exit, deep exit, permille of frames that go to the deep one)."""
        per_frame = self.budget * self.stft.hop / self.sample_rate
        costs = [self.exit_macs_per_frame(k) for k in EXITS]
        shallow = 1 if per_frame <= costs[1] else 2
        low, high = costs[shallow - 1], costs[shallow]
        return shallow, shallow + 1, int(round(1000 * (per_frame - low) / (high - low)))

    # ------------------------------------------------------------------ offline
    def features(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] -> (complex spectrum [B, bins, frames], encoder output [B, frames, hidden])."""
        spec = self.stft(waveform)
        return spec, F.relu(self.encoder(log_power(spec.abs()).transpose(1, 2)))

    def exit_masks(self, waveform: torch.Tensor, upto: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Training: every exit's gain on every frame. ``upto``: only exits 1..upto (layer-wise stages).
        Returns the spectrum and ``[gain [B, frames, bins] per exit]``."""
        upto = 3 if not self.exits or upto is None else upto  # topology none: its one exit is exit 3
        spec, x = self.features(waveform)
        h1, _ = self.gru1(x)
        masks = [self.exits[0](h1)] if self.exits else []
        if upto >= 2:
            h2, _ = self.gru2(h1)
            if self.exits:
                masks.append(self.exits[1](h2))
            if upto >= 3:
                masks.append(gain(self.decoder(h2)))
        return spec, masks

    def apply_mask(self, spec: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
        return self.stft.inverse(spec * mask.transpose(1, 2), length)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, T] noisy -> [B, T] enhanced at the operating point."""
        spec = self.stft(waveform)
        if self.policy_name is not None and self.training:
            mask = self._relaxed_policy_mask(waveform)
        else:
            mask = torch.stack([self._executed_mask(spec[b:b + 1])[0] for b in range(spec.shape[0])])
        return self.apply_mask(spec, mask, waveform.shape[-1])

    def _relaxed_policy_mask(self, waveform: torch.Tensor) -> torch.Tensor:
        """Training the adaptive policy: all exits on all frames, mixed by the sampled hard decisions."""
        spec, x = self.features(waveform)
        h1, _ = self.gru1(x)
        h2, _ = self.gru2(h1)
        m1, m2, m3 = self.exits[0](h1), self.exits[1](h2), gain(self.decoder(h2))
        go2, go3 = self.policy.sample(h1, 0)[..., None], self.policy.sample(h2, 1)[..., None]
        mask = (1 - go2) * m1 + go2 * ((1 - go3) * m2 + go3 * m3)
        depth_cost = [self.depth_macs_per_frame(d) for d in EXITS]
        cost = depth_cost[0] + go2 * ((depth_cost[1] - depth_cost[0]) + go3 * (depth_cost[2] - depth_cost[1]))
        self.policy.last_utilization = cost.mean() / self.exit_macs_per_frame(3)
        self.policy.last_depth = (1 + go2 + go2 * go3)[..., 0].detach()
        return mask

    def _schedule(self, frames: int, device) -> tuple[torch.Tensor, int, int]:
        """Budget policy: which frames go deep ([frames] bool), the shallow and the deep exit."""
        shallow, deep, permille = self._budget_share()
        t = torch.arange(frames, device=device)
        return ((t + 1) * permille // 1000) > (t * permille // 1000), shallow, deep

    def _executed_mask(self, spec: torch.Tensor) -> torch.Tensor:
        """One utterance ``[1, bins, frames]``: each layer runs on the frames that reach it. -> [1, frames, bins]."""
        x = F.relu(self.encoder(log_power(spec.abs()).transpose(1, 2)))[0]  # [frames, hidden]
        frames = x.shape[0]
        depth = torch.full((frames,), 3 if self.policy_name is None else 1, dtype=torch.long, device=x.device)
        if self.policy_name is None:
            depth.fill_(self.exit)
        elif counting_upper_bound():  # the bound: every frame as deep as a frame can go
            depth.fill_(3)
        if self.policy_name == "budget" and not counting_upper_bound():
            deep, shallow, _ = self._schedule(frames, x.device)
            depth = shallow + deep.long()
        h1 = self.gru1(x[None])[0][0]
        if self.policy_name == "adaptive":  # the bound counts the decisions too
            go_on = self.policy.probability(h1, 0) > self.threshold
            depth = torch.full_like(depth, 2) if counting_upper_bound() else 1 + go_on.long()
        mask = x.new_zeros(frames, self.stft.n_bins)
        at1 = depth == 1
        if at1.any():
            mask[at1] = self.exits[0](h1[at1])
        reach2 = (~at1).nonzero()[:, 0]
        if reach2.numel():
            h2 = self.gru2(h1[reach2][None])[0][0]  # GRU 2 on the frames that reach it: its state is held
            if self.policy_name == "adaptive":
                go_on = self.policy.probability(h2, 1) > self.threshold
                depth[reach2] = 3 if counting_upper_bound() else 2 + go_on.long()
            at3 = depth[reach2] == 3
            if (~at3).any():
                mask[reach2[~at3]] = self.exits[1](h2[~at3])
            if at3.any():
                mask[reach2[at3]] = gain(self.decoder(h2[at3]))
        if self.policy_name is not None:  # only a policy's cost depends on the input
            self.policy.last_depth = depth[None]
            per_depth = torch.tensor([self._executed_depth_macs(d) for d in EXITS], dtype=torch.float32, device=x.device)
            self.policy.last_utilization = per_depth[depth - 1].mean() / self.exit_macs_per_frame(3)
        if self.reports_own_macs and ledger_active():
            report_macs(int(sum(int((depth == d).sum()) * self._executed_depth_macs(d) for d in EXITS)))
        return mask[None]

    def _executed_depth_macs(self, depth: int) -> int:
        return self.depth_macs_per_frame(depth) if self.policy_name == "adaptive" else self.exit_macs_per_frame(depth)

    # ------------------------------------------------------------------ streaming (sezoo.streaming)
    def stream_framing(self) -> Framing:
        return Framing(self.stft.n_fft, self.stft.hop, "stft_mask", centered=True, window="sqrt_hann")

    def _exported_exits(self, out1: torch.Tensor, gru2: torch.Tensor, depth2: torch.Tensor,
                        depth3: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A policy's step past GRU 1 as nested ``torch.cond``: the graph runs GRU 2 only for a frame that
        goes past exit 1, and the decoder only for one that goes past exit 2 (GRU 2's state is held
        otherwise, as eagerly). ``depth3`` is ``None`` when the policy decides it from GRU 2's output.
        The operands are passed, not closed over: each branch becomes a self-contained ONNX subgraph."""
        decided3 = depth3 is not None
        depth3 = depth3 if decided3 else torch.zeros_like(depth2)

        def past_exit2(h2):
            return gain(self.decoder(h2))

        def leave_at_exit2(h2):
            return self.exits[1](h2)

        def past_exit1(out1, gru2, depth3):
            out2, gru2 = self.gru2(out1, gru2)
            h2 = out2[:, 0]
            go_on = depth3 if decided3 else self.policy.probability(h2, 1) > self.threshold
            return torch.cond(go_on[0], past_exit2, leave_at_exit2, (h2,)), gru2

        def leave_at_exit1(out1, gru2, depth3):
            return self.exits[0](out1[:, 0]), gru2.clone()

        return torch.cond(depth2[0], past_exit1, leave_at_exit1, (out1, gru2, depth3))

    def stream_state(self) -> dict[str, torch.Tensor]:
        h = self.gru1.hidden_size
        return {"gru1": torch.zeros(1, 1, h), "gru2": torch.zeros(1, 1, h), "frames_seen": torch.zeros(1, dtype=torch.long)}

    def stream_step(self, magnitude: torch.Tensor, valid: torch.Tensor, gru1: torch.Tensor, gru2: torch.Tensor,
                    frames_seen: torch.Tensor):
        """``|STFT|`` of one frame ``[1, bins]`` and the state -> its gain ``[1, bins]`` and the new state.

        Only the layers up to the frame's exit run: eagerly by Python branches, and in an exported graph
        by ``torch.cond`` (an ONNX ``If`` per decision), so a frame that leaves early saves its time in
        ONNX Runtime too, not only its MACs. A fixed exit exports its own path only."""
        x = F.relu(self.encoder(log_power(magnitude)))[:, None]
        out1, gru1 = self.gru1(x, gru1)
        h1 = out1[:, 0]
        if self.policy_name is None:
            depth2 = depth3 = None
        elif self.policy_name == "budget":
            shallow, _, permille = self._budget_share()
            deep = ((frames_seen + 1) * permille // 1000) > (frames_seen * permille // 1000)
            depth2 = deep if shallow == 1 else torch.ones_like(deep)
            depth3 = deep if shallow == 2 else torch.zeros_like(deep)
        else:
            depth2 = self.policy.probability(h1, 0) > self.threshold
            depth3 = None  # decided from GRU 2's output
        frames_seen = frames_seen + 1
        if torch.compiler.is_exporting() and self.policy_name is not None:
            mask, gru2 = self._exported_exits(out1, gru2, depth2, depth3)
            return mask, gru1, gru2, frames_seen
        if (self.exit == 1 if depth2 is None else not bool(depth2)):
            return self.exits[0](h1), gru1, gru2, frames_seen
        out2, gru2 = self.gru2(out1, gru2)
        h2 = out2[:, 0]
        if depth2 is not None and depth3 is None:
            depth3 = self.policy.probability(h2, 1) > self.threshold
        if (self.exit == 2 if depth3 is None else not bool(depth3)):
            return self.exits[1](h2), gru1, gru2, frames_seen
        return gain(self.decoder(h2)), gru1, gru2, frames_seen
