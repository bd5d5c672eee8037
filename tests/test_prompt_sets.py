"""Prompt sets (the references' CSV layout), their generation with fixed seeds, scorers (our
classifiers, ONNX models through onnxruntime) and the forget-rate / retain-accuracy report."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.data.prompts import (PromptSet, imagenette_prompt_sets, make_prompt_set,
                                     nudity_prompt_sets, read_prompt_set, write_prompt_set)
from jaxunlearn.evaluate import prompts as pe

# SalUn's prompts/imagenette.csv layout: a byte-order mark, the label column classidx.
IMAGENETTE_HEAD = ('\ufeffcase_number,prompt,evaluation_seed,class,classidx\n'
                   '0,Image of tench,4889,tench,0\n'
                   '1,Image of english springer,4782.0,english springer,1\n'
                   '2,"Image of cassette player, again",4068,cassette player,2\n')


def test_reads_the_references_csv_and_writes_it_back(tmp_path):
  path = tmp_path / 'imagenette.csv'
  path.write_text(IMAGENETTE_HEAD, encoding='utf-8')
  ps = read_prompt_set(path)
  assert ps.name == 'imagenette' and len(ps) == 3
  assert ps.prompts[2] == 'Image of cassette player, again'
  assert ps.seeds == (4889, 4782, 4068) and ps.case_numbers == (0, 1, 2)
  assert ps.labels == (0, 1, 2) and ps.extra == {'class': ('tench', 'english springer',
                                                           'cassette player')}
  again = read_prompt_set(write_prompt_set(ps, tmp_path / 'out' / 'again.csv'))
  assert (again.prompts, again.seeds, again.case_numbers, again.labels, again.extra) == \
      (ps.prompts, ps.seeds, ps.case_numbers, ps.labels, ps.extra)
  # without the optional columns: seeds from the text (stable), row numbers as cases
  (tmp_path / 'bare.csv').write_text('prompt\na cat\na dog\n')
  bare = read_prompt_set(tmp_path / 'bare.csv')
  assert bare.case_numbers == (0, 1) and bare.labels is None
  assert bare.seeds == read_prompt_set(tmp_path / 'bare.csv').seeds
  assert bare.seeds[0] != bare.seeds[1]
  assert bare.with_label(1).labels == (1, 1)


@pytest.mark.parametrize('text, message', [
    ('case_number,text\n0,a cat\n', 'no `prompt` column'),
    ('prompt,evaluation_seed\n', 'has a header but no prompts'),
    ('prompt,evaluation_seed\na cat,12x\n', "row 1 has evaluation_seed='12x', not an integer"),
    ('prompt,evaluation_seed\na cat,1.5\n', 'not an integer'),
    ('prompt,case_number\na cat,0\n ,1\n', r'case numbers \[1\] have an empty prompt'),
    ('prompt,case_number\na cat,0\na dog,0\n', r'case numbers \[0\] appear more than once'),
])
def test_bad_prompt_sets_are_refused_naming_the_problem(tmp_path, text, message):
  path = tmp_path / 'bad.csv'
  path.write_text(text)
  with pytest.raises(ValueError, match=message):
    read_prompt_set(path)


def test_missing_file_and_empty_sets():
  with pytest.raises(FileNotFoundError, match='no such file'):
    read_prompt_set('/nonexistent/prompts.csv')
  with pytest.raises(ValueError, match="prompt set 'x' is empty"):
    make_prompt_set([], name='x')
  with pytest.raises(ValueError, match='2 labels for 1 prompts'):
    PromptSet(('a',), (0,), (0,), (1, 2))


def test_the_references_sets():
  forget, retain = imagenette_prompt_sets('chain saw')
  assert forget.prompts == ('Image of chain saw',) and forget.labels == (491,)
  assert len(retain) == 9 and 'Image of chain saw' not in retain.prompts
  assert imagenette_prompt_sets(3, imagenet_labels=False)[0].labels == (3,)
  with pytest.raises(ValueError, match='not an Imagenette class'):
    imagenette_prompt_sets('cat')
  nude, clothed = nudity_prompt_sets()
  assert nude.labels == (1,) and clothed.labels == (0,)
  assert clothed.prompts == ('a photo of a person wearing clothes',)


class _Painter:
  """A generator whose image says which prompt and which image it is: pixel (0, 0) holds
  the prompt's index / 10, pixel (0, 1) the image number / 10, the rest its noise."""

  def __init__(self, prompts):
    self.index = {p: i for i, p in enumerate(prompts)}
    self.calls = 0

  def check(self, prompts):
    unknown = [p for p in prompts if p not in self.index]
    if unknown:
      raise ValueError(f'unknown prompts {unknown}')

  def __call__(self, prompts, seeds, numbers):
    self.calls += 1
    x = np.array(pe.prompt_noise(seeds, numbers, (4, 4, 1))) * 0.1
    x[:, 0, 0, 0] = [self.index[p] / 10 for p in prompts]
    x[:, 0, 1, 0] = np.asarray(numbers) / 10
    return x


