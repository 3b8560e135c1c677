from sezoo.models._base import SEModel
from sezoo.models._registry import create_model, list_models, register_model
from sezoo.models.convfsenet import ConvFSENet

__all__ = ["ConvFSENet", "SEModel", "create_model", "list_models", "register_model"]
