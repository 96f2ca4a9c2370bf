"""The image domain (`domain=image`): images -> patch tokens.

    sources.py  where images come from (digits, image folders, HF datasets), reading any file into the run's
                channels and size, the automatic size and channels, the normalisation statistics
    domain.py   ImageDomain: views, preprocessing, tokens, masks, state
    resnet.py   encoder=resnet18: torchvision's ResNet for small images, a convolutional baseline
"""
from .domain import ImageDomain, auto_patch
from .resnet import ResNet
from .sources import IMAGE_EXT, TensorImages, decode, digits_split, read_image, resize_uint8

__all__ = ["IMAGE_EXT", "ImageDomain", "ResNet", "TensorImages", "auto_patch", "decode", "digits_split",
           "read_image", "resize_uint8"]