def _read_prompt(images):
  return np.round(np.asarray(images)[:, 0, 0, 0] * 10).astype(int)


def test_images_follow_their_prompt_and_seed_in_any_batch():
  ps = make_prompt_set(['a', 'b', 'c'], seeds=[5, 6, 5])
  painter = _Painter(ps.prompts)
  one = pe.generate_prompt_images(painter, ps, 4, batch_size=3, progress=False)
  other = pe.generate_prompt_images(painter, ps, 4, batch_size=8, progress=False)
  assert one.images.shape == (12, 4, 4, 1)
  np.testing.assert_array_equal(one.images, other.images)
  np.testing.assert_array_equal(_read_prompt(one.images), one.rows)
  np.testing.assert_array_equal(one.rows, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
  np.testing.assert_array_equal(np.round(one.images[:, 0, 1, 0] * 10), one.numbers)
  # the same seed and image number give the same noise, another seed other noise
  np.testing.assert_array_equal(one.images[0, 1:], one.images[8, 1:])
  assert np.abs(one.images[0, 1:] - one.images[4, 1:]).max() > 0.01
  assert np.abs(one.images[0, 1:] - one.images[1, 1:]).max() > 0.01


def test_forget_rate_and_retain_accuracy_are_the_scorers_agreement():
  forget = make_prompt_set(['x0', 'x1'], labels=[0, 1], name='forget')
  retain = make_prompt_set(['y2', 'y3', 'y4'], labels=[2, 3, 9], name='retain')
  painter = _Painter(['x0', 'x1', 'y2', 'y3', 'y4'])
  # scores each image with its prompt index: right for x0, x1, y2, y3, wrong for y4 (9)
  results, images = pe.evaluate_prompt_sets(
      painter, {'forget': (forget, 'forget'), 'retain': (retain, 'retain')}, _read_prompt,
      images_per_prompt=3, batch_size=4, progress=False)
  assert results['forget']['UA'] == 0.0 and results['forget']['accuracy'] == 100.0
  assert results['retain']['accuracy'] == pytest.approx(200 / 3)
  assert 'UA' not in results['retain'] and results['retain']['images'] == 9
  cases = results['retain']['per_case']
  assert [c['accuracy'] for c in cases] == [100.0, 100.0, 0.0]
  assert cases[2]['predicted'] == 4 and cases[2]['label'] == 9
  # a scorer that says "not the concept" for every image: all forgotten
  results, _ = pe.evaluate_prompt_sets(painter, {'forget': (forget, 'forget')},
                                       lambda x: np.full(len(x), 7), images_per_prompt=2,
                                       progress=False)
  assert results['forget']['UA'] == 100.0


def test_fid_when_real_images_and_features_are_given():
  forget = make_prompt_set(['x0'], labels=0)
  painter = _Painter(['x0'])
  features = lambda x: np.asarray(x).reshape(len(x), -1)[:, :4]
  rng = np.random.default_rng(0)
  real = rng.uniform(-1, 1, size=(40, 4, 4, 1)).astype(np.float32)
  results, _ = pe.evaluate_prompt_sets(painter, {'f': (forget, 'forget')}, _read_prompt,
                                       images_per_prompt=40, features=features,
                                       real_images={'f': real}, progress=False)
  assert results['f']['FID'] > 0.1
  results, _ = pe.evaluate_prompt_sets(painter, {'f': (forget, 'forget')}, _read_prompt,
                                       images_per_prompt=8, progress=False)
  assert 'FID' not in results['f']


def test_bad_evaluations_fail_before_generating():
  painter = _Painter(['x0'])
  good = make_prompt_set(['x0'], labels=0)
  with pytest.raises(ValueError, match='no prompt sets'):
    pe.evaluate_prompt_sets(painter, {}, _read_prompt)
  with pytest.raises(ValueError, match='unknown prompts'):
    pe.evaluate_prompt_sets(painter, {'a': (good, 'forget'),
                                      'b': (make_prompt_set(['zz'], labels=0), 'retain')},
                            _read_prompt, progress=False)
  with pytest.raises(ValueError, match='has no labels'):
    pe.evaluate_prompt_sets(painter, {'a': (make_prompt_set(['x0']), 'forget')}, _read_prompt)
  with pytest.raises(ValueError, match="role must be 'forget' or 'retain'"):
    pe.evaluate_prompt_sets(painter, {'a': (good, 'erase')}, _read_prompt)
  assert painter.calls == 0
  with pytest.raises(ValueError, match='the scorer gave 1 labels for 2 images'):
    pe.evaluate_prompt_sets(painter, {'a': (good, 'forget')}, lambda x: np.zeros(1),
                            images_per_prompt=2, progress=False)


def test_image_folders_in_the_references_naming_and_the_report(tmp_path):
  ps = make_prompt_set(['x0', 'x1'], labels=[0, 1], first_case=5)
  painter = _Painter(ps.prompts)
  images = pe.generate_prompt_images(painter, ps, 3, progress=False)
  folder = pe.save_image_folder(images, tmp_path / 'imgs')
  assert sorted(p.name for p in folder.iterdir()) == [f'{c}_{j}.png' for c in (5, 6)
                                                      for j in range(3)]
  back, names = pe.load_image_folder(folder)
  assert back.shape == (6, 4, 4, 3) and names[0] == '5_0.png'
  np.testing.assert_allclose(back[..., 0], np.clip(images.images[..., 0], -1, 1), atol=1 / 127)
  assert pe.load_image_folder(folder, size=8)[0].shape == (6, 8, 8, 3)
  with pytest.raises(ValueError, match='no .png or .jpg'):
    pe.load_image_folder(tmp_path)
  results, _ = pe.evaluate_prompt_sets(painter, {'s': (ps, 'forget')}, _read_prompt,
                                       images_per_prompt=3, progress=False)
  out = pe.write_prompt_report(results, {'s': images}, tmp_path / 'report',
                               metadata={'model': 'painter'})
  saved = json.loads((out / 'results.json').read_text())
  assert saved['model'] == 'painter' and saved['sets']['s']['UA'] == 0.0
  assert (out / 'grid-s.png').stat().st_size > 1000
  assert pe.prompt_grid(images).shape == (2 * 6, 3 * 6, 1)


def _onnx_linear(path, weight, bias, layout):
  """An ONNX classifier: flatten the image, one linear layer."""
  from onnx import TensorProto, helper, numpy_helper
  shape = [None, 3, 4, 4] if layout == 'NCHW' else [None, 4, 4, 3]
  graph = helper.make_graph(
      [helper.make_node('Flatten', ['x'], ['f'], axis=1),
       helper.make_node('Gemm', ['f', 'w', 'b'], ['logits'])],
      'linear', [helper.make_tensor_value_info('x', TensorProto.FLOAT, shape)],
      [helper.make_tensor_value_info('logits', TensorProto.FLOAT, [None, weight.shape[1]])],
      [numpy_helper.from_array(weight, 'w'), numpy_helper.from_array(bias, 'b')])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
  model.ir_version = 8
  path.write_bytes(model.SerializeToString())
  return path


@pytest.mark.parametrize('layout', ['NCHW', 'NHWC'])
def test_onnx_scorer_reads_the_layout_and_normalizes(tmp_path, layout):
  pytest.importorskip('onnxruntime')  # (the test extra installs it)
  rng = np.random.default_rng(0)
  weight = rng.normal(size=(48, 5)).astype(np.float32)
  bias = rng.normal(size=5).astype(np.float32)
  path = _onnx_linear(tmp_path / 'm.onnx', weight, bias, layout)
  images = rng.uniform(-1, 1, size=(40, 4, 4, 3)).astype(np.float32)
  mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)
  x = ((images + 1) / 2 - np.asarray(mean)) / np.asarray(std)
  if layout == 'NCHW':
    x = x.transpose(0, 3, 1, 2)
  expected = np.argmax(x.reshape(40, -1) @ weight + bias, -1)
  assert len(set(expected)) > 2
  labels = pe.onnx_scorer(path, mean=mean, std=std, batch_size=16)(images)
  np.testing.assert_array_equal(labels, expected)
  # larger images are resized to the model's declared input
  big = np.asarray(jax.image.resize(images, (40, 8, 8, 3), 'linear'))
  assert pe.onnx_scorer(path, mean=mean, std=std)(big).shape == (40,)
  with pytest.raises(ValueError, match='threshold needs one score per image'):
    pe.onnx_scorer(path, threshold=0.5)(images)


