from sezoo.losses.spectral import CompressedSpectralMSE, NegativeSISDR

__all__ = ["CompressedSpectralMSE", "NegativeSISDR"]
