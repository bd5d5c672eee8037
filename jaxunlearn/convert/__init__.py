"""Weight converters from PyTorch checkpoints to our Flax params."""
from jaxunlearn.convert.diffusers_unet import (convert_unet_params, load_diffusers_unet,
                                               unet_config)

__all__ = ['convert_unet_params', 'load_diffusers_unet', 'unet_config']
