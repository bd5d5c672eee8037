"""experiments/reproduce.py: every published result has a command that resolves today, and
the stale check names what changed when a result's settings no longer match the code."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from jaxunlearn.cli import resolve_run

ROOT = Path(__file__).resolve().parent.parent


def _reproduce():
  spec = importlib.util.spec_from_file_location('reproduce', ROOT / 'experiments' / 'reproduce.py')
  module = importlib.util.module_from_spec(spec)
  sys.modules['reproduce'] = module  # (its dataclass looks its module up there)
  spec.loader.exec_module(module)
  return module


def test_every_published_result_resolves_and_is_current_or_marked_historical():
  rp = _reproduce()
  shown_beside = ({b for entry in rp.RESULTS.values() for b in entry.beside}
                  | {r for summary in rp.SUMMARIES.values() for r in summary.results()})
  for name, entry in rp.RESULTS.items():
    if entry.script:  # a benchmark: its script exists, with the --json it is run with
      assert '--json' in (ROOT / 'experiments' / entry.script).read_text(), name
    else:
      resolve_run(entry.argv)  # a command today's CLI accepts
    assert entry.pending or (rp.RESULTS_DIR / name / 'results.json').is_file(), name
    # every stored result, historical ones included, says what made it
    made_by = (rp.stored(name) or {}).get('provenance')
    if made_by is not None or not entry.pending:
      assert (made_by or {}).get('git', {}).get('commit'), f'{name}: no provenance'
      assert made_by.get('packages', {}).get('jax'), f'{name}: no versions'
    assert entry.historical or entry.docs or name in shown_beside, (
        f'{name}: its table belongs in some docs file')
  assert rp.check() == {}


def _write_command(folder, name):
  """The COMMAND that ``reproduce.py --only NAME`` stores beside a result."""
  rp = sys.modules['reproduce']
  (folder / 'COMMAND').write_text(' '.join(rp.command_line(name, rp.RESULTS_DIR / name)) + '\n')


def _fake_result(tmp_path, argv, command=True):
  """A stored result as a run of ``argv`` today would record it (no compute)."""
  now = resolve_run(argv)
  results = {'hparams': now['hparams'], 'methods': {}, 'original': {}, 'dataset': 'digits',
             'scenario': 'class:3', 'seeds': [0],
             'provenance': {'argv': list(argv), 'config': now['config']}}
  (tmp_path / 'fake').mkdir(parents=True)
  (tmp_path / 'fake' / 'results.json').write_text(json.dumps(results))
  if command:
    _write_command(tmp_path / 'fake', 'fake')
  return results


def test_stale_check_names_each_setting_that_changed(tmp_path, monkeypatch):
  rp = _reproduce()
  argv = ('run', '--methods', 'ft,salun', '--seeds', '0', '--set', 'ft.epochs=3')
  monkeypatch.setitem(rp.RESULTS, 'fake', rp.Result(argv))
  results = _fake_result(tmp_path, ['run', '--methods', 'ft,salun', '--seeds', '0', '--set',
                                    'ft.epochs=3', '--out', str(tmp_path / 'o')])
  assert rp.check(['fake'], base=tmp_path) == {}
  # as if the defaults had moved since: the stored values are what the code gave then
  results['hparams']['salun']['lr'] = 0.5
  results['hparams']['train']['epochs'] = 7
  results['provenance']['config']['width'] = 32
  (tmp_path / 'fake' / 'results.json').write_text(json.dumps(results))
  found = rp.check(['fake'], base=tmp_path)['fake']
  assert any(p.startswith('stale: hparams.salun.lr: stored 0.5, now ') for p in found), found
  assert any(p.startswith('stale: hparams.train.epochs: stored 7, now 10') for p in found)
  assert any(p.startswith('stale: config.width: stored 32, now 16') for p in found)
  assert len(found) == 3  # nothing else (cache_dir and progress do not count)
  del results['provenance']
  (tmp_path / 'fake' / 'results.json').write_text(json.dumps(results))
  assert 'no provenance' in rp.check(['fake'], base=tmp_path)['fake'][0]


def test_a_setting_added_later_counts_as_its_old_behaviour_and_nothing_else():
  """A result recorded before ``ddpm.ema_decay`` existed (no such key) was made without
  an average: current while the default is that, stale if it records another value or the
  default moves."""
  rp = _reproduce()
  stored = {'ddpm': {'lr': 1e-3}, 'ga': {'lr': 1e-4}}
  assert rp._differences(stored, {'ddpm': {'lr': 1e-3, 'ema_decay': 0.0},
                                  'ga': {'lr': 1e-4}}, 'hparams') == []
  assert rp._differences(stored, {'ddpm': {'lr': 1e-3, 'ema_decay': 0.999},
                                  'ga': {'lr': 1e-4}}, 'hparams') == [
      'hparams.ddpm.ema_decay: stored 0.0, now 0.999']
  # only where the registry says so: a new key elsewhere is still a difference
  assert rp._differences(stored, {'ddpm': {'lr': 1e-3}, 'ga': {'lr': 1e-4, 'ema_decay': 0.0}},
                         'hparams') == ["hparams.ga.ema_decay: stored '<absent>', now 0.0"]


def test_a_stored_command_is_the_registrys_and_names_no_hosts_folder(tmp_path, monkeypatch):
  rp = _reproduce()
  argv = ('run', '--methods', 'ft', '--seeds', '0')
  monkeypatch.setitem(rp.RESULTS, 'fake', rp.Result(argv))
  _fake_result(tmp_path, [*argv, '--out', str(tmp_path / 'o')])
  command = (tmp_path / 'fake' / 'COMMAND').read_text()
  assert command == 'jaxunlearn run --methods ft --seeds 0 --out experiments/results/fake\n'
  assert rp.check(['fake'], base=tmp_path) == {}
  # made by another command than the registry's (here: another folder): said, with both
  (tmp_path / 'fake' / 'COMMAND').write_text(command.replace('experiments/', '/host/x/'))
  found = rp.check(['fake'], base=tmp_path)['fake']
  assert len(found) == 1 and "the registry 'jaxunlearn run --methods ft" in found[0], found
  (tmp_path / 'fake' / 'COMMAND').unlink()
  assert rp.check(['fake'], base=tmp_path)['fake'][0].endswith(
      'COMMAND is missing: python experiments/reproduce.py --only fake writes it')
  # a folder outside the repository is shown as it is
  assert rp.command_line('fake', Path('/elsewhere/r'))[-1] == '/elsewhere/r'


def test_tables_are_rendered_from_the_json_never_typed(tmp_path, monkeypatch):
  rp = _reproduce()
  argv = ('run', '--methods', 'ft', '--seeds', '0')
  monkeypatch.setitem(rp.RESULTS, 'fake', rp.Result(argv, docs=('doc.md',)))
  results = _fake_result(tmp_path, list(argv))
  results['methods'] = {'ft': {'UA': {'mean': 1.5, 'std': 0.0}}}
  (tmp_path / 'fake' / 'results.json').write_text(json.dumps(results))
  doc = tmp_path / 'doc.md'
  doc.write_text('# Title\n\ntext\n')
  with pytest.raises(ValueError, match='no <!-- result:fake -->'):
    rp.check(['fake'], base=tmp_path, root=tmp_path)
  block = rp.render_block('fake', results)
  assert '1.50' in block and block.startswith('<!-- result:fake -->\n```text\n')
  doc.write_text(f'# Title\n\n{block}\n\ntext\n')
  assert rp.check(['fake'], base=tmp_path, root=tmp_path) == {}
  doc.write_text(f'# Title\n\n{block.replace("1.50", "1.60")}\n\ntext\n')  # typed by hand
  assert 'differs from its results.json' in rp.check(['fake'], base=tmp_path,
                                                     root=tmp_path)['fake'][0]


def test_resolve_run_refuses_what_is_not_a_run_command():
  with pytest.raises(ValueError, match='not a `jaxunlearn run` or `eval-strong` command'):
    resolve_run(['convert-dit', 'a', 'b'])
  with pytest.raises(ValueError, match='not a valid command'):
    resolve_run(['run', '--no-such-flag'])


def test_each_table_says_under_it_what_made_it():
  rp = _reproduce()
  results = {'provenance': {'finished': '2026-12-05T06:00:00+00:00',
                            'git': {'commit': 'abcdef0123456789', 'dirty': False},
                            'devices': {'count': 1, 'kind': 'cpu'}, 'wall_s': 99.6}}
  assert rp.provenance_line(results) == ('(measured 2026-12-05; commit abcdef0; 1 x cpu; '
                                         '100 s wall time from an empty cache)')
  results['provenance']['git']['dirty'] = True
  del results['provenance']['wall_s']  # resumed, or from a cache: no wall time
  assert rp.provenance_line(results) == ('(measured 2026-12-05; commit abcdef0 + local '
                                         'changes; 1 x cpu)')
  assert rp.provenance_line({}) == '(no provenance recorded)'


def test_historical_tables_are_rendered_too_and_say_why_they_are_not_checked(tmp_path,
                                                                             monkeypatch):
  rp = _reproduce()
  argv = ('run', '--methods', 'ft', '--seeds', '0')
  entry = rp.Result(argv, docs=('doc.md',), historical='measured before X',
                    measured='measured 2026-11-24')
  monkeypatch.setitem(rp.RESULTS, 'fake', entry)
  results = _fake_result(tmp_path, list(argv))
  del results['provenance']  # as historical results are: not checked for staleness
  results['methods'] = {'ft': {'UA': {'mean': 1.5, 'std': 0.0}}}
  (tmp_path / 'fake' / 'results.json').write_text(json.dumps(results))
  block = rp.render_block('fake', results)
  assert block.splitlines()[-3] == ('(historical: measured 2026-11-24; measured before X; not '
                                    "checked against today's defaults)")
  doc = tmp_path / 'doc.md'
  doc.write_text(f'{block}\n')
  assert rp.check(['fake'], base=tmp_path, root=tmp_path) == {}
  doc.write_text(f'{block.replace("1.50", "1.60")}\n')  # typed by hand
  assert 'differs from its results.json' in rp.check(['fake'], base=tmp_path,
                                                     root=tmp_path)['fake'][0]
  # made with its provenance by code since overtaken: what made it, then why it is historical
  monkeypatch.setitem(rp.RESULTS, 'fake', rp.Result(argv, docs=('doc.md',),
                                                    historical='on older originals'))
  results['provenance'] = {'finished': '2026-12-04T10:00:00+00:00',
                           'git': {'commit': '5a870cd0000', 'dirty': False}}
  lines = rp.render_block('fake', results).splitlines()
  assert lines[-4:-2] == ['(measured 2026-12-04; commit 5a870cd)', '(historical: on older '
                          "originals; not checked against today's defaults)"]


def test_a_pending_result_says_so_in_its_block_until_it_is_measured(tmp_path, monkeypatch):
  rp = _reproduce()
  argv = ('run', '--methods', 'ft', '--seeds', '0')
  monkeypatch.setitem(rp.RESULTS, 'fake', rp.Result(argv, docs=('doc.md',),
                                                     pending='its old table was removed'))
  doc = tmp_path / 'doc.md'
  doc.write_text('<!-- result:fake -->\n<!-- /result:fake -->\n')
  assert 'differs from its results.json' in rp.check(['fake'], base=tmp_path,
                                                     root=tmp_path)['fake'][0]
  block = rp.render_block('fake', None)
  assert ('(not measured yet on today\'s code: its old table was removed; python '
          'experiments/reproduce.py --only fake)') in block
  doc.write_text(block + '\n')
  assert rp.check(['fake'], base=tmp_path, root=tmp_path) == {}
  # once measured, its table and provenance replace the line
  results = _fake_result(tmp_path, list(argv))
  results['methods'] = {'ft': {'UA': {'mean': 1.5, 'std': 0.0}}}
  (tmp_path / 'fake' / 'results.json').write_text(json.dumps(results))
  assert 'differs from its results.json' in rp.check(['fake'], base=tmp_path,
                                                     root=tmp_path)['fake'][0]
  monkeypatch.setitem(rp.RESULTS, 'fake', rp.Result(argv, docs=('doc.md',)))  # measured
  doc.write_text(rp.render_block('fake', results) + '\n')
  assert rp.check(['fake'], base=tmp_path, root=tmp_path) == {}


def test_a_summary_puts_one_methods_numbers_from_several_results_side_by_side(tmp_path,
                                                                             monkeypatch):
  rp = _reproduce()
  argv = ('run', '--methods', 'lur', '--seeds', '0')
  stats = lambda gap: {k: {'mean': v, 'std': 0.5} for k, v in
                       (('UA', 100.0), ('RA', 99.0), ('TA', 98.0), ('avg_gap', gap))}
  for name, gap in (('a', 0.12), ('b', 19.1)):
    monkeypatch.setitem(rp.RESULTS, name, rp.Result(argv, historical='old', measured='then'))
    (tmp_path / name).mkdir()
    (tmp_path / name / 'results.json').write_text(json.dumps({'methods': {'lur': stats(gap)}}))
  monkeypatch.setattr(rp, 'SUMMARIES', {'s': rp.Summary(
      'lur', ('class:3', 'random:10'), (('default', ('a', 'b')),), docs=('doc.md',),
      corner='variant')})
  block = rp.render_summary('s', tmp_path)
  assert block.splitlines()[1:4] == [
      '| variant | class:3 | random:10 |', '|---|---|---|',
      '| default | 100.00 / 99.00 / 98.00 / **0.12** ± 0.50 | 100.00 / 99.00 / 98.00 / '
      '**19.10** ± 0.50 |']
  assert "a, b: (historical: then; old; not checked against today's defaults)" in block
  (tmp_path / 'doc.md').write_text(block + '\n')
  monkeypatch.setattr(rp, 'RESULTS', {n: rp.RESULTS[n] for n in 'ab'})  # the summary's own
  assert rp.check(base=tmp_path, root=tmp_path) == {}
  (tmp_path / 'doc.md').write_text(block.replace('19.10', '19.00') + '\n')  # typed by hand
  assert 'differs from its results' in rp.check(base=tmp_path, root=tmp_path)['s'][0]


def test_a_per_seed_summary_shows_each_seed_of_each_named_method(tmp_path, monkeypatch):
  rp = _reproduce()
  argv = ('run', '--task', 'generation', '--methods', 'esd,salun', '--seeds', '0,1')
  seed = lambda ua, acc: {'UA': ua, 'acc_remaining': acc}
  runs = {'a': {'per_seed': {'esd': [seed(99.0, 65.56), seed(91.0, 64.0)],
                             'salun': [seed(100.0, 70.0), seed(97.0, 71.3)]}},
          'b': {'per_seed': {'esd': [seed(98.0, 60.0), seed(95.0, 62.2)]},
                'original_per_seed': [seed(20.0, 70.9), seed(53.0, 64.7)]}}
  for name, results in runs.items():
    monkeypatch.setitem(rp.RESULTS, name, rp.Result(argv, historical='old', measured='then'))
    (tmp_path / name).mkdir()
    (tmp_path / name / 'results.json').write_text(json.dumps(results))
  rows = (('original', (('b', 'original'),)), ('ESD', (('a', 'esd'),)),
          ('ESD, other', (('b', 'esd'),)), ('SalUn', (('a', 'salun'),)))
  monkeypatch.setattr(rp, 'SUMMARIES', {'s': rp.Summary(
      '', ('seed 0', 'seed 1'), rows, corner='UA / acc', cell='seeds')})
  assert rp.SUMMARIES['s'].results() == ['b', 'a', 'b', 'a']
  assert rp.render_summary('s', tmp_path).splitlines()[1:7] == [
      '| UA / acc | seed 0 | seed 1 |', '|---|---|---|', '| original | 20 / 70.9 | 53 / 64.7 |',
      '| ESD | 99 / 65.6 | 91 / 64.0 |', '| ESD, other | 98 / 60.0 | 95 / 62.2 |',
      '| SalUn | 100 / 70.0 | 97 / 71.3 |']
  monkeypatch.setattr(rp, 'SUMMARIES', {'s': rp.Summary(  # a run without its originals' seeds
      '', ('seed 0', 'seed 1'), (('original', (('a', 'original'),)),), cell='seeds')})
  with pytest.raises(ValueError, match='original_per_seed'):
    rp.render_summary('s', tmp_path)


def _bench(tmp_path, name, plain, salun, argv, environment):
  """A stored ``bench.py`` result as the script writes it (with its provenance)."""
  results = {'ms': {'plain': plain, 'salun': salun, 'torch_plain': 50.0},
             'ratios': {'salun / plain': salun / plain, 'plain: jax / torch': plain / 50.0},
             'peak_memory_mib': {'plain': 64.0, 'salun': 70.25},
             'provenance': {'argv': argv, 'environment': environment,
                            'finished': '2026-12-05T12:00:00+00:00',
                            'devices': {'count': 1, 'kind': 'cpu'}}}
  (tmp_path / name).mkdir(parents=True)
  (tmp_path / name / 'results.json').write_text(json.dumps(results))
  _write_command(tmp_path / name, name)
  return results


def test_a_benchmark_table_is_rendered_from_its_runs_and_checked_against_its_command(
    tmp_path, monkeypatch):
  rp = _reproduce()
  monkeypatch.setattr(rp, 'RESULTS', {
      'old': rp.Result(('--no-diffusion',), script='bench.py', table='steps', label='xla',
                       env=(('JAXUNLEARN_CPU_CONV', 'xla'),)),
      'new': rp.Result(('--no-diffusion',), script='bench.py', table='steps', label='auto',
                       beside=('old',), docs=('doc.md',))})
  old = _bench(tmp_path, 'old', 160.0, 170.0, ['--no-diffusion', '--json', 'x.json'],
               {'JAXUNLEARN_CPU_CONV': 'xla'})
  new = _bench(tmp_path, 'new', 110.0, 121.0, ['--no-diffusion', '--json=y.json'], {})
  block = rp.render_block('new', new, tmp_path)
  lines = block.splitlines()
  assert lines[1:5] == [
      '| step | ms, xla | ms, auto | / plain (auto) | peak MiB (xla / auto) | PyTorch ms '
      '(xla / auto) |', '|---|---|---|---|---|---|',
      '| plain (FT) | 160.00 | 110.00 | 1.00 | 64.0 / 64.0 | 50.00 / 50.00 |',
      '| salun (masked RL) | 170.00 | 121.00 | 1.10 | 70.2 / 70.2 |  |']
  assert 'JAX / PyTorch: xla: plain 3.20; auto: plain 2.20.' in lines
  assert ('xla: (measured 2026-12-05; 1 x cpu) `JAXUNLEARN_CPU_CONV=xla python '
          'experiments/bench.py --no-diffusion --json experiments/results/old/results.json`'
          in lines)
  (tmp_path / 'doc.md').write_text(block + '\n')
  assert rp.check(base=tmp_path, root=tmp_path) == {}
  # made under another environment or with other arguments than registered: stale
  old['provenance']['environment'] = {}
  (tmp_path / 'old' / 'results.json').write_text(json.dumps(old))
  assert rp.check(base=tmp_path, root=tmp_path) == {'old': [
      "stale: made with JAXUNLEARN_CPU_CONV=None, registered 'xla'"]}
  new['provenance']['argv'] = ['--json', 'y.json', '--width', '64']
  (tmp_path / 'new' / 'results.json').write_text(json.dumps(new))
  assert rp.check(['new'], base=tmp_path, root=tmp_path)['new'][0] == (
      "stale: made by the arguments ['--width', '64'], registered ['--no-diffusion']")
  # and the table follows its JSON, not the hand
  (tmp_path / 'doc.md').write_text(block.replace('121.00', '120.00') + '\n')
  assert any('differs from its results.json' in p
             for p in rp.check(['new'], base=tmp_path, root=tmp_path)['new'])


def test_the_memory_and_collectives_tables_read_their_scripts_json():
  rp = _reproduce()
  rows = [{'batch': b, 'remat': r, 'residuals_GiB': 1.0 + b, 'estimate_GiB': 10.0 * b,
           'peak_GiB': 3.0, 'backend': 'gpu', **({'step_ms': 812.4, 'device_peak_GiB': 16.5}
                                                if r else {})}
          for b in (1, 4) for r in (False, True)]
  table = rp.sd_memory_table({'rows': rows})
  assert table[0] == ('| batch | remat | saved residuals | estimate | XLA:GPU compiled peak | '
                      'step ms | measured peak |')
  assert table[3] == '| 1 | yes | 2.0 GiB | **10.0 GiB** | 3.0 GiB | 812 | 16.5 GiB |'
  assert table[4] == '| 4 | no | 5.0 GiB | 40.0 GiB | 3.0 GiB | nan | nan GiB |'
  ops = lambda n: {'all-reduce': {'count': n, 'bytes': n * 2**20},
                   'all-gather': {'count': 2, 'bytes': 3 * 2**30}}
  models = [{'model': 'resnet18', 'rows': [
      {'program': 'plain step', 'shard_params': s, 'collectives': ops(35 + s)}
      for s in (False, True)]}]
  table = rp.collectives_table({'models': models})
  assert table[0] == ('| program | ResNet-18, params replicated | ResNet-18, `--shard-params` |')
  assert table[2] == ('| plain step (FT, RL, GA, Retrain) | all-gather ×2 3072 MiB + all-reduce '
                      '×35 35.0 MiB | all-gather ×2 3072 MiB + all-reduce ×36 36.0 MiB |')


def test_the_dit_memory_table_names_each_layout_and_bolds_the_default():
  rp = _reproduce()
  row = lambda scan, hvp, iters, unroll, peak: {
      'size': 'DiT-XL/2', 'remat': True, 'scan': scan, 'dtype': 'float32', 'hvp': hvp,
      'cg_iters': iters, 'unroll': unroll, 'arguments_GiB': 10.06, 'temporaries_GiB': peak - 10,
      'peak_GiB': peak}
  table = rp.dit_memory_table({'rows': [row(False, 'linearize', 3, 'auto', 190.0),
                                        row(True, 'recompute', 3, 'auto', 25.8),
                                        row(True, 'recompute', 3, '1', 32.5)]})
  assert table[0] == ('| model | blocks | products | compute | CG iterations | arguments GiB | '
                      'temporaries GiB | peak GiB |')
  assert table[2] == ('| DiT-XL/2 | unrolled, remat | linearised once | float32 | 3 (unrolled) '
                      '| 10.06 | 180.00 | 190.00 |')
  assert table[3] == ('| **DiT-XL/2** | **scan, remat** | **recomputed** | **float32** | '
                      '**3 (loop)** | **10.06** | **15.80** | **25.80** |')
  assert table[4] == ('| DiT-XL/2 | scan, remat | recomputed | float32 | 3 (unrolled) | 10.06 '
                      '| 22.50 | 32.50 |')
  # every setting of the registered table is one the script accepts
  import importlib.util
  from jaxunlearn.models.dit import DIT_CONFIGS
  spec = importlib.util.spec_from_file_location(
      'bench_dit_memory', rp.ROOT / 'experiments' / 'bench_dit_memory.py')
  bench_dit_memory = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench_dit_memory)
  assert all(size in DIT_CONFIGS and hvp in ('linearize', 'recompute')
             and dtype in ('float32', 'bfloat16') and unroll in ('auto', '0', '1')
             for size, _, _, dtype, hvp, _, unroll in bench_dit_memory.DOCS_TABLE)


def test_the_xla_flags_table_shows_each_settings_step_ratio_or_its_error():
  rp = _reproduce()
  rows = [{'setting': 'default', 'description': 'default (no flag)', 'plain_ms': 93.84,
           'torch_ms': 47.0, 'jax_over_torch': 93.84 / 47.0, 'first_call_s': 4.21,
           'params_sha256': 'aa'},
          {'setting': 'onednn_fusion', 'description': '`--xla_cpu_use_onednn=true`',
           'error': 'INTERNAL: partition compile failed | twice'},
          {'setting': 'one_core', 'description': '1 core', 'plain_ms': 150.0,
           'first_call_s': 6.0, 'params_sha256': 'aa'},
          {'setting': 'opt_level_1', 'description': '-O1', 'plain_ms': 95.0,
           'first_call_s': 3.0, 'params_sha256': 'bb'}]
  table = rp.flags_table({'rows': rows})
  assert table[0] == ('| setting | plain step (ms) | PyTorch (ms) | JAX / PyTorch | '
                      'first call (s) | weights as default |')
  assert table[2] == '| default (no flag) | 93.8 | 47.0 | 2.00 | 4.2 | – |'
  assert table[3] == ('| `--xla_cpu_use_onednn=true` | fails: INTERNAL: partition compile '
                      'failed / twice |  |  |  |  |')
  assert table[4] == '| 1 core | 150.0 |  |  | 6.0 | same |'
  assert table[5] == '| -O1 | 95.0 |  |  | 3.0 | differ |'


def test_a_study_script_is_checked_against_the_hyperparameters_it_records(tmp_path,
                                                                          monkeypatch):
  """sfron_mask.py's result: its table from its rows, and stale when the hyperparameters it
  records are not today's (its --cache-dir, like its --json, is where things go)."""
  rp = _reproduce()
  run = ('run', '--task', 'generation', '--methods', 'sfron')
  monkeypatch.setattr(rp, 'RESULTS', {'mask': rp.Result(
      ('--seeds', '0,1'), script='sfron_mask.py', table='mask', takes_cache=True,
      hparams_of=run, docs=('doc.md',))})
  shares = lambda w, m: {'1.0': {'weights_pct': w, 'forget_mass_pct': m},  # noqa: E731
                         '5.0': {'weights_pct': w / 8, 'forget_mass_pct': m / 6}}
  results = {'rows': [{'seed': s, 'mask': shares(40.0 + s, 72.0), 'draw': shares(33.0, 44.0)}
                      for s in (0, 1)],
             'hparams': resolve_run(run)['hparams'],
             'provenance': {'argv': ['--seeds', '0,1', '--json', 'x.json', '--cache-dir', 'c'],
                            'environment': {}, 'finished': '2026-12-06T08:00:00+00:00',
                            'devices': {'count': 1, 'kind': 'cpu'}}}
  (tmp_path / 'mask').mkdir()
  (tmp_path / 'mask' / 'results.json').write_text(json.dumps(results))
  _write_command(tmp_path / 'mask', 'mask')
  table = rp.render_table('mask', results)
  assert table.splitlines()[2:] == [
      '| 1 | 40.5 ± 0.5 | 33.0 ± 0.0 | 72.0 ± 0.0 | 44.0 ± 0.0 |',
      '| 5 | 5.1 ± 0.1 | 4.1 ± 0.0 | 12.0 ± 0.0 | 7.3 ± 0.0 |']
  (tmp_path / 'doc.md').write_text(rp.render_block('mask', results, tmp_path) + '\n')
  assert rp.check(base=tmp_path, root=tmp_path) == {}
  results['hparams']['sfron']['gamma'] = 2.0  # as if SFR-on's threshold had moved since
  (tmp_path / 'mask' / 'results.json').write_text(json.dumps(results))
  (tmp_path / 'doc.md').write_text(rp.render_block('mask', results, tmp_path) + '\n')
  assert rp.check(base=tmp_path, root=tmp_path) == {
      'mask': ['stale: hparams.sfron.gamma: stored 2.0, now 1.0']}


