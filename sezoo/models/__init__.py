from sezoo.models._base import SEModel
from sezoo.models._registry import create_model, list_models, register_model
from sezoo.models.convfsenet import ConvFSENet
from sezoo.models.demucs import SlimmableDemucs
from sezoo.models.dtln import DTLN
from sezoo.models.grumask import GRUMask
from sezoo.models.nsnet2 import NsNet2
from sezoo.models.tinylstm import TinyLSTM

__all__ = ["ConvFSENet", "DTLN", "GRUMask", "NsNet2", "SEModel", "SlimmableDemucs", "TinyLSTM", "create_model", "list_models",
           "register_model"]
