"""The plain SGD step of the benchmarks' ResNet-18 under XLA:CPU options, beside PyTorch's.

    python experiments/probe_xla_flags.py --json flags.json            # every setting
    python experiments/probe_xla_flags.py --settings default,no_xnnpack   # some of them
    python experiments/probe_xla_flags.py --list                       # their names

Why the library sets no XLA flag on the CPU (docs/running.md): each setting of
:data:`SETTINGS` (an ``XLA_FLAGS`` value, the convolution lowering, or the cores the
process may use) runs in a process of its own, since XLA reads its flags once at start.
There the plain step (``bench.py``'s ``plain``: SGD with momentum on the cross-entropy of
a retain batch) and PyTorch's same step on a PyTorch port holding the same weights are
compiled (``first_call_s``: the compile and one step), warmed up and timed interleaved,
``--repeats`` x ``--steps`` calls each, and their medians kept; a digest of the weights
after the calls, the same calls from the same state in every setting, tells whether the
setting rounds as the default does. The same setting varies by a few percent from one
process to the next, so the JAX / PyTorch ratio (both measured in the same process, under
the same load) is the column to compare; the default runs first and last to show the drift. A setting XLA
rejects (an unknown flag, a failed compile) is recorded with its error, not skipped.
``--json`` writes the rows and their provenance after every setting, so a long probe's
finished rows are never lost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# (name, XLA_FLAGS, other environment, cores: None for all) of each setting, in run order;
# 'bfloat16' is no flag: the network computes in bfloat16 (float32 weights), PyTorch's not
SETTINGS = (
    ('default', '', {}, None),
    ('conv_xla', '', {'JAXUNLEARN_CPU_CONV': 'xla'}, None),
    ('onednn', '--xla_cpu_use_onednn=true', {}, None),
    ('onednn_custom_call', '--xla_cpu_use_onednn=true '
     '--xla_cpu_experimental_onednn_custom_call=true', {}, None),
    ('onednn_fusion', '--xla_cpu_use_onednn=true '
     '--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce', {}, None),
    ('no_xnnpack', '--xla_cpu_use_xnnpack=false', {}, None),
    ('xnn_fusion', '--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce', {}, None),
    ('no_ynn_fusion', '--xla_cpu_experimental_ynn_fusion_type=', {}, None),
    ('xnn_fusion_no_ynn', '--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce '
     '--xla_cpu_experimental_ynn_fusion_type=', {}, None),
    ('ynn_dot_conv', '--xla_cpu_experimental_ynn_fusion_type=individual_dot,'
     'individual_convolution', {}, None),
    ('ynn_dot_conv_eltwise', '--xla_cpu_experimental_ynn_fusion_type=individual_dot,'
     'individual_convolution,eltwise', {}, None),
    ('xnn_greedy', '--xla_cpu_experimental_xnn_graph_fusion_mode='
     'XNN_GRAPH_FUSION_MODE_GREEDY', {}, None),
    ('xnn_slinky', '--xla_cpu_experimental_xnn_graph_fusion_mode='
     'XNN_GRAPH_FUSION_MODE_GREEDY_SLINKY', {}, None),
    ('eigen_one_thread', '--xla_cpu_multi_thread_eigen=false', {}, None),
    ('fast_math', '--xla_cpu_enable_fast_math=true', {}, None),
    ('codegen_split_1', '--xla_cpu_parallel_codegen_split_count=1', {}, None),
    ('concurrency_scheduler', '--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED',
     {}, None),
    ('concurrency_scheduler_flag', '--xla_cpu_enable_concurrency_optimized_scheduler=true', {},
     None),
    ('memory_scheduler', '--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED', {},
     None),
    ('fast_runtime', '--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME', {}, None),
    ('vector_width_512', '--xla_cpu_prefer_vector_width=512', {}, None),
    ('max_isa_avx2', '--xla_cpu_max_isa=AVX2', {}, None),
    ('tiling_propagation', '--xla_cpu_experimental_enable_tiling_propagation=true', {}, None),
    ('no_fusion_emitters', '--xla_cpu_use_fusion_emitters=false', {}, None),
    ('no_thunk_runtime', '--xla_cpu_use_thunk_runtime=false', {}, None),
    ('opt_level_1', '--xla_backend_optimization_level=1', {}, None),
    ('opt_level_0', '--xla_backend_optimization_level=0', {}, None),
    ('no_expensive_llvm_passes', '--xla_llvm_disable_expensive_passes=true', {}, None),
    ('vector_width_128', '--xla_cpu_prefer_vector_width=128', {}, None),
    ('no_concurrency_scheduler', '--xla_cpu_enable_concurrency_optimized_scheduler=false', {},
     None),
    ('codegen_split_2', '--xla_cpu_parallel_codegen_split_count=2', {}, None),
    ('one_core', '', {}, 1),
    ('bfloat16', '', {}, None),
    ('default_again', '', {}, None),
)
BY_NAME = {s[0]: s for s in SETTINGS}


def describe(name: str) -> str:
  """A setting as the docs table names it."""
  if name == 'default_again':
    return 'default, again at the end'
  if name == 'bfloat16':
    return 'bfloat16 computation (`ResNet(dtype=jnp.bfloat16)`, float32 weights)'
  _, flags, env, cores = BY_NAME[name]
  parts = [f'`{flags}`'] if flags else []
  parts += [f'`{k}={v}`' for k, v in env.items()]
  if cores:
    parts.append(f'{cores} core{"s" if cores > 1 else ""} (affinity) instead of all')
  return ' '.join(parts) or 'default (no flag)'


def child(args) -> dict:
  """Times the plain step and PyTorch's in this process (its flags already set)."""
  if BY_NAME[args.child][3]:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:BY_NAME[args.child][3]]))
  import jax
  from bench import jax_cases, torch_cases
  from bench_common import median_ms, model_and_batches
  model, variables, forget, retain, w = model_and_batches(args)
  if args.child == 'bfloat16':
    import jax.numpy as jnp
    model = model.clone(dtype=jnp.bfloat16)
  cases, masks = jax_cases(model, variables, forget, retain, w, args.batch)
  step, state, step_args = cases['plain']
  holder = [state]

  def plain():
    holder[0], _ = step(holder[0], *step_args)
    return holder[0]
  start = time.perf_counter()
  jax.block_until_ready(plain())   # the compile and one step
  first_call_s = time.perf_counter() - start
  timed = {'plain': plain}
  if not args.no_torch:
    import torch
    torch_plain = torch_cases(model.clone(dtype=jax.numpy.float32), variables, forget, retain,
                              masks, model.num_classes)
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores this process may use
    timed['torch_plain'] = torch_plain['torch_plain']
  ms = median_ms(timed, args.steps, args.repeats)
  # every setting makes the same calls from the same state: equal bytes, equal rounding
  leaves = jax.tree.leaves(jax.device_get(holder[0].params))
  digest = hashlib.sha256(b''.join(np.ascontiguousarray(x).tobytes() for x in leaves))
  return {'ms': ms, 'first_call_s': first_call_s, 'params_sha256': digest.hexdigest(),
          'jax': jax.__version__, 'cores': len(os.sched_getaffinity(0)),
          'devices': jax.local_device_count()}


