"""Sparsity masks: which weights a structure groups together, how a group is scored, and the 0/1 masks
that keep the highest-scoring groups. :class:`sezoo.callbacks.PruningSchedule` drives them during
training; they hold no Lightning, so a user's own loop can call them too.

Three structures (paper 4 of PAPERS.md, as a microNPU would exploit them):

- ``weight``: each element is a group, scored by its magnitude (unstructured; saves memory, not MACs);
- ``block``: a tensor viewed as ``[shape[0], rest]`` is cut into ``rows x cols`` blocks, each scored by
  its L2 norm (a kernel skips a zero block); edge blocks are partial;
- ``unit``: a module's units, each with every weight that feeds it, scored by their joint L2 norm:
  an LSTM/GRU unit is its gate rows of both matrices and both biases plus its column of the recurrent
  matrix (a pruned unit's state and output stay exactly 0); a convolution or linear layer's unit is an
  output channel with its bias. Removing pruned units gives a smaller dense model (``compact()``).

A mask prunes exactly ``round(sparsity * groups)`` groups, the lowest-scoring ones (ties by position),
so the sparsity reached is the sparsity asked for, not a threshold's approximation of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

STRUCTURES = ("weight", "block", "unit")


@dataclass(frozen=True)
class UnitSlice:
    """Where a module's units lie in one of its parameters: along ``dim``, in ``chunks`` equal parts
    (an LSTM's four gates, a GRU's three; 1 elsewhere), unit ``j`` at ``j + k * units`` of each part."""
    param: str
    dim: int
    chunks: int = 1

    def indices(self, unit_ids: torch.Tensor, units: int) -> torch.Tensor:
        return torch.cat([unit_ids + k * units for k in range(self.chunks)])


def unit_layout(module: nn.Module) -> list[tuple[str, int, list[UnitSlice]]]:
    """A module's unit groups as ``(suffix, units, slices)``: one per layer of a multi-layer RNN, else one.
    Raises for a module whose units it does not know (name it in ``include`` only if it is one of these)."""
    if isinstance(module, (nn.LSTM, nn.GRU)):
        if module.bidirectional or getattr(module, "proj_size", 0):
            raise ValueError(f"unit pruning of {type(module).__name__}: bidirectional or projected RNNs are not "
                             f"supported; prune them with structure='weight' or 'block'")
        chunks = 4 if isinstance(module, nn.LSTM) else 3
        layers = []
        for k in range(module.num_layers):
            slices = [UnitSlice(f"weight_ih_l{k}", 0, chunks), UnitSlice(f"weight_hh_l{k}", 0, chunks),
                      UnitSlice(f"weight_hh_l{k}", 1, 1)]
            if module.bias:
                slices += [UnitSlice(f"bias_ih_l{k}", 0, chunks), UnitSlice(f"bias_hh_l{k}", 0, chunks)]
            layers.append((f"l{k}", module.hidden_size, slices))
        return layers
    weight_ih, weight_hh = getattr(module, "weight_ih", None), getattr(module, "weight_hh", None)
    if isinstance(weight_ih, nn.Parameter) and isinstance(weight_hh, nn.Parameter):
        # A hand-written recurrent layer (sezoo's QuantLSTMLayer, a quantizable GRU): gate rows stacked
        # along dim 0 as in PyTorch's RNNs, the recurrent matrix square in the hidden size.
        units = weight_hh.shape[1]
        chunks = weight_hh.shape[0] // units
        slices = [UnitSlice("weight_ih", 0, chunks), UnitSlice("weight_hh", 0, chunks), UnitSlice("weight_hh", 1, 1)]
        slices += [UnitSlice(name, 0, chunks) for name, p in module.named_parameters(recurse=False)
                   if name.startswith("bias") and p.shape[0] == chunks * units]
        return [("", units, slices)]
    weight = getattr(module, "weight", None)
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and isinstance(weight, nn.Parameter):
        transposed = getattr(module, "transposed", False)
        dim = 1 if transposed else 0  # ConvTranspose stores [in, out / groups, ...]
        if transposed and getattr(module, "groups", 1) != 1:
            raise ValueError(f"unit pruning of a grouped {type(module).__name__} is not supported")
        slices = [UnitSlice("weight", dim)] + ([UnitSlice("bias", 0)] if module.bias is not None else [])
        return [("", weight.shape[dim], slices)]
    raise ValueError(f"unit pruning: no unit layout for {type(module).__name__} (known: nn.LSTM, nn.GRU, recurrent "
                     f"layers with weight_ih/weight_hh, nn.Linear, convolutions)")


def matrix_shape(shape: torch.Size) -> tuple[int, int]:
    """A tensor as the matrix a kernel sees: ``[shape[0], everything else]`` (a vector: one row)."""
    return (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, math.prod(shape))


def block_norms(weight: torch.Tensor, block_shape: tuple[int, int]) -> torch.Tensor:
    """L2 norm of each ``rows x cols`` block of ``weight`` viewed as a matrix: ``[block rows, block cols]``
    (edge blocks are partial)."""
    (bh, bw), (rows, cols) = block_shape, matrix_shape(weight.shape)
    padded = nn.functional.pad(weight.detach().float().reshape(rows, cols), (0, -cols % bw, 0, -rows % bh))
    blocks = padded.view(padded.shape[0] // bh, bh, padded.shape[1] // bw, bw)
    return blocks.pow(2).sum(dim=(1, 3)).sqrt()


def nonzero_blocks(weight: torch.Tensor, block_shape: tuple[int, int]) -> int:
    """The blocks of ``weight`` that hold a non-zero: those a block-sparse kernel still multiplies."""
    return int((block_norms(weight, block_shape) > 0).sum())


def skipped_block_elements(weight: torch.Tensor, block_shape: tuple[int, int]) -> int:
    """The elements of ``weight`` inside all-zero blocks: the multiply-accumulates a block-sparse kernel
    skips each time it applies ``weight`` to one input vector (partial edge blocks count what they hold).
    Zeros scattered in blocks that hold a non-zero are still multiplied."""
    (bh, bw), (rows, cols) = block_shape, matrix_shape(weight.shape)
    zero = (block_norms(weight, block_shape) == 0).float()
    heights = torch.full((zero.shape[0],), float(bh)).index_fill_(0, torch.tensor([zero.shape[0] - 1]), rows - bh * (zero.shape[0] - 1))
    widths = torch.full((zero.shape[1],), float(bw)).index_fill_(0, torch.tensor([zero.shape[1] - 1]), cols - bw * (zero.shape[1] - 1))
    return int(heights @ zero @ widths)


class MaskGroup:
    """The masks of one prunable set: one tensor (``weight``, ``block``) or one module's units (``unit``).

    ``params`` maps each parameter's full name to the parameter; ``name`` is the tensor's name or, for
    units, the module's (its parameters' names are ``name.param``). The state is ``keep``, one bool per
    group (element, block or unit); the element masks follow from it.
    """

    def __init__(self, name: str, structure: str, params: dict[str, nn.Parameter],
                 block_shape: tuple[int, int] = (1, 1), units: int = 0, slices: list[UnitSlice] = (),
                 label: str | None = None):
        if structure not in STRUCTURES:
            raise ValueError(f"structure {structure!r}: choose one of {STRUCTURES}")
        self.name, self.structure, self.params = name, structure, params
        self.label = label or name  # how logs, checkpoints and reports name the set
        self.block_shape, self.units, self.slices = tuple(block_shape), units, list(slices)
        self.keep = torch.ones(self.n_groups, dtype=torch.bool)
        self.masks = self._masks()

    @property
    def n_groups(self) -> int:
        if self.structure == "unit":
            return self.units
        (p,) = self.params.values()
        if self.structure == "weight":
            return p.numel()
        rows, cols = matrix_shape(p.shape)
        return math.ceil(rows / self.block_shape[0]) * math.ceil(cols / self.block_shape[1])

    def _param_name(self, s: UnitSlice) -> str:
        return f"{self.name}.{s.param}" if self.name else s.param

    @torch.no_grad()
    def scores(self) -> torch.Tensor:
        """One score per group, flat, in the order of ``keep``."""
        if self.structure == "weight":
            (p,) = self.params.values()
            return p.detach().abs().flatten().float()
        if self.structure == "block":
            (p,) = self.params.values()
            return block_norms(p, self.block_shape).flatten()
        squares = torch.zeros(self.units)
        for s in self.slices:
            p = self.params[self._param_name(s)].detach().float().cpu()
            squares += p.movedim(s.dim, 0).reshape(s.chunks, self.units, -1).pow(2).sum(dim=(0, 2))
        return squares.sqrt()

    # ------------------------------------------------------------------ masks
    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Prune exactly ``round(sparsity * n_groups)`` lowest-scoring groups (ties by position)."""
        scores = self.scores().cpu()
        keep = torch.ones(scores.numel(), dtype=torch.bool)
        keep[torch.argsort(scores, stable=True)[:int(round(sparsity * scores.numel()))]] = False
        self.set_keep(keep)

    def set_keep(self, keep: torch.Tensor) -> None:
        if keep.shape != (self.n_groups,):
            raise ValueError(f"{self.name or 'masks'}: {keep.numel()} group flags for {self.n_groups} {self.structure} groups")
        self.keep = keep.bool().cpu()
        self.masks = self._masks()

    def _masks(self) -> dict[str, torch.Tensor]:
        if self.structure in ("weight", "block"):
            (name, p), = self.params.items()
            if self.structure == "weight":
                return {name: self.keep.view(p.shape).to(p.device)}
            rows, cols = matrix_shape(p.shape)
            (bh, bw) = self.block_shape
            grid = self.keep.view(math.ceil(rows / bh), math.ceil(cols / bw))
            full = grid.repeat_interleave(bh, dim=0).repeat_interleave(bw, dim=1)[:rows, :cols]
            return {name: full.reshape(p.shape).to(p.device)}
        masks = {name: torch.ones_like(p, dtype=torch.bool) for name, p in self.params.items()}
        pruned = torch.nonzero(~self.keep).flatten()
        for s in self.slices:
            mask = masks[self._param_name(s)]
            mask.index_fill_(s.dim, s.indices(pruned, self.units).to(mask.device), False)
        return masks

    @torch.no_grad()
    def apply(self) -> None:
        for name, p in self.params.items():
            p.mul_(self.masks[name])

    def sparsity(self) -> dict[str, float]:
        """Each parameter's share of pruned elements (what its mask zeroes)."""
        return {name: 1.0 - float(mask.float().mean()) for name, mask in self.masks.items()}

    def group_sparsity(self) -> float:
        """The share of this set's groups (elements, blocks or units) that are pruned."""
        return 1.0 - float(self.keep.float().mean())
