import json
import time

import pytest

from jaxunlearn.cli import main

# One device: the tests run with 8 fake CPU devices, where the default would be pmap.
TINY_CORE = ['--model', 'resnet1', '--width', '4', '--image-size', '8', '--quiet',
             '--parallel', 'none', '--set', 'train.epochs=2', '--set', 'retrain.epochs=2']
TINY = TINY_CORE + ['--set', 'ft.epochs=1', '--set', 'ga.epochs=1', '--set', 'rl.epochs=1']


def test_run_end_to_end_writes_json_and_plot(tmp_path, capsys):
  out = tmp_path / 'out'
  argv = ['run', '--scenario', 'random:10', '--seeds', '0,1', '--out', str(out),
          '--cache-dir', str(tmp_path / 'cache')] + TINY
  assert main(argv) == 0
  printed = capsys.readouterr().out
  assert 'Avg.Gap' in printed and 'retrain' in printed
  results = json.loads((out / 'results.json').read_text())
  assert results['dataset'] == 'digits' and results['scenario'] == 'random:10'
  assert results['seeds'] == [0, 1]
  assert set(results['methods']) == {'retrain', 'ft', 'ga', 'rl'}
  for name, stats in results['methods'].items():
    for metric in ('UA', 'RA', 'TA', 'MIA', 'avg_gap', 'rte_s'):
      assert set(stats[metric]) == {'mean', 'std'}
      assert 0 <= stats[metric]['mean'] <= (100 if metric != 'rte_s' else 1e4)
  assert results['methods']['retrain']['avg_gap'] == {'mean': 0.0, 'std': 0.0}
  assert len(results['per_seed']['ft']) == 2
  assert (out / 'results.png').stat().st_size > 10_000
  # Second run: original and Retrain come from the cache and the numbers repeat exactly.
  assert main(argv) == 0
  again = json.loads((out / 'results.json').read_text())
  for name in ('retrain', 'ft', 'ga', 'rl'):
    for metric in ('UA', 'RA', 'TA', 'MIA'):
      assert again['methods'][name][metric] == results['methods'][name][metric]


@pytest.mark.parametrize('argv, message', [
    (['--scenario', 'class:12'], r'--scenario class:12: digits has classes 0\.\.9'),
    (['--task', 'generation', '--scenario', 'class:10'], 'digits has classes 0..9'),
    (['--scenario', 'random:0'], r'open interval \(0, 100\)'),
    (['--scenario', 'class:3 '], 'leading or trailing spaces'),
    (['--width', '0'], '--width must be >= 1'),
    (['--width', '-1'], '--width must be >= 1'),
    (['--set', 'train.batch_size=0'], 'train.batch_size must be >= 1'),
    (['--methods', ''], 'no methods given'),
    (['--methods', ','], 'no methods given'),
    (['--set', 'ft.lr=inf'], 'ft.lr must be a finite number'),
    (['--set', 'ft.lr=nan'], 'ft.lr must be a finite number'),
    (['--set', 'ft.epochs=0'], 'ft.epochs must be >= 1'),
    (['--set', 'train.epochs=0'], 'train.epochs must be >= 1'),
    (['--image-size', '0'], '--image-size must be >= 8'),
    (['--image-size', '1000'], 'give a smaller --image-size'),
    (['--devices', '0'], '--devices must be >= 1'),
    (['--devices', '-1'], '--devices must be >= 1'),
    (['--dataset', 'cifar10', '--data-dir', '/nonexistent/tfds'], '--data-dir .* no such dir'),
    (['--scenario', 'random:150'], r'open interval \(0, 100\)'),
    (['--methods', 'ft,magic'], "unknown method 'magic'"),
    (['--set', 'ft.lrr=1'], "no hyperparameter 'lrr'"),
    (['--set', 'ftlr=1'], 'expected METHOD.NAME=VALUE'),
    (['--set', 'salun.lr=1'], "not among --methods"),
    (['--set', 'train.epoch=1'], 'train has no setting'),
    (['--parallel', 'pmap', '--devices', '64'], '64 devices requested, 8 available'),
    (['--alignment-every', '-1'], 'alignment_every must be >= 0'),
    (['--parallel', 'pmap', '--shard-params'], "shard_params needs parallel mode 'shard'"),
    (['--methods', 'salun', '--set', 'salun.keep=0'], r'salun.keep must be a fraction in \(0, 1\]'),
    (['--set', 'ft.lrr=1'], "did you mean 'lr'"),
    (['--checkpoint-every', '-2'], 'checkpoint_every must be >= 0'),
    (['--max-nonfinite', '-1'], 'max_nonfinite must be >= 1'),
    (['--scenario', 'class:nan'], 'the number must be finite'),
])
def test_bad_input_is_a_clear_error_before_compute(tmp_path, capsys, argv, message):
  start = time.perf_counter()
  assert main(['run', '--out', str(tmp_path), '--no-cache', '--quiet'] + argv) == 2
  assert time.perf_counter() - start < 5  # before any data is loaded
  err = capsys.readouterr().err
  assert 'jaxunlearn: error:' in err
  import re
  assert re.search(message, err), err
  assert not (tmp_path / 'results.json').exists()


