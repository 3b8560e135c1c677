"""The sparsity recipe's stages: what each trains, from what, with which shared callbacks.

fp32: the DTLN-class model on negative SI-SDR. int8: the fp32 model under the shared
QuantizationAwareTraining callback. pruned: the int8 model under QAT (continuing its ranges) and the
shared PruningSchedule together: weight, block or unit sparsity learned jointly with integer weights,
as the paper does. offline: the paper's baseline, the int8 model magnitude-pruned once to the same
target in the same structure, without retraining. Unit-pruned models are tested and exported as the
smaller dense model without the pruned units.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from sezoo.callbacks import PruningSchedule, QuantizationAwareTraining
from sezoo.config import ConfigError
from sezoo.inference import resolve_model
from sezoo.losses import NegativeSISDR
from sezoo.models import DTLN
from sezoo.nn.quant import apply_quantization, quantization_state
from sezoo.recipe import StageBuild
from sezoo.training import SEModule


def pruning_schedule(cfg: DictConfig, **overrides) -> PruningSchedule:
    kwargs = OmegaConf.to_container(cfg.prune, resolve=True)
    if kwargs["block_shape"] is not None:
        kwargs["block_shape"] = tuple(kwargs["block_shape"])
    return PruningSchedule(**{**kwargs, **overrides})


def build_model(cfg: DictConfig) -> DTLN:
    if cfg.stage == "fp32":
        return DTLN(**OmegaConf.to_container(cfg.model, resolve=True), sample_rate=cfg.data.sample_rate)
    model = resolve_model(str(cfg.init_from))  # the previous stage as exported, with its QAT ranges
    if not isinstance(model, DTLN):
        raise ValueError(f"init_from={cfg.init_from}: a {type(model).__name__}, not a DTLN run of this recipe")
    if cfg.stage in ("pruned", "offline"):
        ranges = quantization_state(model)
        if not ranges:
            raise ValueError(f"init_from={cfg.init_from}: stage={cfg.stage} starts from the int8 run (it has no "
                             f"quantizer ranges); run stage=int8 first")
        # QAT continues the int8 run's ranges only where this stage's plan keeps their widths
        plan = QuantizationAwareTraining(**cfg.qat)
        for name, site in ranges.items():
            if plan.bits_for(name) != site["bits"]:
                raise ConfigError(f"init_from={cfg.init_from}: its {name} has {site['bits']}-bit ranges, this "
                                  f"stage's plan gives it {plan.bits_for(name)} bits; set the int8 run's "
                                  f"activation_bits (see its config.yaml)")
    return model.train()


class SparsityModule(SEModule):
    def __init__(self, cfg: DictConfig):
        super().__init__(build_model(cfg), NegativeSISDR(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                         lr_decay=cfg.optim.lr_decay, dnsmos=cfg.metrics.dnsmos)
        self.compact_at_test = cfg.stage in ("pruned", "offline") and cfg.prune.structure == "unit"

    def on_test_start(self):
        if self.compact_at_test:  # pruned units really go: test and export the smaller dense model
            small = self.model.compact().to(self.device)
            apply_quantization(small, quantization_state(self.model))
            self.model = small


def build_stage(cfg: DictConfig) -> StageBuild:
    if cfg.activation_bits not in (8, 16):
        raise ConfigError(f"activation_bits={cfg.activation_bits}: choose 8 or 16 (the widths the paper's "
                          f"microNPUs run beside int8 weights)")
    if cfg.stage == "offline":
        cfg.trainer.max_epochs = 0  # the baseline is pruned once and never trained, whatever else is set
    elif cfg.trainer.max_epochs is None:  # each stage its own length unless the command line sets one
        cfg.trainer.max_epochs = cfg.epochs[cfg.stage]
    module = SparsityModule(cfg)
    callbacks = [] if cfg.stage == "fp32" else [QuantizationAwareTraining(**cfg.qat)]
    if cfg.stage == "pruned":
        # The schedule ends before training does, so the last checkpoint is at the target sparsity; the
        # best-by-validation one could be an earlier, denser one.
        callbacks.append(pruning_schedule(cfg))
        return StageBuild(module, callbacks, checkpoint="last")
    if cfg.stage == "offline":
        schedule = pruning_schedule(cfg, schedule="one_shot", start=0)
        groups = schedule.build_groups(module.model)
        for group in groups:  # once, by magnitude, no training
            group.update(schedule.target)
            group.apply()
        # handed to the callback as its progress, so that the export records the sparsity reached
        schedule.load_state_dict({"last_update": 0, "keep": {g.label: g.keep for g in groups}})
        callbacks.append(schedule)
    return StageBuild(module, callbacks)
