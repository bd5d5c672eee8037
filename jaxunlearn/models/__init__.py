"""Flax models."""
from jaxunlearn.models.inception import FIDInceptionV3
from jaxunlearn.models.resnet import ResNet, ResNet10, ResNet18, make_model
from jaxunlearn.models.unet import UNet2D, digits_unet

__all__ = ['FIDInceptionV3', 'ResNet', 'ResNet10', 'ResNet18', 'UNet2D', 'digits_unet', 'make_model']