@pytest.mark.parametrize('argv, message', [
    (['--methods', 'ft,,ga'], 'an empty name between commas'),
    (['--seeds', '-1'], 'argument --seeds: seeds must be >= 0'),
    (['--seeds', 'a'], 'argument --seeds: seeds must be comma-separated integers'),
])
def test_malformed_flags_are_usage_errors(capsys, argv, message):
  with pytest.raises(SystemExit) as exit_:
    main(['run', '--no-cache', '--quiet'] + argv)
  assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize('argv, message', [
    (['--width', '0'], '--width must be >= 1'),
    (['--scenario', 'class:10'], 'digits has classes 0..9'),
    (['--image-size', '4'], '--image-size must be >= 8'),
])
def test_eval_strong_checks_its_arguments_first(tmp_path, capsys, argv, message):
  start = time.perf_counter()
  assert main(['eval-strong', '--quiet', '--out', str(tmp_path)] + argv) == 2
  assert time.perf_counter() - start < 5
  assert message in capsys.readouterr().err


@pytest.mark.parametrize('task', ['classification', 'generation'])
def test_cli_defaults_are_the_config_defaults(task):
  """A flag left out sets nothing: the job config keeps its own default (one default per
  setting, CLI and library alike); a flag given sets its field."""
  import dataclasses

  from jaxunlearn.cli import _CLASSIFICATION_ONLY, _GENERATION_ONLY, _settings, build_parser
  from jaxunlearn.diffusion.experiment import GenerationConfig
  from jaxunlearn.experiment import ExperimentConfig
  cls, own = ((ExperimentConfig, _CLASSIFICATION_ONLY) if task == 'classification'
              else (GenerationConfig, _GENERATION_ONLY))
  bare = _settings(build_parser().parse_args(['run', '--task', task]), own)
  assert set(bare) == {'overrides', 'cache_dir', 'progress'}
  assert cls(**bare).parallel == 'auto' and cls(**bare).checkpoint_every == 50
  given = _settings(build_parser().parse_args(
      ['run', '--task', task, '--parallel', 'shard', '--devices', '2', '--seeds', '3,4',
       '--max-nonfinite', '0', '--checkpoint-every', '0']), own)
  config = cls(**given)
  assert (config.parallel, config.num_devices, config.seeds) == ('shard', 2, (3, 4))
  assert config.max_nonfinite is None and config.checkpoint_every == 0
  if task == 'classification':
    assert cls(**bare).alignment_every == 5
    assert _settings(build_parser().parse_args(['run', '--alignment-every', '0']),
                     own)['alignment_every'] == 0
  names = {f.name for f in dataclasses.fields(cls)}
  assert set(given) <= names


def test_methods_command_lists_defaults(capsys):
  assert main(['methods']) == 0
  out = capsys.readouterr().out
  assert 'rl' in out and "'lr': 0.01" in out


@pytest.mark.slow
def test_tune_picks_a_learning_rate_on_separate_seeds(tmp_path, capsys):
  out = tmp_path / 'out'
  argv = ['run', '--scenario', 'class:3', '--methods', 'retrain,ga', '--seeds', '0',
          '--tune', '--tune-seeds', '7', '--out', str(out), '--cache-dir',
          str(tmp_path / 'cache')] + TINY_CORE + ['--set', 'ga.epochs=1']
  assert main(argv) == 0
  results = json.loads((out / 'results.json').read_text())
  tuning = results['tuning']['ga']
  assert len(tuning['avg_gap_by_lr']) == 5
  best = min(tuning['avg_gap_by_lr'], key=tuning['avg_gap_by_lr'].get)
  assert float(best) == pytest.approx(tuning['lr'])
  assert results['hparams']['ga']['lr'] == pytest.approx(tuning['lr'])
  bad = ['run', '--tune', '--tune-seeds', '0', '--seeds', '0', '--out', str(out),
         '--no-cache'] + TINY_CORE
  assert main(bad) == 2
  assert 'also reported seeds' in capsys.readouterr().err


