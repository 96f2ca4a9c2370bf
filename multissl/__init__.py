"""multissl: self-supervised learning beyond images."""
from multissl.api import Run, fit
from multissl.export import load_encoder
from multissl.onnx_export import export_onnx
from multissl.registry import register

__version__ = "0.1.0"
__all__ = ["Run", "fit", "load_encoder", "export_onnx", "register", "__version__"]