def test_a_generation_summary_shows_ua_iterations_to_forget_accuracy_and_fid():
  rp = _reproduce()
  stat = lambda v: {'mean': v, 'std': 0.0}
  stats = {'UA': stat(98.0), 'steps_to_forget': stat(550.0), 'acc_remaining': stat(64.22),
           'FID': stat(27.904)}
  assert rp.CELLS['forgetting']({'methods': {'esd': stats}}, 'esd') == '98.0 | 550 | 64.2 | 27.9'
  stats['steps_to_forget'] = None  # not forgotten on any seed
  assert rp.CELLS['forgetting']({'methods': {'esd': stats}}, 'esd') == '98.0 | never | 64.2 | 27.9'


def test_a_result_on_another_original_than_a_later_one_of_the_same_settings_is_stale(
    tmp_path, monkeypatch):
  rp = _reproduce()
  argv = ('run', '--methods', 'ft', '--seeds', '0,1')
  for name in ('early', 'late', 'other'):
    monkeypatch.setitem(rp.RESULTS, name, rp.Result(argv))

  def store(name, finished, models):
    results = _fake_result(tmp_path / name, [*argv, '--out', str(tmp_path / 'o')], False)
    results['provenance']['finished'] = finished
    results['original_models'] = models
    (tmp_path / name / 'fake' / 'results.json').unlink()
    (tmp_path / name / 'fake').rmdir()
    _write_command(tmp_path / name, name)
    (tmp_path / name / 'results.json').write_text(json.dumps(results))

  same = {'0': {'key': 'original-aa', 'fingerprint': 'f0'},
          '1': {'key': 'original-bb', 'fingerprint': 'f1'}}
  store('early', '2026-12-04T10:00:00', same)
  store('late', '2026-12-06T10:00:00', same)
  store('other', '2026-12-05T10:00:00', {'0': {'key': 'original-cc', 'fingerprint': 'g0'}})
  assert rp.check(['early', 'late', 'other'], base=tmp_path) == {}
  # seed 1's original came out otherwise in the later run: the earlier result is stale
  store('late', '2026-12-06T10:00:00', {**same, '1': {'key': 'original-bb', 'fingerprint': 'f2'}})
  found = rp.check(['early', 'late', 'other'], base=tmp_path)
  assert list(found) == ['early'] and len(found['early']) == 1, found
  assert found['early'][0].startswith('measured on another original of seed 1 (original-bb, '
                                      'fingerprint f1) than late (f2)')
  assert rp.check(['late'], base=tmp_path) == {}
  # a historical result is not compared
  monkeypatch.setitem(rp.RESULTS, 'early', rp.Result(argv, historical='kept on purpose'))
  assert rp.check(['early', 'late'], base=tmp_path) == {}


def test_check_or_list_with_only_inspects_those_results_and_measures_nothing(monkeypatch,
                                                                             capsys):
  rp = _reproduce()

  def measure(name, cache_dir=None):
    raise AssertionError(f'--check/--list --only measured {name}')

  monkeypatch.setattr(rp, 'run', measure)
  checked = []
  monkeypatch.setattr(rp, 'check', lambda names=None: checked.append(names) or {})
  assert rp.main(['--check', '--only', 'default_run']) == 0
  assert rp.main(['--list', '--only', 'default_run', '--only', 'digits_class3']) == 0
  assert checked == [['default_run'], ['default_run', 'digits_class3']]
  listed = capsys.readouterr().out.split('\n')
  assert [line.split()[0] for line in listed if line] == ['default_run', 'digits_class3']
  with pytest.raises(AssertionError, match='measured default_run'):
    rp.main(['--only', 'default_run'])  # alone, --only re-measures
