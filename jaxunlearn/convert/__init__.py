"""Weight converters from PyTorch checkpoints to our Flax params."""
from jaxunlearn.convert.ddim_unet import convert_reference_unet, load_reference_ddpm
from jaxunlearn.convert.diffusers_dit import (convert_dit_params, convert_vae_params, dit_config,
                                              load_diffusers_dit, load_diffusers_vae,
                                              load_dit_checkpoint, save_dit_checkpoint,
                                              vae_config)
from jaxunlearn.convert.diffusers_unet import (convert_unet_params, load_diffusers_unet,
                                               unet_config)
from jaxunlearn.convert.pytorch_fid import convert_fid_inception, load_fid_inception
from jaxunlearn.convert.stable_diffusion import (clip_text_config, convert_clip_text_params,
                                                  convert_unet_condition_params,
                                                  load_clip_text_encoder,
                                                  load_diffusers_unet_condition,
                                                  unet_condition_config)

__all__ = ['clip_text_config', 'convert_clip_text_params', 'convert_dit_params',
           'convert_fid_inception', 'convert_reference_unet', 'convert_unet_condition_params',
           'convert_unet_params', 'convert_vae_params', 'dit_config', 'load_clip_text_encoder',
           'load_diffusers_dit', 'load_diffusers_unet', 'load_diffusers_unet_condition',
           'load_diffusers_vae', 'load_dit_checkpoint', 'load_fid_inception', 'load_reference_ddpm',
           'save_dit_checkpoint', 'unet_condition_config', 'unet_config', 'vae_config']
