from sezoo.metrics.cost import (count_macs, count_params, deployable_bytes, report_macs,
                                static_macs_per_second)
from sezoo.metrics.quality import QUALITY_KEYS, quality

__all__ = ["QUALITY_KEYS", "count_macs", "count_params", "deployable_bytes", "quality", "report_macs",
           "static_macs_per_second"]
