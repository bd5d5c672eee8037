"""Text-to-image models on the diffusion core: prompt ids as conditions, the frozen-text
form, the digits' captions, and ESD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.diffusion.objectives import ESD_ORIGINAL, ErasedStableDiffusion
from jaxunlearn.diffusion.text import (TRAIN_TEMPLATES, WordTokenizer, digit_prompts,
                                       digits_text_to_image_model, freeze_text)
from jaxunlearn.diffusion.train import DiffusionConfig, init_unet
from jaxunlearn.diffusion.unlearn import GenerationTask

PROMPTS = digit_prompts()


@pytest.fixture(scope='module')
def tiny():
  """A randomly initialised digits text-to-image model (no training: the tests check
  plumbing and algebra, not image quality), in both forms."""
  model, tokenizer = digits_text_to_image_model(PROMPTS, channels=(16, 32), width=16, layers=1)
  variables = init_unet(model, (8, 8, 1), seed=0)
  frozen, frozen_vars = freeze_text(model, variables)
  return model, variables, frozen, frozen_vars, tokenizer


def test_prompts_are_template_major_so_the_next_id_names_the_next_digit():
  k = TRAIN_TEMPLATES.index('a handwritten {word}')
  assert PROMPTS[k * 10 + 3] == 'a handwritten three'
  assert PROMPTS[(k * 10 + 3 + 1) % (len(PROMPTS) - 1)] == 'a handwritten four'  # SalUn's c+1
  assert PROMPTS[TRAIN_TEMPLATES.index('the number {digit}') * 10 + 7] == 'the number 7'
  assert PROMPTS[-1] == '' and len(PROMPTS) == 121


def test_word_tokenizer_lays_tokens_out_as_clip_and_refuses_what_it_cannot_encode():
  tok = WordTokenizer(['a handwritten three', 'the digit 3'], context_length=6)
  ids = tok(['A handwritten three', ''])
  v = tok.vocab
  np.testing.assert_array_equal(ids[0], [0, v['a'], v['handwritten'], v['three'], 1, 1])
  np.testing.assert_array_equal(ids[1], [0, 1, 1, 1, 1, 1])
  with pytest.raises(ValueError, match=r"outside the vocabulary: \['four'\]"):
    tok(['a handwritten four'])
  with pytest.raises(ValueError, match='7 tokens .* more than the context of 6'):
    tok(['the digit 3 the digit'])


def test_frozen_text_is_the_same_function_with_only_the_unet_to_train(tiny):
  model, variables, frozen, frozen_vars, _ = tiny
  assert set(variables['params']) == {'unet', 'text_encoder'}
  assert set(frozen_vars['params']) == {'unet'}
  assert frozen_vars['prompts']['states'].shape == (121, 8, 16)
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
  ids = np.array([3, 13, 70, 45])
  a = model.apply(variables, x, np.array([1, 200, 500, 999]), ids)
  b = frozen.apply(frozen_vars, x, np.array([1, 200, 500, 999]), ids)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert model.num_class_embeds == frozen.num_class_embeds == 121
  with pytest.raises(ValueError, match='needs prompt ids'):
    frozen.apply(frozen_vars, x, 0, None)


def _task(frozen, frozen_vars, **kw):
  rng = np.random.default_rng(1)
  forget_y = np.array([k * 10 + 3 for k in range(len(TRAIN_TEMPLATES))] * 2, np.int32)
  retain_y = np.array([k * 10 + d for k in range(len(TRAIN_TEMPLATES)) for d in (0, 5)],
                      np.int32)
  x = lambda n: np.clip(rng.normal(size=(n, 8, 8, 1)), -1, 1).astype(np.float32)
  return GenerationTask(frozen, frozen_vars, x(len(forget_y)), forget_y, x(len(retain_y)),
                        retain_y, num_classes=len(PROMPTS) - 1, progress=False,
                        diffusion=DiffusionConfig(num_timesteps=100), **kw)


def _esd_loss(task, variables, key):
  objective = ErasedStableDiffusion(task.model, task.diffusion, task.null_class, ddim_steps=5)
  state = {k: v for k, v in variables.items() if k != 'params'}
  state[ESD_ORIGINAL] = task.variables
  loss, _, _ = jax.jit(objective)(variables['params'], state, task.forget_x[:4],
                                  task.forget_y[:4], key)
  return float(jnp.mean(loss))


@pytest.mark.parametrize('subset,lr,steps', [
    ('xattn', 3e-3, 12), pytest.param('noxattn', 3e-4, 24, marks=pytest.mark.slow)])
def test_esd_trains_its_subset_only_and_lowers_its_loss(tiny, subset, lr, steps):
  from jaxunlearn.diffusion.methods import GENERATION_METHODS
  from jaxunlearn.methods import resolve_hparams
  _, _, frozen, frozen_vars, _ = tiny
  task = _task(frozen, frozen_vars)
  hp = resolve_hparams('esd', {'steps': steps, 'lr': lr, 'ddim_steps': 5,
                               'train_method': subset, 'batch_size': 2}, GENERATION_METHODS)
  out = GENERATION_METHODS['esd'].run(task, hp)
  assert set(out) == {'params', 'prompts'}          # the original's copy is dropped
  np.testing.assert_array_equal(out['prompts']['states'], frozen_vars['prompts']['states'])
  changed = {'/'.join(str(p.key) for p in path)
             for path, a in jax.tree_util.tree_leaves_with_path(out['params'])
             if np.any(a != _at(frozen_vars['params'], path))}
  assert changed
  if subset == 'xattn':
    assert all('attn2' in n for n in changed)
  else:
    assert not any(s in n for n in changed
                   for s in ('attn2', 'time_embedding', 'conv_norm_out', 'conv_out'))
  keys = [jax.random.key(i) for i in range(6)]
  before = np.mean([_esd_loss(task, frozen_vars, k) for k in keys])
  after = np.mean([_esd_loss(task, out, k) for k in keys])
  assert after < 0.8 * before, (before, after)


def test_esd_is_given_the_prompts_that_name_the_concept_alone(tiny, monkeypatch):
  """ESD's prompt is the concept ("three", "3", as train-esd.py's ``--prompt 'nudity'``),
  not every caption of the forget images: the digits job passes those ids as
  ``concept_y``; without them ESD falls back on the forget labels."""
  from jaxunlearn.diffusion import methods as M
  from jaxunlearn.diffusion.text import caption_ids, concept_templates
  from jaxunlearn.methods import resolve_hparams
  _, _, frozen, frozen_vars, _ = tiny
  seen = []
  real = M.Phase
  monkeypatch.setattr(M, 'Phase', lambda x, y, *a, **k: (seen.append(np.asarray(y)),
                                                         real(x, y, *a, **k))[1])
  concept = caption_ids([3], concept_templates())
  assert [PROMPTS[i] for i in concept] == ['three', '3']
  hp = resolve_hparams('esd', {'steps': 1, 'ddim_steps': 2, 'train_method': 'xattn'},
                       M.GENERATION_METHODS)
  M.GENERATION_METHODS['esd'].run(_task(frozen, frozen_vars, concept_y=concept), hp)
  M.GENERATION_METHODS['esd'].run(_task(frozen, frozen_vars), hp)
  np.testing.assert_array_equal(seen[0], concept)
  np.testing.assert_array_equal(seen[1], _task(frozen, frozen_vars).forget_y)
  for bad, match in ((np.array([], np.int32), 'non-empty'), (np.array([3.0]), 'prompt ids'),
                     (np.array([500]), 'outside 0..119')):
    with pytest.raises(ValueError, match=match):
      _task(frozen, frozen_vars, concept_y=bad)


def _at(tree, path):
  for p in path:
    tree = tree[p.key]
  return tree


def test_esd_refuses_a_subset_the_model_lacks():
  from jaxunlearn.diffusion.methods import esd_mask
  from jaxunlearn.models import digits_unet
  params = init_unet(digits_unet((16, 32)), (8, 8, 1))['params']
  with pytest.raises(ValueError, match="'xattn' subset selects no weight"):
    esd_mask(params, 'xattn')
  assert any(np.any(m) for m in jax.tree.leaves(esd_mask(params, 'noxattn')))


@pytest.mark.slow
def test_selective_amnesia_on_a_prompt_model(tiny, monkeypatch):
  """SA's ELBO Fisher reads the prompt table (the frozen model's Fisher of the UNet is the
  text-encoder form's), and SA replays the training captions only: never a held-out one."""
  from jaxunlearn.diffusion import methods as gm
  from jaxunlearn.diffusion.unlearn import elbo_fisher
  model, variables, frozen, frozen_vars, _ = tiny
  task = _task(frozen, frozen_vars)
  x, y = task.retain_x[:3], task.retain_y[:3]
  fisher = elbo_fisher(task, x, y, timesteps=2, batch_size=2)
  joint = elbo_fisher(_task(model, variables), x, y, timesteps=2, batch_size=2)
  assert set(fisher) == {'unet'}
  for a, b in zip(jax.tree.leaves(fisher['unet']), jax.tree.leaves(joint['unet'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-12 + 1e-5 * float(np.abs(b).max()))
  replayed = []
  real_generate = gm.generate
  def spy(model, variables, diffusion, labels, *args, **kwargs):
    replayed.append(np.asarray(labels))
    return real_generate(model, variables, diffusion, labels, *args, num_steps=2,
                         **{k: v for k, v in kwargs.items() if k != 'num_steps'})
  monkeypatch.setattr(gm, 'generate', spy)
  out = gm.GENERATION_METHODS['sa'].run(task, {'steps': 1, 'replay_per_class': 1,
                                                'fisher_timesteps': 1, 'batch_size': 4})
  trained = set(task.forget_y.tolist()) | set(task.retain_y.tolist())
  assert set(replayed[0].tolist()) == trained          # no held-out caption (ids >= 50)
  assert max(trained) < len(TRAIN_TEMPLATES) * 10
  assert jax.tree.structure(out) == jax.tree.structure(frozen_vars)


def test_text_to_image_job_is_the_generation_job_on_prompts():
  """``--task text-to-image`` resolves to the generation job with the prompt model and
  Stable Diffusion's erasers, before any compute; what it cannot run is refused."""
  from jaxunlearn.cli import resolve_run
  from jaxunlearn.diffusion.experiment import T2I_METHODS, GenerationConfig
  run = resolve_run(['run', '--task', 'text-to-image', '--seeds', '0,1', '--parallel', 'none'])
  assert run['config']['model'] == 't2i' and tuple(run['config']['methods']) == T2I_METHODS
  assert set(run['hparams']) >= {'esd', 'salun', 'sfron', 'lur', 'ddpm'}
  # the digits model's recipe (T2I_RECIPE), and --set over it
  assert run['hparams']['esd']['steps'] == 600 and run['hparams']['esd']['lr'] == 1e-5
  assert run['hparams']['salun']['steps'] == run['hparams']['lur']['steps'] == 100
  assert run['hparams']['sfron']['forget_loss'] == 'remap'  # SFR-on's SD code
  assert run['hparams']['sfron']['iterations'] == 80
  assert resolve_run(['run', '--task', 'text-to-image', '--set', 'esd.steps=1000', '--parallel',
                      'none'])['hparams']['esd']['steps'] == 1000
  assert resolve_run(['run', '--task', 'generation', '--methods', 'esd', '--parallel',
                      'none'])['hparams']['esd']['steps'] == 1000  # the reference's elsewhere
  assert resolve_run(['run', '--task', 'generation', '--methods', 'salun,lur', '--parallel',
                      'none'])['hparams']['salun']['steps'] == 1000  # the DDPM's
  with pytest.raises(ValueError, match='--task text-to-image runs the text-to-image model'):
    resolve_run(['run', '--task', 'text-to-image', '--model', 'unet'])
  GenerationConfig(model='t2i', methods=('sa',)).validate()  # SA runs too (not by default)
  with pytest.raises(ValueError, match='runs on the embedded digits'):
    GenerationConfig(model='t2i', dataset='cifar10').validate()
  if jax.device_count() > 1:  # ESD's batch of one image, on every device
    with pytest.raises(ValueError, match=r'esd.batch_size=1 does not split over the \d+ '
                                         r'devices .* --set esd.batch_size=\d+ or --parallel none'):
      GenerationConfig(model='t2i', methods=('esd',), parallel='pmap').validate()


@pytest.mark.slow  # ~4 min: a text-to-image model, a classifier, two methods, every score
def test_text_to_image_job_end_to_end(tmp_path):
  import json

  from jaxunlearn.cli import main
  out = tmp_path / 'out'
  assert main(['run', '--task', 'text-to-image', '--methods', 'esd,salun', '--seeds', '0',
               '--set', 'ddpm.steps=40', '--set', 'classifier.epochs=1',
               '--set', 'esd.steps=4', '--set', 'salun.steps=4', '--check-every', '2',
               '--parallel', 'none', '--no-cache', '--quiet', '--out', str(out)]) == 0
  results = json.loads((out / 'results.json').read_text())
  assert results['provenance']['config']['model'] == 't2i'
  assert results['model']['name'].startswith('UNet2DCondition')
  for name in ('esd', 'salun'):
    row = results['per_seed'][name][0]
    assert 0 <= row['UA'] <= 100 and row['curve']['iterations'] == [0, 2, 4]
  assert (out / 'samples.png').is_file() and (out / 'forgetting.png').is_file()
