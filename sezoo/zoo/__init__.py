"""``sezoo.zoo.load("dyncp/mini-keep25")``: pretrained compressed models, verified and cached."""
from sezoo.zoo.download import ZooDownloadError, cache_dir, fetch
from sezoo.zoo.publish import publish
from sezoo.zoo.registry import base_url, download, get_entry, list_models, load, model_card

__all__ = ["ZooDownloadError", "base_url", "cache_dir", "download", "fetch", "get_entry", "list_models", "load",
           "model_card", "publish"]
