"""The video domain (`domain=video`): clips -> tubelet tokens.

    sources.py  where clips come from (video files, arrays, HF datasets), read frame by frame
    decode.py   decoding files: PyAV or torchcodec (metadata probes, seeking reads), GIFs through Pillow
    moving.py   the embedded default: moving digits (labels: digit and direction)
    views.py    temporal crops and clips apart, spatial crop / flip / jitter shared by a view's frames
    inputs.py   the model input: the clip's frames, channel statistics, standardisation
    tokens.py   tubelets, their grid and the tube / random masks
    evaluation.py  kNN on clips, and on raw pixels for comparison
    domain.py   VideoDomain: its recipe, data and state, thin members over the modules above
    r3d.py      encoder=r3d18: torchvision's 3-D ResNet-18, a convolutional baseline
    hf.py       encoder=hf on clips: a transformers VideoMAE from a local folder
"""
from .domain import VideoDomain
from .r3d import R3D18

__all__ = ["R3D18", "VideoDomain"]
