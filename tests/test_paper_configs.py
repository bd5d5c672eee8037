"""Every paper configuration in experiments/ starts and reaches its report on mock data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).parent.parent / 'experiments'
CONFIGS = ['cifar10_random10', 'cifar10_classwise', 'cifar100_random10', 'ddpm_cifar10_class',
           'dit_imagenet_class207']


def test_every_config_documents_its_exact_command():
  for name in CONFIGS:
    doc = (EXPERIMENTS / f'{name}.py').read_text().split('"""')[1]
    assert f'python experiments/{name}.py' in doc and '--smoke' in doc, name


@pytest.mark.slow  # one method each on mock data, ~1.5 min each on 2 cores; between them
@pytest.mark.parametrize('name, methods, report', [  # every paper method and both modalities
    ('cifar10_random10', 'salun', 'results.json'),
    ('cifar10_classwise', 'sfron', 'results.json'),
    ('cifar100_random10', 'lur', 'results.json'),
    ('ddpm_cifar10_class', 'sfron', 'results.json'),
    ('dit_imagenet_class207', 'salun', 'results.json'),
])
def test_smoke_run_writes_its_report(tmp_path, name, methods, report):
  proc = subprocess.run(
      [sys.executable, str(EXPERIMENTS / f'{name}.py'), '--smoke', '--quiet', '--methods',
       methods, '--out', str(tmp_path / 'out')],
      capture_output=True, text=True, timeout=900, cwd=tmp_path,
      env=dict(os.environ, XLA_FLAGS=''))  # one CPU device (parallel 'auto'), as a user's
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'out' / report).read_text())
  ran = results.get('methods') or results['models']
  assert set(methods.split(',')) - {'retrain'} <= set(ran)
  assert 'written:' in proc.stdout
