from sezoo.callbacks.cost_meter import CostMeter, model_cost

__all__ = ["CostMeter", "model_cost"]
