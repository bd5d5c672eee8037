"""Our Flax UNet2D against diffusers' PyTorch UNet2DModel with random weights."""

import json

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxunlearn.convert import convert_unet_params, load_diffusers_unet, unet_config
from jaxunlearn.models import UNet2D
from jaxunlearn.models.unet import timestep_embedding

SMALL = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
             down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D'),
             up_block_types=('AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
             layers_per_block=2, attention_head_dim=8, norm_num_groups=8)


def _randomized(model, seed):
  """Every parameter random, GroupNorm's affine included (it starts at 1 and 0, where a
  swapped scale and bias would not show)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
  return model.eval()


@pytest.mark.parametrize('options', [
    {},                                                        # unconditional DDPM
    {'num_class_embeds': 11},                                  # 10 classes + the null class
    {'resnet_time_scale_shift': 'scale_shift', 'freq_shift': 1, 'flip_sin_to_cos': False,
     'num_class_embeds': 5, 'attention_head_dim': 16},
])
def test_converted_unet_matches_diffusers(options):
  config = {**SMALL, **options}
  reference = _randomized(diffusers.UNet2DModel(**config), seed=0)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 3, 16, 16)).astype(np.float32)
  t = np.array([0, 17, 999])
  labels = np.array([0, 3, config.get('num_class_embeds', 1) - 1])
  cond = 'num_class_embeds' in config
  with torch.no_grad():
    expected = reference(torch.from_numpy(x), torch.from_numpy(t),
                         class_labels=torch.from_numpy(labels) if cond else None).sample.numpy()
  model = UNet2D(**unet_config(dict(reference.config)))
  params = convert_unet_params(reference.state_dict(), model)
  ours = model.apply({'params': params}, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t),
                     jnp.asarray(labels) if cond else None)
  ours = np.asarray(ours).transpose(0, 3, 1, 2)
  rel = np.linalg.norm(ours - expected) / np.linalg.norm(expected)
  assert rel < 1e-4, rel
  np.testing.assert_allclose(ours, expected, atol=1e-4 * np.abs(expected).max())


def test_load_from_a_save_pretrained_folder(tmp_path):
  reference = _randomized(diffusers.UNet2DModel(**SMALL, num_class_embeds=4), seed=1)
  reference.save_pretrained(tmp_path)  # safetensors: loads without torch
  model, params = load_diffusers_unet(tmp_path)
  assert model.num_class_embeds == 4 and model.block_out_channels == (32, 64, 64)
  x = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
  out = jax.jit(model.apply)({'params': params}, x, 5, np.array([1, 3]))
  with torch.no_grad():
    expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)), 5,
                         class_labels=torch.tensor([1, 3])).sample.numpy()
  np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), expected, rtol=1e-4,
                             atol=1e-4 * np.abs(expected).max())


def test_converter_errors_name_what_does_not_fit(tmp_path):
  reference = diffusers.UNet2DModel(**SMALL)
  wrong = UNet2D(**unet_config({**dict(reference.config), 'block_out_channels': [32, 64, 96]}))
  with pytest.raises(ValueError, match='shapes differ'):
    convert_unet_params(reference.state_dict(), wrong)
  with pytest.raises(ValueError, match="time_embedding_type='fourier' is not supported"):
    unet_config({**dict(reference.config), 'time_embedding_type': 'fourier'})
  with pytest.raises(ValueError, match="unsupported block types \\['CrossAttnDownBlock2D'\\]"):
    UNet2D(down_block_types=('CrossAttnDownBlock2D',) * 4)
  with pytest.raises(FileNotFoundError, match='no config.json'):
    load_diffusers_unet(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({'_class_name': 'UNet2DConditionModel'}))
  with pytest.raises(ValueError, match='not a UNet2DModel'):
    load_diffusers_unet(tmp_path)


def test_timestep_embedding_matches_diffusers():
  from diffusers.models.embeddings import get_timestep_embedding
  t = np.array([0.0, 1.0, 10.5, 999.0], np.float32)
  for dim, flip, shift in ((32, True, 0), (33, False, 1)):
    expected = get_timestep_embedding(torch.from_numpy(t), dim, flip, shift).numpy()
    # sin/cos of angles up to 999 rad: one float32 ulp of the angle is 6e-5.
    np.testing.assert_allclose(timestep_embedding(t, dim, flip, shift), expected, atol=1e-4)


def test_unet_is_jit_and_grad_friendly(tiny_unet):
  model, variables = tiny_unet
  x = jnp.ones((2, 8, 8, 1))
  loss = lambda p: jnp.mean(model.apply({'params': p}, x, jnp.array([3, 4]),
                                        jnp.array([0, 2])) ** 2)
  grads = jax.jit(jax.grad(loss))(variables['params'])
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads['class_embedding']))
  with pytest.raises(ValueError, match='pass class_labels'):
    model.apply(variables, x, 0)
