"""experiments/device_check.sh, the accelerator check, end to end at toy sizes on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow  # ~3.5 minutes on 2 cores: bench.py's every method, a DiT step, two runs
def test_device_check_writes_one_json_of_every_step(tmp_path):
  script = Path(__file__).parent.parent / 'experiments' / 'device_check.sh'
  env = dict(os.environ, PYTHON=sys.executable, XLA_FLAGS='')
  proc = subprocess.run(['bash', str(script), str(tmp_path), '--smoke'], capture_output=True,
                        text=True, timeout=2400, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  steps = (tmp_path / 'steps.log').read_text().splitlines()
  assert [line.split(':')[0] for line in steps if 'exit' in line] == [
      'env', 'bench', 'dit_memory', 'determinism']
  assert all(': exit 0 ' in line for line in steps if 'exit' in line), steps
  result = json.loads((tmp_path / 'device_check.json').read_text())
  assert result['env']['jax_backend'] == 'cpu' and result['env']['jax']
  assert set(result['bench']['ms']) >= {'plain', 'salun', 'sfron', 'sfron_hvp', 'lur'}
  assert all(v > 0 for v in result['bench']['ms'].values())
  dit_row = result['dit_memory']['rows'][0]
  assert dit_row['peak_GiB'] > 0 and dit_row['step_ms'] > 0
  assert result['dit_memory']['provenance']['backend'] == 'cpu'
  # The CPU repeats itself bit for bit (docs/running.md, Determinism).
  assert result['determinism']['bit_identical'] is True
  assert result['determinism']['max_abs_difference'] == 0.0
  assert set(result['logs']) >= {'bench', 'dit_memory', 'determinism', 'env', 'steps'}
