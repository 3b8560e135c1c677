from sezoo.callbacks.cost_meter import CostMeter, model_cost
from sezoo.callbacks.pruning import PruningSchedule
from sezoo.callbacks.qat import QuantizationAwareTraining
from sezoo.callbacks.utilization import UtilizationLoss, utilization_sources

__all__ = ["CostMeter", "PruningSchedule", "QuantizationAwareTraining", "UtilizationLoss", "model_cost",
           "utilization_sources"]
