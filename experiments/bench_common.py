"""What the step benchmarks share: a ResNet-18 on digits and fixed forget/retain batches."""

from __future__ import annotations

import argparse

import numpy as np

from jaxunlearn.data import load_dataset, make_split
from jaxunlearn.models import make_model
from jaxunlearn.train import init_variables


def add_model_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--image-size', type=int, default=16)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5)


def model_and_batches(args):
  """``(model, variables, (xf, yf), (xr, yr), w)``: ResNet-18 of ``args.width`` at its
  initialisation, and one forget and one retain batch of ``args.batch`` digits (random:10,
  seed 0; the sets repeated to fill the batch), all weights 1."""
  ds = load_dataset('digits', image_size=args.image_size)
  split = make_split(ds, 'random:10', seed=0)
  model = make_model('resnet18', ds.num_classes, args.width)
  variables = init_variables(model, ds.image_shape, 0)
  take = lambda idx: np.resize(idx, args.batch)
  forget = ds.x_train[take(split.forget)], ds.y_train[take(split.forget)]
  retain = ds.x_train[take(split.retain)], ds.y_train[take(split.retain)]
  return model, variables, forget, retain, np.ones(args.batch, np.float32)
