"""Erasing a concept from a (tiny, random) converted Stable Diffusion: the prompt model over
both prompt sets, the original's images encoded to latents, a method through the shared
core, the UNet saved for ``eval-prompts``; bad input refused before compute."""

import json

import jax
import numpy as np
import pytest

from jaxunlearn.data.prompts import make_prompt_set, write_prompt_set
from jaxunlearn.diffusion import stable_diffusion as sdx
from tests.test_prompt_sets import _onnx_linear, tiny_sd_checkpoint

FORGET = make_prompt_set(['a three'], seeds=[1], name='forget')
RETAIN = make_prompt_set(['three three', 'a a'], seeds=[2, 3], first_case=1, name='retain')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
  return tiny_sd_checkpoint(tmp_path_factory.mktemp('sd'))


def test_prompts_in_case_order_so_the_pseudo_prompt_is_the_next_case():
  prompts, ids = sdx.concept_prompts(RETAIN, FORGET)
  assert prompts == ['a three', 'three three', 'a a', ''] and ids['three three'] == 1
  with pytest.raises(ValueError, match='case number 1 is in both prompt sets'):
    sdx.concept_prompts(make_prompt_set(['b'], first_case=1), RETAIN)
  with pytest.raises(ValueError, match=r"prompts in both the forget and the retain set: "
                                       r"\['a three'\]"):
    sdx.concept_prompts(FORGET, make_prompt_set(['a three'], first_case=5))


@pytest.mark.slow
def test_salun_erases_through_the_shared_core_and_eval_prompts_reads_the_unet(checkpoint,
                                                                              tmp_path):
  from jaxunlearn.checkpoint import load_variables
  from jaxunlearn.cli import main
  from jaxunlearn.convert.stable_diffusion import load_sd_checkpoint
  original = load_sd_checkpoint(checkpoint)['unet_params']
  write_prompt_set(FORGET.with_label(1), tmp_path / 'forget.csv')
  write_prompt_set(RETAIN.with_label(0), tmp_path / 'retain.csv')
  assert main(['erase-sd', str(checkpoint), '--forget', str(tmp_path / 'forget.csv'),
               '--retain', str(tmp_path / 'retain.csv'), '--method', 'salun', '--epochs', '2',
               '--images-per-prompt', '4', '--image-size', '16', '--sample-steps', '2',
               '--set', 'salun.batch_size=2', '--parallel', 'none',
               '--out', str(tmp_path / 'erased')]) == 0
  record = json.loads((tmp_path / 'erased' / 'erasure.json').read_text())
  assert record['method'] == 'salun' and record['forget_images'] == 4
  assert record['retain_images'] == 8 and record['prompts'][-1] == ''
  # the references' settings under the user's: lr 1e-5, alpha 0.5, 2 epochs of 2 batches
  assert record['hparams']['lr'] == 1e-5 and record['hparams']['retain_weight'] == 0.5
  assert record['hparams']['batch_size'] == 2 and record['hparams']['steps'] == 4
  unet = load_variables(tmp_path / 'erased' / 'unet')['params']
  changed = [np.mean(np.asarray(a) != np.asarray(b)) for a, b in
             zip(jax.tree.leaves(unet), jax.tree.leaves(original))]
  share = np.average(changed, weights=[np.size(a) for a in jax.tree.leaves(original)])
  assert 0.3 < share <= 0.5 + 1e-6          # SalUn's mask: half the weights, the rest exact
  scorer = _onnx_linear(tmp_path / 's.onnx', np.ones((48, 2), np.float32),
                        np.zeros(2, np.float32), 'NCHW')
  assert main(['eval-prompts', str(checkpoint), '--unet', str(tmp_path / 'erased' / 'unet'),
               '--forget', str(tmp_path / 'forget.csv'), '--scorer', str(scorer),
               '--image-size', '16', '--steps', '2', '--images-per-prompt', '2',
               '--out', str(tmp_path / 'eval')]) == 0
  assert 'UA' in json.loads((tmp_path / 'eval' / 'results.json').read_text())['sets']['forget']


@pytest.mark.slow
def test_esd_needs_no_images_and_given_images_replace_generated_ones(checkpoint):
  from jaxunlearn.convert.stable_diffusion import load_sd_checkpoint
  sd = load_sd_checkpoint(checkpoint)
  erasure = sdx.erase_concept(sd, FORGET, RETAIN, 'esd', {'steps': 2, 'ddim_steps': 3},
                              image_size=16, progress=False)
  assert erasure.forget_images == 1 and erasure.retain_images == 2
  leaves = zip(jax.tree.leaves(erasure.unet_params), jax.tree.leaves(sd['unet_params']))
  assert any(np.any(np.asarray(a) != np.asarray(b)) for a, b in leaves)
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, size=(3, 16, 16, 3)).astype(np.float32)
  erasure = sdx.erase_concept(sd, FORGET, RETAIN, 'ga', {'steps': 1, 'batch_size': 2},
                              forget_images=images, retain_images=images[::-1] * 0.5,
                              image_size=16, progress=False)
  assert erasure.forget_images == 3 and erasure.retain_images == 3
  # SFR-on as its SD script: the pseudo-prompt forget step, masked by the Fisher ratio
  erasure = sdx.erase_concept(sd, FORGET, RETAIN, 'sfron', {'iterations': 2, 'batch_size': 2},
                              forget_images=images, retain_images=images[::-1] * 0.5,
                              image_size=16, progress=False)
  assert erasure.hparams['forget_loss'] == 'remap' and erasure.hparams['loss'] == 'mean'
  leaves = zip(jax.tree.leaves(erasure.unet_params), jax.tree.leaves(sd['unet_params']))
  assert any(np.any(np.asarray(a) != np.asarray(b)) for a, b in leaves)


def test_bad_input_is_refused_before_compute(checkpoint, tmp_path, capsys):
  from jaxunlearn.cli import main
  long = make_prompt_set(['a ' * 20], name='long')
  with pytest.raises(ValueError, match='more than the text'):
    sdx.erase_concept(checkpoint, long, RETAIN, 'salun', image_size=16, progress=False)
  with pytest.raises(ValueError, match="unknown Stable Diffusion method 'sa'"):
    sdx.erase_concept(checkpoint, FORGET, RETAIN, 'sa')
  with pytest.raises(ValueError, match='lr'):
    sdx.erase_concept(checkpoint, FORGET, RETAIN, 'salun', {'lr': -1.0}, image_size=16)
  (tmp_path / 'empty.csv').write_text('prompt\n')
  write_prompt_set(RETAIN, tmp_path / 'retain.csv')
  assert main(['erase-sd', str(checkpoint), '--forget', str(tmp_path / 'empty.csv'),
               '--retain', str(tmp_path / 'retain.csv'), '--out', str(tmp_path / 'o')]) == 2
  assert 'but no prompts' in capsys.readouterr().err
  assert main(['erase-sd', str(checkpoint), '--forget', str(tmp_path / 'retain.csv'),
               '--retain', str(tmp_path / 'retain.csv'), '--set', 'esd.lr=1',
               '--out', str(tmp_path / 'o')]) == 2
  assert "--set names ['esd'], but the method is 'salun'" in capsys.readouterr().err
  assert not (tmp_path / 'o').exists()
