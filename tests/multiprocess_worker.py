"""One process of a multi-process run (tests/test_multiprocess.py starts several).

    python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES OUT METHOD...

Joins the run over gloo on localhost, builds the toy unlearning task of
tests/test_parallel.py (the same in every process), runs each method with
``Parallel('shard', LOCAL_DEVICES)`` over the devices of all processes, and process 0
writes the unlearned variables to ``OUT`` (``.npz``, one entry per method and leaf).
"""

import os
import sys

pid, count, port, local = (int(a) for a in sys.argv[1:5])
out, methods = sys.argv[5], sys.argv[6:]
os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={local}'
sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)),
                os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from jaxunlearn.parallel import Parallel, initialize_distributed  # noqa: E402

initialize_distributed(f'127.0.0.1:{port}', count, pid)

import dataclasses  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from test_parallel import GEN_TINY, _generation_task, _hparams, _task  # noqa: E402
from jaxunlearn.methods import get_method, resolve_hparams  # noqa: E402

assert jax.device_count() == count * local, jax.devices()
parallel = Parallel('shard', local)
results = {}
from jaxunlearn import parallel as parallel_module  # noqa: E402

gathers = []  # every call of the program that gathers an evaluation's rows
_gather_rows = parallel_module._gather_rows
parallel_module._gather_rows = lambda whole: (
    lambda outputs: gathers.append(len(outputs)) or _gather_rows(whole)(outputs))

for name in methods:
  if name == f'fail:{pid}':  # this process fails (an uncaught exception) here
    raise ValueError(f'process {pid} fails on purpose')
  if name.startswith('fail:'):
    continue
  if name == 'eval:predict':  # logits of the retain set in batches of 40 (the last padded)
    from jaxunlearn.step import predict
    task, before = _task(), len(gathers)
    results[name] = predict(task.model, task.variables, task.retain_x, batch_size=40,
                            parallel=parallel)
    results[name + ':gathers'] = np.asarray(gathers[before:])
    continue
  if name == 'eval:generate':  # 13 DDIM images on the UNet in batches of 8
    from jaxunlearn.diffusion.unlearn import generate
    task, before = _generation_task('unet'), len(gathers)
    results[name] = generate(task.model, task.variables, task.diffusion,
                             np.arange(13, dtype=np.int32) % 10, (8, 8, 1), seed=3,
                             num_steps=4, batch_size=8, parallel=parallel)
    results[name + ':gathers'] = np.asarray(gathers[before:])
    continue
  if name.startswith('gen:'):  # gen:METHOD:MODEL, a generation method on the digits
    from jaxunlearn.diffusion.methods import GENERATION_METHODS
    _, method, model = name.split(':')
    hp = resolve_hparams(method, {'batch_size': 16, 'lr': 1e-3, **GEN_TINY[method]},
                         GENERATION_METHODS)
    task = dataclasses.replace(_generation_task(model), parallel=parallel)
    variables = GENERATION_METHODS[method].run(task, hp)
  else:
    task = dataclasses.replace(_task(), parallel=parallel)
    variables = get_method(name).run(task, _hparams(name))
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    results[f'{name}{jax.tree_util.keystr(path)}'] = np.asarray(leaf)
if jax.process_index() == 0:
  np.savez(out, **results)
print(f'process {pid}: done', flush=True)