def run_setting(name: str, argv: list[str], timeout: int) -> dict:
  """``name`` in a process of its own: its row (``error``: what went wrong, if it did)."""
  _, flags, env, _ = BY_NAME[name]
  environ = {**os.environ, 'XLA_FLAGS': flags, **env}
  if 'JAXUNLEARN_CPU_CONV' not in env:
    environ.pop('JAXUNLEARN_CPU_CONV', None)
  row = {'setting': name, 'description': describe(name), 'flags': flags, 'env': env,
         'cores': BY_NAME[name][3]}
  try:
    done = subprocess.run([sys.executable, __file__, '--child', name, *argv], env=environ,
                          capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {**row, 'error': f'no result in {timeout} s'}
  lines = [ln for ln in done.stdout.splitlines() if ln.startswith('{')]
  if done.returncode != 0 or not lines:
    tail = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
    return {**row, 'error': (tail[-1] if tail else f'exit {done.returncode}')[:300]}
  result = json.loads(lines[-1])
  ms = result['ms']
  row.update(plain_ms=ms['plain'], torch_ms=ms.get('torch_plain'), cores=result['cores'],
             devices=result['devices'], first_call_s=result['first_call_s'],
             params_sha256=result['params_sha256'])
  if ms.get('torch_plain'):
    row['jax_over_torch'] = ms['plain'] / ms['torch_plain']
  return row


def main(argv=None) -> None:
  sys.path.insert(0, str(Path(__file__).parent))
  from bench_common import add_model_args
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_model_args(parser)
  parser.set_defaults(repeats=7)
  parser.add_argument('--settings', default=None,
                      help='comma-separated names of SETTINGS (default: all of them; --list)')
  parser.add_argument('--list', action='store_true', help='print the settings and exit')
  parser.add_argument('--no-torch', action='store_true', help='JAX steps only')
  parser.add_argument('--timeout', type=int, default=600, help='seconds per setting')
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(child(args)), flush=True)
    return
  if args.list:
    for name, *_ in SETTINGS:
      print(f'{name:28s} {describe(name)}')
    return
  names = args.settings.split(',') if args.settings else [s[0] for s in SETTINGS]
  unknown = [n for n in names if n not in BY_NAME]
  if unknown:
    parser.error(f'unknown settings {unknown}: --list names them')
  # what the children are given: the model and timing arguments, never --json or --settings
  passed = ['--model', args.model, '--width', str(args.width), '--image-size',
            str(args.image_size), '--batch', str(args.batch), '--steps', str(args.steps),
            '--repeats', str(args.repeats), *(['--no-torch'] if args.no_torch else [])]
  from jaxunlearn.provenance import provenance
  rows = []
  for name in names:
    row = run_setting(name, passed, args.timeout)
    rows.append(row)
    shown = (f"fails: {row['error']}" if 'error' in row else
             f"{row['plain_ms']:.1f} ms" + (f", PyTorch {row['torch_ms']:.1f} ms, JAX / PyTorch "
                                           f"{row['jax_over_torch']:.2f}"
                                           if row.get('torch_ms') else ''))
    print(f'{name:28s} {shown}', flush=True)
    if args.json:
      Path(args.json).write_text(json.dumps(
          {'config': vars(args), 'rows': rows, 'provenance': provenance(vars(args))}, indent=1))


if __name__ == '__main__':
  main()
