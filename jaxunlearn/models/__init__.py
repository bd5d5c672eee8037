"""Flax models."""
from jaxunlearn.models.conv import conv_general_dilated, set_cpu_conv
from jaxunlearn.models.clip_text import CLIPTextEncoder
from jaxunlearn.models.ddim_unet import RefDDPMUNet, digits_reference_unet
from jaxunlearn.models.dit import DiT, digits_dit, dit, stack_blocks, unstack_blocks
from jaxunlearn.models.inception import FIDInceptionV3
from jaxunlearn.models.resnet import ResNet, ResNet10, ResNet18, make_model
from jaxunlearn.models.unet import UNet2D, digits_unet
from jaxunlearn.models.unet_condition import UNet2DCondition, sd_v1_unet, sd_v2_unet
from jaxunlearn.models.vae import AutoencoderKL

__all__ = ['AutoencoderKL', 'CLIPTextEncoder', 'DiT', 'FIDInceptionV3', 'RefDDPMUNet', 'ResNet',
           'ResNet10', 'ResNet18', 'UNet2D', 'UNet2DCondition', 'conv_general_dilated',
           'digits_dit', 'digits_reference_unet', 'digits_unet', 'dit', 'make_model', 'sd_v1_unet',
           'sd_v2_unet', 'set_cpu_conv', 'stack_blocks', 'unstack_blocks']
