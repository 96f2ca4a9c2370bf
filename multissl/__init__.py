"""multissl: self-supervised learning beyond images."""
from multissl.api import Run, fit
from multissl.export import load_encoder
from multissl.registry import register

__version__ = "0.1.0"
__all__ = ["Run", "fit", "load_encoder", "register", "__version__"]
