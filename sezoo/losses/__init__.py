from sezoo.losses.spectral import CompressedSpectralMSE, NegativeSISDR
from sezoo.losses.waveform import DemucsLoss

__all__ = ["CompressedSpectralMSE", "DemucsLoss", "NegativeSISDR"]