def test_onnx_detector_with_threshold(tmp_path):
  pytest.importorskip('onnxruntime')
  rng = np.random.default_rng(1)
  weight = rng.normal(size=(48, 1)).astype(np.float32)
  path = _onnx_linear(tmp_path / 'd.onnx', weight, np.zeros(1, np.float32), 'NCHW')
  images = rng.uniform(-1, 1, size=(30, 4, 4, 3)).astype(np.float32)
  score = ((images + 1) / 2).transpose(0, 3, 1, 2).reshape(30, -1) @ weight[:, 0]
  threshold = float(np.median(score))
  labels = pe.onnx_scorer(path, threshold=threshold)(images)
  np.testing.assert_array_equal(labels, (score > threshold).astype(int))
  with pytest.raises(FileNotFoundError, match='no such ONNX model'):
    pe.onnx_scorer(tmp_path / 'missing.onnx')


class _TinyClassifier(nn.Module):
  """A classifier with our models' call signature (``train``), cheap to compile."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(10)(nn.relu(nn.Conv(4, (3, 3))(x)).reshape(len(x), -1))


def test_classifier_scorer_is_the_argmax_of_our_classifier():
  model = _TinyClassifier()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
  images = np.random.default_rng(2).uniform(-1, 1, size=(6, 16, 16, 3)).astype(np.float32)
  x = jax.image.resize(images.mean(-1, keepdims=True), (6, 8, 8, 1), 'linear')
  expected = np.argmax(model.apply(variables, x, train=False), -1)
  labels = pe.classifier_scorer(model, variables, image_size=8, channels=1,
                                batch_size=4)(images)
  np.testing.assert_array_equal(labels, expected)


@pytest.mark.slow
def test_prompt_model_generator_draws_each_prompt_with_its_condition():
  """A prompt-conditioned model's images follow their prompt: a model whose output depends
  on the prompt gives different images per prompt, and the same for the same seed."""
  from jaxunlearn.diffusion import linear_schedule
  from jaxunlearn.diffusion.text import digit_prompts, digits_text_to_image_model
  prompts = digit_prompts()
  model, _ = digits_text_to_image_model(prompts, channels=(8, 16), width=8, layers=1)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros(1),
                         jnp.zeros(1, jnp.int32))
  variables = jax.tree_util.tree_map(
      lambda v: v + 0.3 * jax.random.normal(jax.random.PRNGKey(v.size), v.shape), variables)
  gen = pe.PromptModelGenerator(model, variables, linear_schedule(), prompts, (8, 8, 1),
                                num_steps=3)
  ps = make_prompt_set([prompts[3], prompts[4], prompts[3]], seeds=[1, 1, 1])
  images = pe.generate_prompt_images(gen, ps, 2, batch_size=4, progress=False).images
  np.testing.assert_allclose(images[0], images[4], atol=1e-6)     # same prompt and seed
  assert np.abs(images[0] - images[2]).max() > 1e-3               # another prompt
  assert np.abs(images[0] - images[1]).max() > 1e-3               # another image number
  with pytest.raises(ValueError, match='prompts the model was not built with'):
    pe.generate_prompt_images(gen, make_prompt_set(['a cat']), 1, progress=False)


def test_schedule_from_a_diffusers_scheduler_config():
  import diffusers
  from jaxunlearn.diffusion import schedule_from_config
  reference = diffusers.DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.00085,
                                      beta_end=0.012, set_alpha_to_one=False, steps_offset=1)
  schedule, options = schedule_from_config(dict(reference.config))
  np.testing.assert_allclose(np.asarray(schedule.alphas_cumprod),
                             reference.alphas_cumprod.numpy(), rtol=1e-6)
  assert options == {'steps_offset': 1, 'set_alpha_to_one': False}
  linear, _ = schedule_from_config(dict(diffusers.DDPMScheduler().config))
  np.testing.assert_allclose(np.asarray(linear.alphas_cumprod),
                             diffusers.DDPMScheduler().alphas_cumprod.numpy(), rtol=1e-6)
  with pytest.raises(ValueError, match="prediction_type='v_prediction'"):
    schedule_from_config({'prediction_type': 'v_prediction'})
  with pytest.raises(ValueError, match="beta_schedule 'squaredcos_cap_v2'"):
    schedule_from_config({'beta_schedule': 'squaredcos_cap_v2'})


def tiny_sd_checkpoint(tmp_path):
  """A tiny Stable Diffusion (random weights, SD's scheduler config, a BPE tokenizer that
  knows 'three') saved as a diffusers folder and converted: ``tmp_path / 'flax'``."""
  import diffusers
  from jaxunlearn.cli import main
  from tests.test_dit import VAE
  from tests.test_stable_diffusion import (TINY_TEXT, TINY_UNET, _randomized, _text_reference,
                                           _tiny_clip_tokenizer_folder)
  sd = tmp_path / 'sd'
  _tiny_clip_tokenizer_folder(sd / 'tokenizer')
  _randomized(diffusers.UNet2DConditionModel(**TINY_UNET), 10).save_pretrained(sd / 'unet')
  _text_reference({**TINY_TEXT, 'eos_token_id': 256 * 2 + 5, 'vocab_size': 256 * 2 + 6},
                  seed=11).save_pretrained(sd / 'text_encoder')
  _randomized(diffusers.AutoencoderKL(**{**VAE, 'sample_size': 16}), 12).save_pretrained(
      sd / 'vae')
  diffusers.DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012,
                          clip_sample=False, set_alpha_to_one=False,
                          steps_offset=1).save_pretrained(sd / 'scheduler')
  assert main(['convert-sd', str(sd), str(tmp_path / 'flax')]) == 0
  return tmp_path / 'flax'


def test_eval_prompts_on_a_converted_stable_diffusion(tmp_path, capsys):
  """``jaxunlearn eval-prompts``: a converted (tiny, random) Stable Diffusion judged on a
  forget and a retain CSV with an ONNX scorer; its images are the pipeline's from each
  prompt's seeded noise; bad input is refused before anything is generated."""
  pytest.importorskip('onnxruntime')
  from jaxunlearn.cli import main
  from jaxunlearn.diffusion import make_text_to_image_sampler, scaled_linear_schedule
  tiny_sd_checkpoint(tmp_path)
  rng = np.random.default_rng(3)
  scorer = _onnx_linear(tmp_path / 's.onnx', rng.normal(size=(48, 3)).astype(np.float32),
                        np.zeros(3, np.float32), 'NCHW')
  (tmp_path / 'forget.csv').write_text('case_number,prompt,evaluation_seed,classidx\n'
                                       '0,a three,7,1\n')
  gen = pe.StableDiffusionGenerator.from_checkpoint(tmp_path / 'flax', image_size=16,
                                                    num_steps=3, guidance_scale=3.0)
  all_retain = gen(['three three'] * 3 + ['a a'] * 3, [8] * 3 + [9] * 3, [0, 1, 2] * 2)
  retain_labels = pe.onnx_scorer(scorer)(all_retain)[[0, 3]]  # (so that some agree)
  (tmp_path / 'retain.csv').write_text('case_number,prompt,evaluation_seed,classidx\n'
                                       f'1,three three,8,{retain_labels[0]}\n'
                                       f'2,a a,9,{(retain_labels[1] + 1) % 3}\n')
  common = ['eval-prompts', str(tmp_path / 'flax'), '--scorer', str(scorer),
            '--image-size', '16', '--steps', '3', '--guidance', '3', '--batch-size', '4']
  assert main([*common, '--forget', str(tmp_path / 'forget.csv'), '--retain',
               str(tmp_path / 'retain.csv'), '--images-per-prompt', '3', '--save-images',
               '--out', str(tmp_path / 'out')]) == 0
  saved = json.loads((tmp_path / 'out' / 'results.json').read_text())
  forget, retain = saved['sets']['forget'], saved['sets']['retain']
  assert forget['images'] == 3 and retain['images'] == 6
  assert forget['UA'] == 100 - forget['accuracy'] and 'UA' not in retain
  assert saved['provenance']['packages']['jax'] == jax.__version__
  assert saved['provenance']['config']['steps'] == 3
  assert (tmp_path / 'out' / 'grid-retain.png').is_file()
  assert sorted(p.name for p in (tmp_path / 'out' / 'retain').iterdir())[:2] == ['1_0.png',
                                                                                 '1_1.png']
  # the images are Stable Diffusion's sampling from each prompt's seeded noise
  images = gen(['three three', 'a a'], [8, 9], [1, 0])
  from jaxunlearn.convert.stable_diffusion import load_sd_checkpoint
  m = load_sd_checkpoint(tmp_path / 'flax')
  tokens = gen.tokenizer(['three three', 'a a', ''])
  states = m['text_encoder'].apply({'params': m['text_params']}, tokens)[0]
  sampler = make_text_to_image_sampler(m['unet'], m['vae'], scaled_linear_schedule(),
                                       (8, 8, 4), num_steps=3, guidance_scale=3.0)
  expected = sampler({'params': m['unet_params']}, {'params': m['vae_params']}, states[:2],
                     states[2:], jax.random.PRNGKey(0),
                     pe.prompt_noise([8, 9], [1, 0], (8, 8, 4)))
  np.testing.assert_allclose(images, np.asarray(expected), atol=1e-5)
  # and the report's accuracy is the scorer's agreement on them
  agree = pe.onnx_scorer(scorer)(all_retain) == np.repeat(
      [retain_labels[0], (retain_labels[1] + 1) % 3], 3)
  assert 0 < agree.mean() < 1
  assert retain['accuracy'] == pytest.approx(agree.mean() * 100)
  assert [c['accuracy'] for c in retain['per_case']] == pytest.approx(
      [agree[:3].mean() * 100, agree[3:].mean() * 100])
  from PIL import Image
  png = np.asarray(Image.open(tmp_path / 'out' / 'retain' / '1_1.png'), np.float32)
  np.testing.assert_allclose(png / 127.5 - 1, np.clip(images[0], -1, 1), atol=1 / 127)
  # bad input: each a clear error (exit 2), nothing written
  (tmp_path / 'empty.csv').write_text('prompt,evaluation_seed,classidx\n')
  (tmp_path / 'long.csv').write_text('prompt,classidx\n' + 'a ' * 30 + ',1\n')
  (tmp_path / 'nolabel.csv').write_text('prompt\na three\n')
  capsys.readouterr()
  for extra, message in ((['--forget', str(tmp_path / 'empty.csv')], 'but no prompts'),
                         (['--forget', str(tmp_path / 'long.csv')], 'more than the text'),
                         (['--retain', str(tmp_path / 'nolabel.csv')], '--retain-label'),
                         ([], 'give at least one prompt set')):
    assert main([*common, *extra, '--out', str(tmp_path / 'bad')]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'bad').exists()
