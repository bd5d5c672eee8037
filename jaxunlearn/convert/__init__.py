"""Weight converters from PyTorch checkpoints to our Flax params."""
from jaxunlearn.convert.ddim_unet import convert_reference_unet, load_reference_ddpm
from jaxunlearn.convert.diffusers_dit import (convert_dit_params, convert_vae_params, dit_config,
                                              load_diffusers_dit, load_diffusers_vae,
                                              load_dit_checkpoint, save_dit_checkpoint,
                                              vae_config)
from jaxunlearn.convert.diffusers_unet import (convert_unet_params, load_diffusers_unet,
                                               unet_config)
from jaxunlearn.convert.pytorch_fid import convert_fid_inception, load_fid_inception

__all__ = ['convert_dit_params', 'convert_fid_inception', 'convert_reference_unet',
           'convert_unet_params', 'convert_vae_params', 'dit_config', 'load_diffusers_dit',
           'load_diffusers_unet', 'load_diffusers_vae', 'load_dit_checkpoint',
           'load_fid_inception', 'load_reference_ddpm', 'save_dit_checkpoint', 'unet_config',
           'vae_config']
