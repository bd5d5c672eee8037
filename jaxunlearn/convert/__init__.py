"""Weight converters from PyTorch checkpoints to our Flax params."""
from jaxunlearn.convert.diffusers_unet import (convert_unet_params, load_diffusers_unet,
                                               unet_config)
from jaxunlearn.convert.pytorch_fid import convert_fid_inception, load_fid_inception

__all__ = ['convert_fid_inception', 'convert_unet_params', 'load_diffusers_unet',
           'load_fid_inception', 'unet_config']
