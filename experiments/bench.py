"""Every method's step in one run: time, ratio to a plain gradient step, peak memory, and
the same step in PyTorch.

    python experiments/bench.py [--width 16] [--image-size 16] [--batch 128] [--json bench.json]
    python experiments/bench.py --width 64 --image-size 32      # CIFAR-size ResNet-18

On one ResNet-18 (CIFAR stem) and fixed digits batches (random:10, seed 0), per method the
compiled update its loop repeats: one optimizer step, or for SFR-on one iteration (its
forget step and its retain step, K = 1):

  plain        SGD on the cross-entropy of a retain batch (FT's step; the unit)
  ga, rl       SGD on -CE / random-label CE of a forget batch
  l1_sparse    plain + the l1 penalty
  salun        rl masked (mask_by_saliency(freeze=True) around SGD), as the reference runs it
  salun_joint  one masked step on CE(x_f, y') + CE(x_r, y_r)
  sfron        the adaptive-weighted masked, clipped ascent step, then the retain step
  sfron_hvp    the ascent step preconditioned by 5 CG products of H_r, then the retain step
  lur          LUR's look-ahead step (second order: an HVP per step)

and the diffusion steps on the digits DDPM UNet (``diffusion_cases``; ``--no-diffusion``
leaves them out), relative to their own plain Adam denoising step.

Columns: median milliseconds per step, the ratio to ``plain``, and the peak memory XLA's
compiled-memory analysis gives (arguments + outputs - aliased + temporaries: the step's
own need, on the backend it runs on). With PyTorch installed, the reference steps ported
to PyTorch on the same network (a PyTorch ResNet-18 with our weights) and batches, timed
the same way with as many threads as JAX's CPU uses: ``torch_plain``; ``torch_salun`` (the
SalUn reference's ``train`` for RL: random labels, backward, ``grad *= mask``, SGD step)
and ``torch_sfron`` (the SFR-on reference's forget step: adaptive weights, backward,
``grad *= mask``, clip 7, step at lr x alpha, then the retain CE step).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import jax
import numpy as np

from jaxunlearn import losses
from jaxunlearn.objectives import Classifier
from jaxunlearn.saliency import salun_mask, sfron_mask
from jaxunlearn.step import (compiled_forget_retain_step, compiled_forget_step,
                             compiled_train_step, init_state)
from jaxunlearn.optim import OptimSpec, PairHalf
from jaxunlearn.transforms import set_saliency_mask

from bench_common import add_model_args, median_ms, model_and_batches, report


def jax_cases(model, variables, forget, retain, w, batch: int):
  """``{name: (step, state, args)}`` for every method, and the two masks."""
  key = jax.random.key(0)
  (xf, yf), (xr, yr) = forget, retain
  fargs, rargs = (xf, yf, w), (xr, yr, w)
  statistic = lambda loss: Classifier(model, loss, train=False)
  masks = {'salun': salun_mask(statistic(losses.gradient_ascent), variables, xf, yf, 0.5, batch),
           'sfron': sfron_mask(statistic(losses.cross_entropy), variables, xf, yf, xr, yr, 1.0,
                               batch)}
  ce, rl = losses.cross_entropy, losses.random_label_cross_entropy
  adaptive = losses.AdaptiveGradientAscent(0.5)

  def state(cfg, mask=None):
    st = init_state(variables, cfg())
    return st if mask is None else st._replace(opt_state=set_saliency_mask(st.opt_state, mask))

  sgd = OptimSpec(lr=0.01)
  fs = OptimSpec(lr=0.01, schedule='cosine', total_steps=1000, every=1, forget_weight=25.0,
                 forget_schedule='cosine', forget_clip_norm=7.0, saliency=True)
  hvp = dataclasses.replace(fs, precondition='cg', solver_iters=5)
  cases = {
      'plain': (compiled_train_step(Classifier(model, ce), sgd), state(sgd), rargs + (key,)),
      'ga': (compiled_train_step(Classifier(model, losses.gradient_ascent), sgd), state(sgd),
             fargs + (key,)),
      'rl': (compiled_train_step(Classifier(model, rl), sgd), state(sgd), fargs + (key,)),
  }
  l1 = OptimSpec(lr=0.01, l1=1e-4, l1_decay_steps=1000)
  cases['l1_sparse'] = (compiled_train_step(Classifier(model, ce), l1), state(l1), rargs + (key,))
  masked = OptimSpec(lr=0.013, saliency=True)
  cases['salun'] = (compiled_train_step(Classifier(model, rl), masked),
                    state(masked, masks['salun']), fargs + (key,))
  joint = OptimSpec(lr=0.013, saliency=True, forget_weight=1.0)
  cases['salun_joint'] = (
      compiled_forget_retain_step(Classifier(model, rl), Classifier(model, ce), joint),
      state(joint, masks['salun']), (fargs, rargs, key))
  retain_step = compiled_train_step(Classifier(model, ce), PairHalf(fs, 1))
  for name, cfg in (('sfron', fs), ('sfron_hvp', hvp)):
    forget_step = compiled_forget_step(Classifier(model, adaptive), Classifier(model, ce),
                                       PairHalf(cfg, 0))
    needs_retain = cfg.retain_loss_in_forget_step

    def iteration(st, forget_step=forget_step, needs_retain=needs_retain):
      st, _ = forget_step(st, fargs, rargs if needs_retain else None, key)
      return retain_step(st, *rargs, key)
    cases[name] = (iteration, state(PairHalf(cfg, 0), masks['sfron']), ())
  lur = OptimSpec(lr=0.01, forget_weight=1.0, lookahead_lr=0.01, lookahead_order='second')
  cases['lur'] = (compiled_forget_retain_step(Classifier(model, rl), Classifier(model, ce), lur),
                  state(lur), (fargs, rargs, key))
  return cases, masks


def diffusion_cases(batch: int, channels=(32, 64)):
  """``{name: (step, state, args)}`` for the diffusion steps on the digits DDPM UNet
  (``channels``, default 32-64, 8x8, at its initialisation), forget class 3, Adam as the
  references:

    ddpm_plain   Adam on the denoising loss of a retain batch (the unit of these rows)
    ddpm_salun   SalUn's masked joint step: remapped class on D_f + alpha denoising on D_r
    ddpm_sfron   one SFR-on iteration (K = 1): masked, clipped adaptive ascent, then retain
  """
  from jaxunlearn.data.digits import load_digits
  from jaxunlearn.diffusion.objectives import (AdaptiveDenoisingAscent, Denoiser, Denoising,
                                               RemappedClass)
  from jaxunlearn.diffusion.train import DiffusionConfig, init_unet
  from jaxunlearn.models import digits_unet
  ds = load_digits(8, pixels='symmetric')
  model, diffusion = digits_unet(tuple(channels)), DiffusionConfig()
  variables = init_unet(model, ds.image_shape, 0)
  take = lambda idx: np.resize(idx, batch)
  w, key = np.ones(batch, np.float32), jax.random.key(0)
  fargs = (ds.x_train[take(np.flatnonzero(ds.y_train == 3))],
           ds.y_train[take(np.flatnonzero(ds.y_train == 3))], w)
  rargs = (ds.x_train[take(np.flatnonzero(ds.y_train != 3))],
           ds.y_train[take(np.flatnonzero(ds.y_train != 3))], w)
  of = lambda loss: Denoiser(model, diffusion, loss)
  retain = of(Denoising(cond_drop_prob=0.1, null_class=10))
  mask = jax.tree.map(lambda p: (np.arange(p.size) % 2).reshape(p.shape).astype(np.float32),
                      variables['params'])  # half the weights: the step's cost, not a mask's

  def state(cfg, with_mask=False):
    st = init_state(variables, cfg())
    return st._replace(opt_state=set_saliency_mask(st.opt_state, mask)) if with_mask else st

  adam = OptimSpec(lr=1e-4, weight_decay=0.0, clip_norm=1.0, optimizer='adam')
  salun = dataclasses.replace(adam, saliency=True, forget_weight=1.0, retain_weight=3.072)
  fs = dataclasses.replace(adam, total_steps=1000, every=1, forget_weight=10.0,
                           forget_schedule='cosine', forget_clip_norm=1.0, saliency=True)
  forget_step = compiled_forget_step(of(AdaptiveDenoisingAscent(0.5)), retain, PairHalf(fs, 0))
  retain_step = compiled_train_step(retain, PairHalf(fs, 1))

  def sfron(st):
    st, _ = forget_step(st, fargs, None, key)
    return retain_step(st, *rargs, key)
  return {
      'ddpm_plain': (compiled_train_step(retain, adam), state(adam), rargs + (key,)),
      'ddpm_salun': (compiled_forget_retain_step(of(RemappedClass(10)), retain, salun),
                     state(salun, True), (fargs, rargs, key)),
      'ddpm_sfron': (sfron, state(PairHalf(fs, 0), True), ()),
  }


def peak_memory_mb(step, state, args) -> float | None:
  """XLA's compiled-memory estimate of one step (the step jitted as a whole, so an SFR-on
  iteration's two steps are one program here)."""
  m = jax.jit(lambda st, a: step(st, *a)).lower(state, args).compile().memory_analysis()
  if m is None:  # a backend without the analysis
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes) / 2**20


