"""PruningSchedule: raise a network's sparsity on a schedule during training, in one of three structures.

Works on any LightningModule: ``attribute`` names the network inside it (``None``: the module itself).
Every ``update_every`` optimizer steps between ``start`` and ``end`` the masks are recomputed from the
weights' current magnitudes at the schedule's sparsity: cubic (Zhu & Gupta 2017,
``s_t = s_f + (s_i - s_f)(1 - p)^3``), linear, or one-shot at ``start``. Between updates the masks are
re-applied before every forward and after every optimizer step, so a pruned weight stays exactly 0.

How it differs from Lightning's ``ModelPruning`` (``torch.nn.utils.prune``), and why:
- the model's state dict never changes: the masks are this callback's checkpoint state and the masked
  weights are zeros in the plain parameters, so a checkpoint loads into the plain model (the lesson of
  Lightning's removed QAT callback), and the QAT callback's fake quantization keeps the zeros;
- the sparsity reached is exactly the target: each update prunes ``round(s * groups)`` groups per
  tensor (or per module for units), and the last update happens at ``end`` (SparseML's known drift);
- block and RNN-unit structures, which ``torch.nn.utils.prune`` does not offer
  (see :mod:`sezoo.nn.sparsity`);
- the checkpoint holds progress only (each group's keep flags and the last update step); the schedule
  is configuration and comes from the constructor, so a resumed run ends with exactly the masks of
  an uninterrupted one.

Args:
    target: the final sparsity, a share of groups (elements, blocks or units) in ``[0, 1)``.
    structure: ``"weight"`` (unstructured), ``"block"`` or ``"unit"``.
    include: ``fnmatch`` patterns, matched against parameter names for ``weight``/``block`` (default
        every ``*weight*`` tensor of two or more dimensions, RNN weights included) or against module
        names for ``unit`` (default every module with a known unit layout).
    exclude: patterns removed from what ``include`` chose (e.g. the output layer).
    block_shape: ``(rows, cols)`` of a block, ``structure="block"`` only.
    schedule: ``"cubic"``, ``"linear"`` or ``"one_shot"``.
    start, end: when the schedule runs, both in optimizer steps (int) or both in fractions of the
        training's steps (float in ``[0, 1]``); ``one_shot`` prunes at ``start`` and takes no ``end``.
    update_every: optimizer steps between mask updates inside ``[start, end]``.
    initial: the sparsity at ``start`` (``s_i``).
    attribute: the LightningModule attribute that holds the network (``None``: the module).
"""
from __future__ import annotations

import fnmatch
import math
import warnings

import lightning as L
import torch
from torch import nn

from sezoo.nn.sparsity import STRUCTURES, MaskGroup, unit_layout

SCHEDULES = ("cubic", "linear", "one_shot")


