"""Flax models."""
from jaxunlearn.models.resnet import ResNet, ResNet10, ResNet18, make_model
from jaxunlearn.models.unet import UNet2D, digits_unet

__all__ = ['ResNet', 'ResNet10', 'ResNet18', 'UNet2D', 'digits_unet', 'make_model']
