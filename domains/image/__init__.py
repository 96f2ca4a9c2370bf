"""The image domain (`domain=image`): images -> patch tokens.

    sources.py  where images come from (digits, image folders, HF datasets), reading any file into the run's
                channels and size, the automatic size and channels, the normalisation statistics
    pixels.py   the model input: uint8 images -> normalised [c s s], the automatic patch size
    views.py    crops, flips, colour jitter, grayscale, blur: drawn per sample, applied per batch
    domain.py   ImageDomain: its recipe, data and state, thin members over the modules above
    resnet.py   encoder=resnet18: torchvision's ResNet for small images, a convolutional baseline
    timm_backbone.py  encoder=timm: any timm backbone, random or from a local checkpoint, normalisation reconciled
"""
from .domain import ImageDomain, auto_patch
from .resnet import ResNet
from .timm_backbone import TimmEncoder
from .sources import IMAGE_EXT, TensorImages, decode, digits_split, read_image, resize_uint8

__all__ = ["IMAGE_EXT", "ImageDomain", "ResNet", "TensorImages", "TimmEncoder", "auto_patch", "decode", "digits_split",
           "read_image", "resize_uint8"]
