from sezoo.nn.stft import STFT

__all__ = ["STFT"]