class PruningSchedule(L.Callback):
    def __init__(self, target: float, structure: str = "weight", include: list[str] | None = None,
                 exclude: list[str] = (), block_shape: tuple[int, int] | None = None, schedule: str = "cubic",
                 start: int | float = 0.0, end: int | float | None = 0.8, update_every: int = 100,
                 initial: float = 0.0, attribute: str | None = "model"):
        if structure not in STRUCTURES:
            raise ValueError(f"PruningSchedule(structure={structure!r}): choose one of {STRUCTURES}")
        if schedule not in SCHEDULES:
            raise ValueError(f"PruningSchedule(schedule={schedule!r}): choose one of {SCHEDULES}")
        if not 0.0 <= initial <= target < 1.0:
            raise ValueError(f"PruningSchedule(initial={initial}, target={target}): need 0 <= initial <= target < 1")
        if structure == "block":
            if block_shape is None or len(block_shape) != 2 or min(block_shape) < 1:
                raise ValueError(f"PruningSchedule(structure='block', block_shape={block_shape}): give (rows, cols), "
                                 f"both >= 1, e.g. (1, 8) or (8, 8)")
        elif block_shape is not None:
            raise ValueError(f"PruningSchedule(block_shape={block_shape}) is for structure='block', not {structure!r}")
        if schedule == "one_shot":
            end = start
        elif end is None:
            raise ValueError(f"PruningSchedule(schedule={schedule!r}) needs an end (steps or a fraction of training)")
        if isinstance(start, float) != isinstance(end, float):
            raise ValueError(f"PruningSchedule(start={start!r}, end={end!r}): both in steps (int) or both in "
                             f"fractions of training (float)")
        if isinstance(start, float) and not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"PruningSchedule(start={start}, end={end}): fractions with 0 <= start <= end <= 1")
        if not isinstance(start, float) and not 0 <= start <= end:
            raise ValueError(f"PruningSchedule(start={start}, end={end}): steps with 0 <= start <= end")
        if update_every < 1:
            raise ValueError(f"PruningSchedule(update_every={update_every}): at least 1 step")
        self.target, self.structure, self.schedule, self.initial = float(target), structure, schedule, float(initial)
        self.include = list(include) if include else (["*"] if structure == "unit" else ["*weight*"])
        self.exclude = list(exclude)
        self.block_shape = tuple(block_shape) if block_shape else (1, 1)
        self.start, self.end, self.update_every, self.attribute = start, end, int(update_every), attribute
        self.groups: list[MaskGroup] = []
        self.last_update: int | None = None  # the schedule point the masks were last computed at
        self._restored: dict | None = None
        self._steps: tuple[int, int] | None = None

    # ------------------------------------------------------------------ what is pruned
    def network(self, pl_module: nn.Module) -> nn.Module:
        if self.attribute is None:
            return pl_module
        if not hasattr(pl_module, self.attribute):
            raise AttributeError(f"PruningSchedule(attribute={self.attribute!r}): {type(pl_module).__name__} has no "
                                 f"attribute {self.attribute!r}; name the attribute that holds your network, or pass "
                                 f"attribute=None to prune the module itself")
        return getattr(pl_module, self.attribute)

    def _chosen(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.include) and \
            not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    def build_groups(self, network: nn.Module) -> list[MaskGroup]:
        """The mask groups of ``network`` that ``include``/``exclude`` choose (masks all ones)."""
        groups = []
        if self.structure == "unit":
            for name, module in network.named_modules():
                if not self._chosen(name) or not any(True for _ in module.parameters(recurse=False)):
                    continue  # a container or a parameter-free site has no units of its own
                try:
                    layout = unit_layout(module)
                except ValueError:
                    if self.include == ["*"]:
                        continue  # the default takes every module that has units and skips the rest
                    raise
                params = dict(module.named_parameters(recurse=False))
                for suffix, units, slices in layout:
                    group_params = {f"{name}.{s.param}" if name else s.param: params[s.param] for s in slices}
                    label = ".".join(part for part in (name, suffix) if part) or type(module).__name__
                    groups.append(MaskGroup(name, "unit", group_params, units=units, slices=slices, label=label))
        else:
            for name, p in network.named_parameters():
                if p.dim() >= 2 and self._chosen(name):
                    groups.append(MaskGroup(name, self.structure, {name: p}, self.block_shape))
        if not groups:
            names = [n for n, _ in (network.named_modules() if self.structure == "unit" else network.named_parameters())][:12]
            raise ValueError(f"PruningSchedule(include={self.include}, exclude={self.exclude}) matches nothing to prune "
                             f"in {type(network).__name__} for structure={self.structure!r}; its names begin: {names}")
        return groups

    # ------------------------------------------------------------------ the schedule
    def schedule_steps(self, trainer: L.Trainer) -> tuple[int, int]:
        """``(start, end)`` in optimizer steps."""
        if not isinstance(self.start, float):
            return int(self.start), int(self.end)
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("PruningSchedule: start/end are fractions of training, but the trainer has no finite "
                             "length (set max_steps or max_epochs), or give them in steps")
        return int(round(self.start * total)), int(round(self.end * total))

    def sparsity_at(self, step: int, start: int, end: int) -> float:
        if step < start:
            return 0.0
        if self.schedule == "one_shot" or step >= end:
            return self.target
        progress = (step - start) / (end - start)
        if self.schedule == "linear":
            return self.initial + (self.target - self.initial) * progress
        return self.target + (self.initial - self.target) * (1.0 - progress) ** 3

    def due_point(self, step: int, start: int, end: int) -> int | None:
        """The latest update point at or before ``step`` (``start``, every ``update_every`` after it, and
        ``end``), or ``None`` before ``start``."""
        if step < start:
            return None
        if step >= end:
            return end
        return start + (step - start) // self.update_every * self.update_every

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage):
        self.groups = self.build_groups(self.network(pl_module))
        if self._restored is not None:
            self._load_keep(self._restored)
        for group in self.groups:
            group.apply()

    def on_train_start(self, trainer, pl_module):
        self._steps = self.schedule_steps(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        start, end = self._steps
        point = self.due_point(trainer.global_step, start, end)
        if point is not None and (self.last_update is None or point > self.last_update):
            sparsity = self.sparsity_at(point, start, end)
            for group in self.groups:
                group.update(sparsity)
            self.last_update = point
            pl_module.log_dict({"pruning/target": sparsity, **{f"pruning/{name}": value
                                for name, value in self.achieved().items()}}, on_step=True, on_epoch=False)
        for group in self.groups:
            group.apply()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        for group in self.groups:  # the optimizer may have moved pruned weights: back to 0 before anyone reads them
            group.apply()

    def on_train_end(self, trainer, pl_module):
        start, end = self._steps
        if self.last_update is None or self.last_update < end:
            reached = 0.0 if self.last_update is None else self.sparsity_at(self.last_update, start, end)
            warnings.warn(f"PruningSchedule: training stopped at step {trainer.global_step}, before the schedule's end "
                          f"(step {end}): sparsity {reached:.3f} of the target {self.target}; train longer or end earlier")

    # ------------------------------------------------------------------ results
    def achieved(self) -> dict[str, float]:
        """Each group set's pruned share (elements, blocks or units), by name."""
        return {group.label: group.group_sparsity() for group in self.groups}

    def export_metadata(self, pl_module) -> dict:
        """What ``export_model`` stores: the structure and the sparsity each tensor or module reached."""
        return {"sparsity": {"structure": self.structure, "target": self.target,
                             "block_shape": list(self.block_shape) if self.structure == "block" else None,
                             "achieved": self.achieved()}}

    @staticmethod
    def compact(model: nn.Module) -> nn.Module:
        """The smaller dense model without the pruned units (``structure="unit"``), computing the same
        output: the model's own ``compact()``, which knows how its layers connect."""
        if not callable(getattr(model, "compact", None)):
            raise TypeError(f"{type(model).__name__} has no compact(): a model removes its pruned units itself "
                            f"(see TinyLSTM.compact); its unit-pruned weights are exact zeros meanwhile")
        return model.compact()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {"last_update": self.last_update, "keep": {group.label: group.keep.clone() for group in self.groups}}

    def load_state_dict(self, state: dict) -> None:
        self.last_update = state["last_update"]
        self._restored = state["keep"]
        if self.groups:  # Lightning restores callback state after setup
            self._load_keep(self._restored)
            for group in self.groups:
                group.apply()

    def _load_keep(self, keep: dict[str, torch.Tensor]) -> None:
        labels = {group.label for group in self.groups}
        if set(keep) != labels:
            raise ValueError(f"PruningSchedule: the checkpoint's masks cover {sorted(keep)[:6]}..., this run prunes "
                             f"{sorted(labels)[:6]}...: resume with the include/exclude/structure the run started with")
        for group in self.groups:
            group.set_keep(keep[group.label])
