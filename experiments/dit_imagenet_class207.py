"""DiT-XL/2 on ImageNet 256, forget class 207 (golden retriever): SFR-on's DiT experiment.

The setting of SFR-on (arXiv 2409.19732, Sec. 5.3 and its DiT code): the released
DiT-XL/2-256 (converted with ``jaxunlearn convert-dit``), its VAE (sd-vae-ft-ema), the
forget set = ImageNet training images of class 207, a retain set of ``--retain-per-class``
images of every other class, SFR-on as its DiT code does it (its README command:
gradient ascent on DiT's hybrid loss, alpha 1e-3 constant, the forget update masked by the
Fisher ratio and clipped to 1, the retain update unclipped, the Fisher from 2000
unclipped single-image gradients: ``DIT_RECIPE``) for 600 iterations (AdamW 1e-4 without
weight decay = Adam; batch 32 where their default is 1, rematerialised blocks in one scan,
bfloat16 compute), and the baselines with the same budget. Images are centre-cropped to 256 as DiT's
``center_crop_arr`` does and encoded once to scaled latents; unlearning runs on latents.

Reported per model: the denoising loss (eps-MSE at fixed timesteps and noise) on held-out
forget-class latents and on retain latents (forgetting raises the first and keeps the
second), and ``samples.png``: decoded samples of the forgotten class and of a few others.
The SFR-on paper's UA uses an ImageNet classifier, which is not ported here.

    python experiments/dit_imagenet_class207.py --imagenet ~/imagenet/train --dit dit-xl-2-256-flax
    python experiments/dit_imagenet_class207.py --smoke

``--imagenet`` is an ImageFolder tree (one folder per WordNet id, sorted = ImageNet's class
order, as torchvision's ImageFolder reads it); ``--dit`` the output of
``jaxunlearn convert-dit dit-xl-2-256 dit-xl-2-256-flax``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import paper_settings
from jaxunlearn.diffusion.methods import GENERATION_METHODS
from jaxunlearn.diffusion.schedules import eps_mse
from jaxunlearn.diffusion.train import DiffusionConfig
from jaxunlearn.diffusion.unlearn import GenerationTask, generate
from jaxunlearn.methods import resolve_hparams
from jaxunlearn.models.dit import stack_blocks
from jaxunlearn.parallel import Parallel
from jaxunlearn.provenance import provenance

from paper import parser, print_hparams

# SFR-on's DiT recipe and the others' budget, with their sources: docs/paper-settings.md.
HPARAMS = paper_settings.overrides('dit_imagenet_class207')


def center_crop(image, size: int) -> np.ndarray:
  """DiT's ``center_crop_arr``: halve with a box filter while the short side is >= 2x
  ``size``, resize (bicubic) the short side to ``size``, crop the centre; [-1, 1]."""
  from PIL import Image
  while min(image.size) >= 2 * size:
    image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
  scale = size / min(image.size)
  image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
  arr = np.asarray(image.convert('RGB'), np.float32)
  top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
  return arr[top:top + size, left:left + size] / 127.5 - 1.0


def read_class(folder: Path, size: int, limit: int | None) -> np.ndarray:
  from PIL import Image
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in ('.jpeg', '.jpg', '.png'))
  return np.stack([center_crop(Image.open(p), size) for p in files[:limit]])


def encode(vae, vae_params, images, batch: int = 32) -> np.ndarray:
  from jaxunlearn.models.vae import AutoencoderKL
  fn = jax.jit(lambda x: vae.apply({'params': vae_params}, x, method=AutoencoderKL.encode_latents))
  return np.concatenate([np.asarray(fn(images[i:i + batch])) for i in range(0, len(images), batch)])


def fake_imagefolder(root: Path, classes: int = 3, per_class: int = 6, size: int = 40):
  """The smoke run's ImageNet: random images in ``classes`` folders."""
  from PIL import Image
  rng = np.random.default_rng(0)
  for c in range(classes):
    (root / f'n{c:08d}').mkdir(parents=True)
    for i in range(per_class):
      pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / f'n{c:08d}' / f'{i}.png')


def smoke_models(num_classes: int, image_size: int):
  from jaxunlearn.models.dit import dit
  from jaxunlearn.models.vae import AutoencoderKL
  vae = AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)
  vae_params = vae.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)))['params']
  latent = image_size // 2
  model = dit('tiny', in_channels=4, out_channels=8, sample_size=latent,
              num_embeds_ada_norm=num_classes, zero_init=False)
  params = model.init(jax.random.key(1), jnp.zeros((1, latent, latent, 4)), jnp.zeros(1),
                      jnp.zeros(1, jnp.int32))['params']
  return model, params, vae, vae_params


def denoising_loss(model, variables, schedule, latents, labels, batch: int = 32) -> float:
  """Mean eps-MSE over fixed timesteps and noise (the same for every model)."""
  fn = jax.jit(lambda v, x, y, k: eps_mse(lambda a, t, c: model.apply(v, a, t, c), schedule,
                                           x, y, k))
  losses = [np.asarray(fn(variables, latents[i:i + batch], labels[i:i + batch],
                          jax.random.key(i))) for i in range(0, len(latents), batch)]
  return float(np.mean(np.concatenate(losses)))