@pytest.mark.slow
def test_sfron_methods_run_from_the_cli(tmp_path):
  out = tmp_path / 'out'
  argv = ['run', '--scenario', 'class:3', '--methods', 'retrain,sfron,sfron_hvp', '--out',
          str(out), '--cache-dir', str(tmp_path / 'cache'), '--set', 'sfron.iterations=4',
          '--set', 'sfron_hvp.iterations=2', '--set', 'sfron_hvp.solver_iters=2'] + TINY_CORE
  assert main(argv) == 0
  results = json.loads((out / 'results.json').read_text())
  assert results['hparams']['sfron']['every'] == 5
  assert results['hparams']['sfron_hvp']['precondition'] == 'cg'
  for name in ('sfron', 'sfron_hvp'):
    assert 0 <= results['methods'][name]['UA']['mean'] <= 100


@pytest.mark.slow  # a smoke test of an experiment script
def test_steps_study_script_writes_curves(tmp_path):
  import subprocess
  import sys
  from pathlib import Path
  root = Path(__file__).parent.parent
  out = tmp_path / 'study' / 'results.json'
  proc = subprocess.run(
      [sys.executable, str(root / 'experiments' / 'study_sfron_steps.py'), '--seeds', '0',
       '--methods', 'sfron,ga', '--every', '2', '--model', 'resnet1', '--width', '4',
       '--image-size', '8', '--set', 'train.epochs=2', '--set', 'retrain.epochs=2', '--set',
       'sfron.iterations=4', '--set', 'ga.epochs=1', '--cache-dir', str(tmp_path / 'cache'),
       '--json', str(out)],
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  sfron = result['methods']['sfron'][0]
  assert sfron['updates'] == [0, 2, 4, 5]  # 4 retain + 1 forget update, evaluated every 2
  assert len(sfron['UA']) == 4 and 'sfron' in result['summary']
  # what made it, as a registered study script records it
  assert result['hparams']['sfron']['iterations'] == 4
  assert result['hparams']['train']['epochs'] == 2
  assert result['provenance']['argv'][:2] == ['--seeds', '0']
  assert out.with_name('steps.png').stat().st_size > 10_000
  assert 'reached at' in proc.stdout
  # and the docs table its registry entry renders from it
  from test_reproduce import _reproduce
  table = _reproduce().reach_table(result)
  assert table[2].startswith('| `sfron` | ') and table[3].startswith('| `ga` | ')
  reached = result['summary']['sfron']['updates_to_retrain_ua'][0]
  assert table[2].split(' | ')[1] == ('never' if reached is None else str(reached))


@pytest.mark.slow
def test_sfron_step_benchmark_prints_ratios(tmp_path):
  import subprocess
  import sys
  from pathlib import Path
  script = Path(__file__).parent.parent / 'experiments' / 'bench_sfron_step.py'
  proc = subprocess.run(
      [sys.executable, str(script), '--model', 'resnet1', '--width', '4', '--image-size', '8',
       '--batch', '8', '--steps', '1', '--repeats', '1', '--solver-iters', '2', '--json',
       str(tmp_path / 'bench.json')], capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'hvp / grad' in proc.stdout
  bench = json.loads((tmp_path / 'bench.json').read_text())
  assert all(v > 0 for v in bench['ms'].values())
  # (Ratios are finite; at this toy size "hvp in a solve", a difference of two timings over
  # one call, can come out negative from timer noise, so no sign is asserted.)
  import math
  assert bench['ratios'] and all(math.isfinite(v) for v in bench['ratios'].values())


@pytest.mark.slow  # the CLI end of what tests/test_parallel.py checks method by method
@pytest.mark.parametrize('mode', ['pmap', 'shard'])
def test_run_on_8_devices_matches_one_device(tmp_path, mode):
  """The CLI on 8 (fake CPU) devices: the same table as on one device."""
  common = ['run', '--scenario', 'class:3', '--methods', 'retrain,ft,rl', '--model', 'resnet1',
            '--width', '4', '--image-size', '8', '--quiet', '--set', 'train.epochs=1',
            '--set', 'retrain.epochs=1', '--set', 'ft.epochs=1', '--set', 'rl.epochs=1',
            '--alignment-every', '0', '--no-cache']
  assert main(common + ['--parallel', 'none', '--out', str(tmp_path / 'one')]) == 0
  assert main(common + ['--parallel', mode, '--devices', '8', '--out', str(tmp_path / 'eight')]) == 0
  one, eight = (json.loads((tmp_path / d / 'results.json').read_text()) for d in ('one', 'eight'))
  for name in ('retrain', 'ft', 'rl'):
    for metric in ('UA', 'RA', 'TA'):  # accuracies: a flipped prediction would show
      assert abs(one['methods'][name][metric]['mean'] -
                 eight['methods'][name][metric]['mean']) < 0.2, (name, metric)


@pytest.mark.slow  # each script end to end on a one-block ResNet (compiles in seconds)
@pytest.mark.parametrize('script, extra, expect', [
    ('bench_lur_step.py', [], 'lur_second / plain'),
    ('bench_parallel.py', [], 'speed-up'),
    ('bench_checkpoint.py', [], 'save / (50 steps)'),
    # The DDPM rows compile three UNet steps twice (memory analysis, then timing): over 10
    # minutes on a loaded 2-core host, even at 8 channels, so the smoke run leaves them out.
    ('bench.py', ['--no-diffusion'], 'sfron: jax / torch|sfron_hvp / plain'),
])
def test_step_benchmarks_print_their_tables(tmp_path, script, extra, expect):
  import os
  import subprocess
  import sys
  from pathlib import Path
  path = Path(__file__).parent.parent / 'experiments' / script
  # conftest's XLA_FLAGS (8 devices, patient collectives) for the multi-device benchmark;
  # the one-device ones run on one CPU device, as they are meant to.
  env = dict(os.environ, **({} if script == 'bench_parallel.py' else {'XLA_FLAGS': ''}))
  proc = subprocess.run(
      [sys.executable, str(path), '--model', 'resnet1', '--width', '4', '--image-size', '8',
       '--batch', '16', '--steps', '1', '--repeats', '1', '--json', str(tmp_path / 'bench.json'),
       *extra], capture_output=True, text=True, timeout=600, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert all(e in proc.stdout for e in expect.split('|'))
  assert all(v > 0 for v in json.loads((tmp_path / 'bench.json').read_text())['ms'].values())


@pytest.mark.slow  # two settings, each in a process of its own, on a one-block ResNet
def test_xla_flag_probe_times_each_setting_in_its_own_process(tmp_path):
  import os
  import subprocess
  import sys
  from pathlib import Path
  path = Path(__file__).parent.parent / 'experiments' / 'probe_xla_flags.py'
  # the parent's own XLA_FLAGS (conftest's 8 devices) must not reach a setting's process
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.run(
      [sys.executable, str(path), '--settings', 'default,no_xnnpack,one_core', '--model',
       'resnet1', '--width', '4', '--image-size', '8', '--batch', '16', '--steps', '1',
       '--repeats', '1', '--json', str(tmp_path / 'flags.json')],
      capture_output=True, text=True, timeout=900, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads((tmp_path / 'flags.json').read_text())
  rows = {r['setting']: r for r in result['rows']}
  assert list(rows) == ['default', 'no_xnnpack', 'one_core'], rows
  assert all('error' not in r and r['plain_ms'] > 0 and r['torch_ms'] > 0
             and r['jax_over_torch'] > 0 for r in rows.values()), rows
  assert rows['no_xnnpack']['flags'] == '--xla_cpu_use_xnnpack=false'
  assert all(r['devices'] == 1 and r['first_call_s'] > 0 and len(r['params_sha256']) == 64
             for r in rows.values())
  assert rows['one_core']['cores'] == 1 and rows['default']['cores'] == len(os.sched_getaffinity(0))
  assert result['provenance']['git'] and 'no_xnnpack' in proc.stdout
  # an unknown setting is refused before anything runs
  bad = subprocess.run([sys.executable, str(path), '--settings', 'no_such_flag'],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and 'unknown settings' in bad.stderr


def test_convert_dit_checks_where_it_writes_first(tmp_path, capsys):
  blocker = tmp_path / 'afile'
  blocker.write_text('x')
  assert main(['convert-dit', str(tmp_path / 'no-pipeline'), str(blocker / 'out')]) == 2
  assert 'a file of that name is in the way' in capsys.readouterr().err
  assert main(['convert-dit', str(tmp_path / 'no-pipeline'), str(tmp_path / 'out')]) == 2
  assert 'no config.json' in capsys.readouterr().err
