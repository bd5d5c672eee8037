"""The references' DDPM UNet (SalUn's and SFR-on's ``Conditional_Model``): parity with a
PyTorch module of that structure, the checkpoint converter, dropout in training, and the
generation job started from such a checkpoint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from torch_ddim_unet import RefUNet, randomize  # noqa: E402

from jaxunlearn.cli import main  # noqa: E402
from jaxunlearn.convert.ddim_unet import (convert_reference_unet, load_reference_ddpm,  # noqa: E402
                                          reference_unet_config)
from jaxunlearn.diffusion.objectives import Denoiser, Denoising  # noqa: E402
from jaxunlearn.diffusion.train import DiffusionConfig, init_unet  # noqa: E402
from jaxunlearn.diffusion.unlearn import GenerationTask  # noqa: E402
from jaxunlearn.models.ddim_unet import RefDDPMUNet, digits_reference_unet  # noqa: E402

CONFIGS = {
    # the digits preset: 8x8, ch 32, two levels, attention at 4x4, 8 groups
    'digits': dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                   resolution=8, num_classes=10, in_channels=1, out_ch=1, groups=8),
    # three levels, two blocks each, RGB, their 32 groups, attention in the middle level
    'three_levels': dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,),
                         resolution=16, num_classes=10, in_channels=3, out_ch=3, groups=32),
}


def _inputs(res, channels, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((4, res, res, channels)).astype(np.float32)
  t = np.array([0, 10, 500, 999])
  c = np.array([0, 3, 10, 9])  # 10: the null class
  return x, t, c


def _torch_out(module, x, t, c, num_classes):
  with torch.no_grad():
    out = module(torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(t),
                 torch.tensor(np.minimum(c, num_classes - 1)), torch.tensor(c == num_classes))
  return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize('name', [pytest.param(n, marks=() if n == 'digits' else pytest.mark.slow)
                                  for n in sorted(CONFIGS)])
def test_converted_reference_unet_matches_pytorch(name):
  kw = CONFIGS[name]
  module = randomize(RefUNet(**kw)).eval()
  # As their train.py saves it: a DataParallel state dict, 'module.' on every key.
  state = {'module.' + k: v for k, v in module.state_dict().items()}
  config = reference_unet_config(state, resolution=kw['resolution'], groups=kw['groups'])
  assert {k: config[k] for k in kw} == {k: (tuple(v) if isinstance(v, tuple) else v)
                                        for k, v in kw.items()}
  model = RefDDPMUNet(**config)
  variables = convert_reference_unet(state, model)
  x, t, c = _inputs(kw['resolution'], kw['in_channels'])
  ours = np.asarray(model.apply(variables, x, t, c))
  ref = _torch_out(module, x, t, c, kw['num_classes'])
  assert np.abs(ref).max() > 0.1
  assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-4
  # the null class id takes the learned null vector: another output than any class
  assert not np.allclose(ours[2], np.asarray(model.apply(variables, x[2:3], t[2:3], c[1:2]))[0])


def test_converter_lists_what_does_not_fit():
  module = randomize(RefUNet(**CONFIGS['digits']))
  state = dict(module.state_dict())
  model = RefDDPMUNet(**reference_unet_config(state, resolution=8, groups=8))
  missing = {k: v for k, v in state.items() if k != 'mid.attn_1.q.weight'}
  with pytest.raises(ValueError, match=r'1 params without a tensor.*mid_attn_1/q/kernel'):
    convert_reference_unet(missing, model)
  with pytest.raises(ValueError, match=r"1 tensors without a param \['extra.weight'\]"):
    convert_reference_unet({**state, 'extra.weight': torch.zeros(3)}, model)
  with pytest.raises(ValueError, match="not a checkpoint of the references' Conditional_Model"):
    reference_unet_config({'conv1.weight': torch.zeros(3)})


def test_reads_their_ckpt_list_raw_or_ema(tmp_path):
  raw = randomize(RefUNet(**CONFIGS['digits']), seed=1)
  ema = randomize(RefUNet(**CONFIGS['digits']), seed=2)
  state = {'module.' + k: v for k, v in raw.state_dict().items()}
  (tmp_path / 'run' / 'ckpts').mkdir(parents=True)
  torch.save([state, {}, 1234, dict(ema.state_dict())], tmp_path / 'run' / 'ckpts' / 'ckpt.pth')
  x, t, c = _inputs(8, 1)
  for kwargs, module in (({}, raw), ({'ema': True}, ema)):
    model, variables = load_reference_ddpm(tmp_path / 'run', resolution=8, groups=8, **kwargs)
    ref = _torch_out(module.eval(), x, t, c, 10)
    assert np.abs(np.asarray(model.apply(variables, x, t, c)) - ref).max() < 1e-4
  torch.save(dict(raw.state_dict()), tmp_path / 'bare.pth')
  with pytest.raises(ValueError, match='no EMA weights'):
    load_reference_ddpm(tmp_path / 'bare.pth', resolution=8, groups=8, ema=True)
  torch.save([state, {}, 5], tmp_path / 'noema.pth')
  with pytest.raises(ValueError, match='no EMA weights'):
    load_reference_ddpm(tmp_path / 'noema.pth', resolution=8, groups=8, ema=True)
  with pytest.raises(FileNotFoundError, match='no such file'):
    load_reference_ddpm(tmp_path / 'missing.pth')


@pytest.mark.slow
def test_dropout_is_active_in_training_and_unlearning_not_in_statistics():
  model = digits_reference_unet()
  variables = init_unet(model, (8, 8, 1))
  x, t, c = _inputs(8, 1)
  x = np.clip(x, -1, 1)
  apply = lambda **kw: np.asarray(model.apply(variables, x, t, c, **kw))
  assert np.array_equal(apply(), apply())  # eval: deterministic
  one = apply(train=True, rngs={'dropout': jax.random.key(0)})
  two = apply(train=True, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(one, two) and not np.allclose(one, apply())
  y = np.array([0, 3, 3, 9])
  task = GenerationTask(model, variables, x[:2], y[:2], x[2:], y[2:], 10,
                        DiffusionConfig(num_timesteps=1000), progress=False)
  loss = Denoising()
  objective, statistic = task.objective(loss), task.statistic(loss)
  assert objective.train and not statistic.train
  key = jax.random.key(3)
  trained = objective(variables['params'], {}, jnp.asarray(x), jnp.asarray(y), key)[0]
  evaluated = statistic(variables['params'], {}, jnp.asarray(x), jnp.asarray(y), key)[0]
  assert not np.allclose(trained, evaluated)
  # a model without dropout trains in eval mode: the digits UNet's numbers are unchanged
  from jaxunlearn.models import digits_unet
  unet = digits_unet((8,))
  assert not GenerationTask(unet, init_unet(unet, (8, 8, 1)), x[:2], y[:2], x[2:], y[2:], 10,
                            progress=False).objective(loss).train
  assert Denoiser(model, DiffusionConfig(), loss).train is False


def test_cli_sampling_presets_and_original_reach_the_generation_config(monkeypatch, tmp_path):
  import jaxunlearn.diffusion.experiment as experiment
  seen = {}

  def fake_run(config, out, restart=False):
    seen['config'] = config
    raise ValueError('stop here')
  monkeypatch.setattr(experiment, 'run_generation', fake_run)
  ckpt = tmp_path / 'ckpt.pth'
  ckpt.write_bytes(b'x')
  assert main(['run', '--task', 'generation', '--sampling', 'reference', '--original',
               str(ckpt), '--model', 'ref-unet', '--no-cache', '--quiet']) == 2
  config = seen['config']
  assert (config.sample_steps, config.sample_eta, config.sample_clip, config.guidance) == (
      1000, 1.0, False, 3.0)
  assert config.unet_path == str(ckpt) and config.model == 'ref-unet'
  assert main(['run', '--task', 'generation', '--sampling', 'fast', '--no-cache']) == 2
  assert (seen['config'].sample_steps, seen['config'].sample_eta) == (50, 0.0)


@pytest.mark.slow
def test_generation_job_starts_from_their_checkpoint_and_samples_their_way(tmp_path):
  """A checkpoint in the references' layout is the original of a generation run (no DDPM
  trained, none cached), sampled with their sampler settings (eta 1, no clipping)."""
  from jaxunlearn.diffusion.experiment import GenerationConfig, run_generation
  module = randomize(RefUNet(**{**CONFIGS['digits'], 'groups': 32}))  # their fixed 32
  state = {'module.' + k: v * 0.3 for k, v in module.state_dict().items()}
  torch.save([state, {}, 7], tmp_path / 'ckpt.pth')
  config = GenerationConfig(
      model='ref-unet', unet_path=str(tmp_path / 'ckpt.pth'),
      cache_dir=str(tmp_path / 'cache'), progress=False, classifier_width=4, parallel='none',
      methods=('ga',), check_every=0, forget_samples=6, fid_samples_per_class=3,
      sample_steps=4, sample_eta=1.0, sample_clip=False, guidance=3.0,
      overrides={'classifier': {'epochs': 1}, 'ga': {'steps': 2, 'batch_size': 16}})
  results = run_generation(config, tmp_path / 'out')
  assert results['model']['name'] == 'RefDDPMUNet' and results['model']['ch'] == 32
  assert results['evaluation']['sample_eta'] == 1.0 and not results['evaluation']['sample_clip']
  assert not list((tmp_path / 'cache').glob('ddpm-*'))
  assert 0 <= results['per_seed']['ga'][0]['UA'] <= 100
  saved = json.loads((tmp_path / 'out' / 'results.json').read_text())
  assert saved['model']['pretrained'] == str(tmp_path / 'ckpt.pth')