def torch_cases(model, variables, forget, retain, masks, num_classes: int,
                device: str = 'cpu'):
  """The PyTorch reference steps on a PyTorch port of our ResNet holding our weights, on
  ``device`` ('cpu', or 'cuda': each call then waits for the GPU, as JAX's are awaited)."""
  import torch
  from torch_resnet import TorchResNet18, load_flax
  if device == 'cpu':
    torch.set_num_threads(os.cpu_count() or 1)
  net = TorchResNet18(num_classes, model.width, model.stage_sizes,
                      in_channels=np.asarray(forget[0]).shape[-1])
  load_flax(net, variables)
  net = net.to(device)
  net.eval()  # the port is our network: same logits from the same weights
  with torch.no_grad():
    theirs = net(torch.from_numpy(np.asarray(retain[0]).transpose(0, 3, 1, 2).copy())
                 .to(device)).cpu().numpy()
  ours = np.asarray(model.apply(variables, retain[0], train=False))
  gap = float(np.abs(theirs - ours).max() / np.abs(ours).max())
  if gap > 1e-4:
    raise AssertionError(f'the PyTorch ResNet differs from ours (relative {gap:.2e})')
  print(f'PyTorch ResNet = ours: max relative logit difference {gap:.1e}')
  net.train()
  (xf, yf), (xr, yr) = forget, retain
  nchw = lambda x: torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
  xf, xr = nchw(xf).to(device), nchw(xr).to(device)
  yf = torch.from_numpy(np.asarray(yf)).long().to(device)
  yr = torch.from_numpy(np.asarray(yr)).long().to(device)
  mask_of = {name: [torch.from_numpy(np.ascontiguousarray(m)).to(device)
                    for m in _torch_order(net, mk)]
             for name, mk in masks.items()}
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
  gen = torch.Generator(device=device).manual_seed(0)
  ce = torch.nn.CrossEntropyLoss()

  def plain():
    opt.zero_grad()
    ce(net(xr), yr).backward()
    opt.step()

  def salun():  # Unlearn-Saliency RL: random labels, backward, grad *= mask, step
    opt.zero_grad()
    wrong = (yf + torch.randint(1, num_classes, yf.shape, generator=gen, device=device)
             ) % num_classes
    ce(net(xf), wrong).backward()
    for p, m in zip(net.parameters(), mask_of['salun']):
      p.grad *= m
    opt.step()

  def sfron():  # the SFR-on reference's forget step (alpha 25 folded into lr), then retain
    opt.zero_grad()
    per = torch.nn.functional.cross_entropy(net(xf), yf, reduction='none')
    weights = 1.0 / (per.detach() ** 0.5 + 1e-15)
    (-(weights / weights.sum()) * per).sum().backward()
    for p, m in zip(net.parameters(), mask_of['sfron']):
      p.grad *= m
    torch.nn.utils.clip_grad_norm_(net.parameters(), 7.0)
    opt.step()
    plain()

  steps = {'torch_plain': plain, 'torch_salun': salun, 'torch_sfron': sfron}
  if device == 'cpu':
    return steps
  return {name: (lambda f=f: (f(), torch.cuda.synchronize())) for name, f in steps.items()}


