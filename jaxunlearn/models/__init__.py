"""Flax models."""
from jaxunlearn.models.resnet import ResNet, ResNet10, ResNet18, make_model

__all__ = ['ResNet', 'ResNet10', 'ResNet18', 'make_model']
