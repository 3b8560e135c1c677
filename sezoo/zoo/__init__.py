"""``sezoo.zoo.load("dyncp/mini2-causal-dense")``: pretrained compressed models, verified and cached."""
from sezoo.zoo.download import ZooDownloadError, cache_dir, fetch
from sezoo.zoo.entry import Paper, ZooEntry
from sezoo.zoo.publish import publish
from sezoo.zoo.registry import (base_url, download, entry_lineage, get_entry, list_models, load, model_card,
                                weights_path)

__all__ = ["Paper", "ZooDownloadError", "ZooEntry", "base_url", "cache_dir", "download", "entry_lineage", "fetch",
           "get_entry", "list_models", "load", "model_card", "publish", "weights_path"]