def _torch_order(net, flax_tree):
  """A flax params-shaped tree (a mask) in the order of ``net.parameters()``, in PyTorch
  layouts."""
  from torch_resnet import flax_path_of
  flat = {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_leaves_with_path(flax_tree)}
  out = []
  for name, p in net.named_parameters():
    value = flat[flax_path_of(name)]
    if value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    elif value.ndim == 2:
      value = value.T
    assert value.shape == tuple(p.shape), (name, value.shape, p.shape)
    out.append(value.astype(np.float32))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_model_args(parser)
  parser.add_argument('--no-torch', action='store_true', help='JAX steps only')
  parser.add_argument('--torch-device', default='cpu',
                      help="where the PyTorch steps run: 'cpu' (default) or 'cuda'")
  parser.add_argument('--no-diffusion', action='store_true', help='no DDPM UNet rows')
  parser.add_argument('--unet-channels', default='32,64',
                      help="the DDPM UNet's channels per level (default 32,64: the generation "
                           "job's; the smoke test's 8 compiles in seconds)")
  args = parser.parse_args()
  model, variables, forget, retain, w = model_and_batches(args)
  cases, masks = jax_cases(model, variables, forget, retain, w, args.batch)
  if not args.no_diffusion:
    cases.update(diffusion_cases(args.batch, [int(c) for c in args.unet_channels.split(',')]))
  memory = {name: peak_memory_mb(*case) for name, case in cases.items()}
  states = {name: case[1] for name, case in cases.items()}

  def runner(name):
    step, _, step_args = cases[name]

    def call():
      states[name], _ = step(states[name], *step_args)
      return states[name]
    return call

  timed = {name: runner(name) for name in cases}
  if not args.no_torch:
    try:
      timed.update({k: (lambda f=f: f()) for k, f in
                    torch_cases(model, variables, forget, retain, masks,
                                model.num_classes, args.torch_device).items()})
    except ImportError as e:
      print(f'(PyTorch steps skipped: {e})')
  ms = median_ms(timed, args.steps, args.repeats)
  ratios = {f'{name} / plain': ms[name] / ms['plain'] for name in cases
            if name != 'plain' and not name.startswith('ddpm')}
  ratios.update({f'{name} / ddpm_plain': ms[name] / ms['ddpm_plain'] for name in cases
                 if name.startswith('ddpm') and name != 'ddpm_plain'})
  for name in ('salun', 'sfron'):
    if f'torch_{name}' in ms:
      ratios[f'{name}: jax / torch'] = ms[name] / ms[f'torch_{name}']
  if 'torch_plain' in ms:
    ratios['plain: jax / torch'] = ms['plain'] / ms['torch_plain']
  report(args, ms, ratios)
  print('peak memory (XLA compiled estimate, MiB): ' + ', '.join(
      f'{k} {v:.1f}' for k, v in memory.items() if v is not None))
  if args.json:
    import json
    with open(args.json) as f:
      saved = json.load(f)
    saved['peak_memory_mib'] = memory
    with open(args.json, 'w') as f:
      json.dump(saved, f, indent=1)


if __name__ == '__main__':
  main()