def save_grid(rows: dict, path: Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(rows), 1, figsize=(12, 1.8 * len(rows)), squeeze=False)
  for ax, (name, images) in zip(axes[:, 0], rows.items()):
    ax.imshow(np.concatenate(list(np.clip((images + 1) / 2, 0, 1)), axis=1))
    ax.set_ylabel(name, rotation=0, ha='right')
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = parser(__doc__)
  p.add_argument('--imagenet', default=None, help='ImageFolder tree of ImageNet train images')
  p.add_argument('--dit', default=None, help='folder written by jaxunlearn convert-dit')
  p.add_argument('--forget-class', type=int, default=207)
  p.add_argument('--retain-per-class', type=int, default=5)
  p.add_argument('--held-out', type=int, default=100, help='forget-class images kept out of '
                 'unlearning to measure the forget loss on')
  p.add_argument('--parallel', default='auto', choices=('auto', 'none', 'pmap', 'shard'),
                 help='devices of unlearning and sampling (auto: pmap over every local device '
                 'when there are several)')
  args = p.parse_args(argv)
  parallel = Parallel.from_setting(args.parallel)
  out = Path(args.out or 'results/dit_imagenet_class207')
  out.mkdir(parents=True, exist_ok=True)
  methods = args.methods.split(',') if args.methods else list(HPARAMS)
  hparams = {m: dict(HPARAMS[m]) for m in methods}
  if args.print_hparams:
    return print_hparams({m: resolve_hparams(m, hparams[m], GENERATION_METHODS).to_dict()
                          for m in methods})
  with tempfile.TemporaryDirectory() as tmp:
    if args.smoke:
      root, size, forget_class, held_out = Path(tmp) / 'imagenet', 16, 1, 2
      fake_imagefolder(root)
      model, params, vae, vae_params = smoke_models(3, size)
      for hp in hparams.values():
        hp.update(batch_size=4, **({'iterations': 2} if 'iterations' in hp else {'steps': 2}))
    else:
      if args.imagenet is None or args.dit is None:
        raise SystemExit('give --imagenet (ImageFolder train tree) and --dit (from jaxunlearn '
                         'convert-dit), or --smoke')
      from jaxunlearn.convert import load_dit_checkpoint
      root, size, forget_class, held_out = (Path(args.imagenet), 256, args.forget_class,
                                            args.held_out)
      model, params, vae, vae_params = load_dit_checkpoint(args.dit)
      if vae is None:
        raise SystemExit(f'{args.dit} holds no VAE: convert the whole pipeline folder')
      model = model.clone(dtype=jnp.bfloat16)
    if not model.per_block_embedding:  # remat saves memory only in a scan over the blocks
      model, params = model.clone(remat=True, scan_blocks=True), stack_blocks(params)
    classes = sorted(d for d in root.iterdir() if d.is_dir())
    if not 0 <= forget_class < len(classes):
      raise SystemExit(f'class {forget_class} not among the {len(classes)} folders of {root}')
    start = time.perf_counter()
    forget = encode(vae, vae_params, read_class(classes[forget_class], size, None))
    retain = [encode(vae, vae_params, read_class(d, size, args.retain_per_class))
              for i, d in enumerate(classes) if i != forget_class]
  retain_y = np.concatenate([np.full(len(r), i + (i >= forget_class), np.int32)
                             for i, r in enumerate(retain)])
  retain = np.concatenate(retain)
  test_f, forget = forget[:held_out], forget[held_out:]
  encode_s = time.perf_counter() - start
  diffusion = DiffusionConfig(schedule='linear', num_timesteps=1000 if not args.smoke else 50)
  schedule = diffusion.noise_schedule()
  task = GenerationTask(model, {'params': params}, forget,
                        np.full(len(forget), forget_class, np.int32), retain, retain_y,
                        len(classes), diffusion, 0, not args.quiet, parallel=parallel)
  shown = [forget_class] + [c for c in range(len(classes)) if c != forget_class][:3]
  labels = np.repeat(np.asarray(shown, np.int32), 4)

  def score(variables):
    return {'forget_loss': denoising_loss(model, variables, schedule, test_f,
                                          np.full(len(test_f), forget_class, np.int32)),
            'retain_loss': denoising_loss(model, variables, schedule, retain, retain_y)}

  results = {'setting': 'dit_imagenet_class207', 'smoke': args.smoke, 'encode_s': encode_s,
             'forget_class': forget_class, 'forget_images': len(forget),
             'retain_images': len(retain), 'models': {'original': score(task.variables)}}
  grids = {'original': generate(model, task.variables, diffusion, labels, test_f.shape[1:], 0,
                                parallel=parallel)}
  for name in methods:
    hp = resolve_hparams(name, hparams[name], GENERATION_METHODS)
    start = time.perf_counter()
    variables = GENERATION_METHODS[name].run(dataclasses.replace(task), hp)
    results['models'][name] = {**score(variables), 'rte_s': time.perf_counter() - start,
                               'hparams': hp.to_dict()}
    grids[name] = generate(model, variables, diffusion, labels, test_f.shape[1:], 0,
                           parallel=parallel)
  decode = jax.jit(lambda z: vae.apply({'params': vae_params}, z,
                                       method=type(vae).decode_latents))
  save_grid({k: np.asarray(decode(v)) for k, v in grids.items()}, out / 'samples.png')
  results['provenance'] = provenance(vars(args))
  (out / 'results.json').write_text(json.dumps(results, indent=1, default=str))
  for name, row in results['models'].items():
    print(f"{name:9s} forget loss {row['forget_loss']:.4f}  retain loss {row['retain_loss']:.4f}")
  print(f'written: {out / "results.json"}, {out / "samples.png"}')
  return results


if __name__ == '__main__':
  main()
