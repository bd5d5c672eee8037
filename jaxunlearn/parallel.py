"""Data parallelism: the one place where a single-device step becomes a multi-device one.

A step is ``fn(state, *batches, key) -> (state, metrics)`` (see :mod:`jaxunlearn.step`).
:class:`Parallel` compiles it in one of three forms, with the same results to float32
rounding (tests/test_parallel.py checks every method on 8 devices against 1):

- ``'none'``: ``jax.jit`` on the default device.
- ``'pmap'``: ``jax.pmap`` over ``size`` local devices with axis name :data:`AXIS`. The
  state is replicated, each batch split into equal shards along its first axis, the key
  broadcast. The step itself must be written for it (the steps of :mod:`jaxunlearn.step`
  are): losses are normalised by the *global* batch weight, gradients and metrics averaged
  with ``lax.pmean``, BatchNorm statistics synchronised (the objective's ``on_axis``),
  per-example random draws (labels, timesteps, noise) made for the global batch
  (:class:`ShardKey`, :func:`draw`).
- ``'vmap'``: not devices but an ensemble: ``models`` independent models on one device,
  the step ``jax.vmap``-ed over a leading model axis of the state, the batches (each
  model's own, ``[models, B, ...]``) and the key, in one ``jax.jit``. The loops of
  :mod:`jaxunlearn.train` take one seed per model; metrics come back averaged over models
  (``nonfinite``: the largest count). BatchNorm statistics stay per model.
- ``'shard'``: ``jax.jit`` of the unchanged single-device step, its batch arguments
  sharded over a 1-D ``Mesh`` of the devices (``PartitionSpec(AXIS)``), the state and key
  replicated. XLA's SPMD partitioner inserts the collectives, so the program means what it
  means on one device.

On the CPU, every multi-device program ('pmap' and 'shard') is awaited
(``block_until_ready``) before the next is dispatched, and a 'pmap' program's outputs are
read from device 0's own shard (``_first_replica``), not by indexing: in current jax a
``pmap`` output is an array sharded over all its devices, so ``out[0]`` is one more program
on all of them, dispatched asynchronously. XLA:CPU runs the participants of its in-process
collectives on a shared thread pool; with several such programs in flight over many fake
devices on few cores, a rendezvous can wait for a participant that never gets a thread,
and XLA then aborts the process ("Expected 8 threads to join the rendezvous, but not all
of them arrived on time"). A script dispatching two pmapped psums back to back, three
copies at once on 2 cores, aborted so in 2 of 3 processes; awaiting each call, in none.
Accelerators are unaffected and keep asynchronous dispatch.

Several processes (a TPU pod slice, several GPU hosts, or processes on one machine): call
:func:`initialize_distributed` (``jax.distributed.initialize``) first in every process.
``'shard'`` then spans the devices of all processes: its mesh is every process's first
``num_devices`` local devices, in process order; every process holds the same global batch
(batches are a pure function of seed and pass) and places only the rows of its own devices
(``jax.make_array_from_callback``), so the program and its random draws are those of one
device whatever the number of processes. :meth:`Parallel.get` returns the same host copy in
every process (replicated arrays read locally, sharded ones gathered). ``'pmap'`` stays
within a process's local devices (each host loads its own shard, :func:`host_shard`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = 'devices'
MODES = ('none', 'pmap', 'shard', 'vmap')


class ShardKey(NamedTuple):
  """A PRNG key for one shard of a global batch, so per-example draws (random labels) are
  those of the unsharded batch: draw ``global_size`` values and keep
  ``[offset, offset + local size)``."""

  key: jax.Array
  offset: jax.Array
  global_size: int


def jit_run_once(fn):
  """``jax.jit(fn)`` for a program whose compile costs more than its runs (a model's
  initialiser, an evaluation's forward pass): on the CPU compiled with LLVM's -O1 instead
  of -O2. A ResNet-18's initialiser (random draws for ~60 tensors) compiled in 4.5 s at -O2
  and 1.7 s at -O1, with the same values bit for bit (integer random bits and the same float
  operations; ``tests/test_train.py`` compares them with flax's init op by op); its
  eval-mode forward pass of 512 digits in 1.5 s instead of 1.9, the same logits bit for bit
  and as fast (120 against 126 ms). Training steps keep XLA's default level (their run time
  is what counts, and a SalUn step rounds differently at -O1), and so do the other batched
  programs (samplers, FID features: ``Parallel.batched(run_once=False)``)."""
  if jax.default_backend() != 'cpu':
    return jax.jit(fn)
  try:
    return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 1})
  except TypeError:  # a jax whose jit has no compiler_options: the default level
    return jax.jit(fn)


@dataclasses.dataclass(frozen=True)
class Parallel:
  """How steps run over devices.

  Attributes:
    mode: 'none', 'pmap' or 'shard' (see the module docstring).
    num_devices: how many local devices (None: all of them). Batches must split evenly:
      loops round their batch size up to a multiple of ``size`` (see
      :func:`jaxunlearn.train.epoch_batches`).
    shard_params: with 'shard', also split every parameter and optimizer-state array over
      the devices, along its last axis that divides evenly (FSDP-style, for models that do
      not fit one device; XLA gathers them where a step needs them). Arrays with no such
      axis, or smaller than ``min_shard_size`` entries, stay replicated.
    min_shard_size: see ``shard_params``.
    models: with 'vmap', the number of models of the ensemble.
  """

  mode: str = 'none'
  num_devices: int | None = None
  shard_params: bool = False
  min_shard_size: int = 2**14
  models: int = 0

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"parallel mode must be one of {', '.join(MODES)}, got {self.mode!r}")
    if self.shard_params and self.mode != 'shard':
      raise ValueError("shard_params needs parallel mode 'shard'")
    if (self.mode == 'vmap') != (self.models > 0):
      raise ValueError(f"parallel mode 'vmap' needs models >= 1 (and only it takes models); "
                       f'got mode {self.mode!r}, models {self.models}')
    if self.num_devices is not None:  # (the default touches no backend: it is built at import)
      available = jax.local_device_count()
      if self.mode == 'none' and self.num_devices != 1:
        raise ValueError(f"parallel mode 'none' runs on one device, not {self.num_devices}")
      if not 1 <= self.num_devices <= available:
        raise ValueError(f'{self.num_devices} devices requested, {available} available '
                         f'({jax.local_devices()[0].platform}); on the CPU, set XLA_FLAGS='
                         '--xla_force_host_platform_device_count=N before importing jax')

  @classmethod
  def auto(cls, num_devices: int | None = None) -> Parallel:
    """'pmap' over ``num_devices`` (default: all local devices) when that is more than
    one, else 'none'."""
    n = jax.local_device_count() if num_devices is None else num_devices
    return cls('pmap', num_devices) if n > 1 else cls('none')

  @classmethod
  def from_setting(cls, mode: str, num_devices: int | None = None,
                   shard_params: bool = False) -> Parallel:
    """The ``Parallel`` of a job's setting: ``mode`` one of 'auto' (:meth:`auto`), 'none',
    'pmap' or 'shard' (the ``--parallel`` flag)."""
    if num_devices is not None and num_devices < 1:
      raise ValueError(f'--devices must be >= 1 (or left out: all local devices), got '
                       f'{num_devices}')
    if mode == 'auto':
      return cls.auto(num_devices)
    return cls(mode, num_devices, shard_params)

  @classmethod
  def ensemble(cls, models: int) -> Parallel:
    """``models`` models trained side by side by ``jax.vmap`` (mode 'vmap')."""
    return cls('vmap', models=models)

  @property
  def is_ensemble(self) -> bool:
    return self.mode == 'vmap'

  @property
  def size(self) -> int:
    """Devices a batch is split over (1 for 'none' and 'vmap'; under 'shard', those of
    every process)."""
    if self.mode in ('none', 'vmap'):
      return 1
    local = self.num_devices or jax.local_device_count()
    return local * jax.process_count() if self.mode == 'shard' else local

  @property
  def axis_name(self) -> str | None:
    """The collective axis the step must use (``pmap`` only; sharded jit needs none)."""
    return AXIS if self.mode == 'pmap' else None

  @property
  def devices(self):
    """The devices of the step: local ones, or under 'shard' every process's first
    ``num_devices`` local devices in process order."""
    if self.mode == 'shard' and jax.process_count() > 1:
      local = self.num_devices or jax.local_device_count()
      return [d for p in range(jax.process_count())
              for d in jax.local_devices(process_index=p)[:local]]
    return jax.local_devices()[:self.size]

  @property
  def multi_process(self) -> bool:
    """Whether this step spans the devices of several processes ('shard' only)."""
    return self.mode == 'shard' and jax.process_count() > 1

  def objective(self, objective):
    """``objective`` (:mod:`jaxunlearn.objectives`) as the step must see it: under ``pmap``
    its ``on_axis(AXIS)`` (a classifier's BatchNorm statistics averaged over devices)."""
    return objective.on_axis(AXIS) if self.mode == 'pmap' else objective

  def tx(self, tx_factory: Callable):
    """The transformation of ``tx_factory``, told the collective axis when it has one."""
    return tx_factory(axis_name=AXIS) if self.mode == 'pmap' else tx_factory()

  # ---- placement --------------------------------------------------------------------

  def _mesh(self):
    return Mesh(np.asarray(self.devices), (AXIS,))

  def put(self, tree):
    """Places a state (or any tree) for the compiled steps: replicated over the devices."""
    if self.mode == 'pmap':  # a leading device axis; the first pmapped call transfers it
      return jax.tree.map(lambda a: np.broadcast_to(a, (self.size, *np.shape(a))),
                          jax.device_get(tree))
    if self.mode == 'shard':
      mesh = self._mesh()
      if self.multi_process:  # each process fills its own devices' parts (same values)
        return jax.tree.map(lambda a: _from_host(a, NamedSharding(mesh, self._spec(a))), tree)
      return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(mesh, self._spec(a))), tree)
    return tree

  def _spec(self, a) -> PartitionSpec:
    """Replicated, or (``shard_params``) split along the last axis divisible by ``size``."""
    shape = np.shape(a)
    if self.shard_params and np.size(a) >= self.min_shard_size:
      for axis in reversed(range(len(shape))):
        if shape[axis] % self.size == 0:
          return PartitionSpec(*([None] * axis), AXIS)
    return PartitionSpec()

  def get(self, tree):
    """Host (numpy) copy of a placed tree, one replica."""
    if self.mode == 'pmap':
      tree = jax.tree.map(_first_replica, tree)
    if self.multi_process:
      return jax.tree.map(_to_host, tree)
    return jax.device_get(tree)

  def split(self, batch):
    """A global batch as the compiled step takes it (``pmap``: ``[size, B / size, ...]``)."""
    def check(a):
      if np.shape(a)[0] % self.size:
        raise ValueError(f'a batch of {np.shape(a)[0]} examples does not split over '
                         f'{self.size} devices; use a batch size divisible by {self.size}')
      return a
    batch = jax.tree.map(check, batch)
    if self.mode == 'pmap':
      return jax.tree.map(lambda a: np.reshape(a, (self.size, -1, *np.shape(a)[1:])), batch)
    if self.mode == 'shard':
      rows = NamedSharding(self._mesh(), PartitionSpec(AXIS))
      if self.multi_process:  # this process's devices' rows of the global batch
        return jax.tree.map(lambda a: _from_host(a, rows), batch)
      return jax.device_put(batch, rows)
    return batch

  # ---- compilation ------------------------------------------------------------------

  def compile(self, fn: Callable, num_batches: int, donate: bool = True) -> Callable:
    """``fn(state, *batches, key) -> (state, metrics)`` compiled for these devices.

    The returned callable takes the *global* batches (numpy or host arrays) and a state
    placed with :meth:`put`, and returns the new placed state and the metrics of one
    replica.
    """
    donate_argnums = (0,) if donate else ()
    if self.mode == 'none':
      return jax.jit(fn, donate_argnums=donate_argnums)
    if self.mode == 'vmap':
      def ensemble_step(state, *args):
        state, metrics = jax.vmap(fn)(state, *args)
        return state, {k: (v.max() if k == 'nonfinite' else v.mean(0))
                       for k, v in metrics.items()}
      return jax.jit(ensemble_step, donate_argnums=donate_argnums)
    if self.mode == 'pmap':
      mapped = jax.pmap(fn, AXIS, in_axes=(0,) * (1 + num_batches) + (None,),
                        donate_argnums=donate_argnums, devices=self.devices)

      def call(state, *args):
        *batches, key = args
        state, metrics = self._await(mapped(state, *[self.split(b) for b in batches], key))
        return state, jax.tree.map(_first_replica, metrics)
      return call

    compiled = {}

    def call(state, *args):
      *batches, key = args
      if 'step' not in compiled:  # the state keeps the placement ``put`` gave it
        mesh = self._mesh()
        placement = jax.tree.map(lambda a: NamedSharding(mesh, self._spec(a)), state)
        compiled['step'] = jax.jit(fn, donate_argnums=donate_argnums,
                                   out_shardings=(placement, NamedSharding(mesh, PartitionSpec())))
      if self.multi_process:  # a global (replicated) key, like the state
        key = _from_host(key, NamedSharding(self._mesh(), PartitionSpec()))
      return self._await(compiled['step'](state, *[self.split(b) for b in batches], key))
    return call

  def batched(self, fn: Callable, per_example: bool = False,
              run_once: bool = False) -> Callable:
    """``fn(args, batch)`` compiled for these devices: ``args`` replicated, ``batch``
    split. With ``per_example`` the output's rows follow the batch's (e.g. logits);
    otherwise it is one value, which under ``pmap`` ``fn`` must average itself
    (``lax.pmean`` over :data:`AXIS`, e.g. a batch gradient). ``run_once``: a program whose
    compile outweighs its runs (an evaluation's forward pass), compiled by
    :func:`jit_run_once` on one device."""
    if self.mode == 'none':
      return jit_run_once(fn) if run_once else jax.jit(fn)
    if self.mode == 'vmap':  # args per model, one batch for all: outputs [models, ...]
      return jax.jit(jax.vmap(fn, in_axes=(0, None)))
    if self.mode == 'pmap':
      mapped = jax.pmap(fn, AXIS, in_axes=(None, 0), devices=self.devices)

      def call(args, batch):
        out = self._await(mapped(args, self.split(batch)))
        if per_example:  # assembled on the host from the shards: no program runs
          return jax.tree.map(lambda a: np.asarray(a).reshape(-1, *a.shape[2:]), out)
        return jax.tree.map(_first_replica, out)
      return call
    if self.multi_process:
      # A per-example output stays a global array, its rows on the devices that made them
      # (:meth:`rows` gathers an evaluation's batches at once); one value is replicated
      # and read from this process's copy, no transfer.
      mesh = self._mesh()
      out = NamedSharding(mesh, PartitionSpec(AXIS) if per_example else PartitionSpec())
      jitted = jax.jit(fn, out_shardings=out)

      def call(args, batch):
        out = self._await(jitted(self.put(args), self.split(batch)))
        return out if per_example else jax.tree.map(_to_host, out)
      return call
    jitted = jax.jit(fn)
    return lambda args, batch: self._await(jitted(args, self.split(batch)))

  def rows(self, outputs: list, n: int | None = None):
    """The host (numpy) copy of the per-example outputs of several batches of a
    :meth:`batched` ``per_example`` function, concatenated along their rows and cut to the
    first ``n`` (the rest is the last batch's padding).

    Across processes the outputs are global arrays whose rows lie on every process's
    devices: they are gathered here in one program for the whole evaluation (not a
    transfer per batch), and every process gets the same copy (only process 0 writes it).
    """
    if not outputs:
      raise ValueError('rows: no outputs to gather')
    if self.multi_process:
      whole = NamedSharding(self._mesh(), PartitionSpec())
      gathered = _gather_rows(whole)(list(outputs))
      out = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), self._await(gathered))
    else:
      out = jax.tree.map(lambda *a: np.concatenate([np.asarray(b) for b in a]), *outputs)
    return out if n is None else jax.tree.map(lambda a: a[:n], out)

  def _await(self, out):
    # One multi-device program at a time on the CPU (see the module docstring: XLA:CPU's
    # collectives can otherwise starve each other of threads and abort).
    return jax.block_until_ready(out) if self.devices[0].platform == 'cpu' else out


@functools.lru_cache(maxsize=8)
def _gather_rows(whole: NamedSharding):
  """One compiled program that concatenates per-batch outputs and replicates the result
  on every device (XLA's all-gathers of every batch in one program)."""
  return jax.jit(lambda outputs: jax.tree.map(lambda *a: jnp.concatenate(a), *outputs),
                 out_shardings=whole)


def _first_replica(a):
  """Replica 0 of a ``pmap`` output as an array on device 0. A ``pmap`` output is sharded
  over all its devices, and ``a[0]`` would run a program on all of them (with collectives,
  its result replicated), as would every operation on that result; device 0's own shard
  needs none."""
  if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1:
    return a.addressable_data(0)[0]
  return a[0]


def _from_host(a, sharding: NamedSharding) -> jax.Array:
  """A global array of ``sharding`` from the full value ``a`` (the same in every process):
  each process supplies the parts on its own devices. A PRNG key array (replicated) goes
  as its key data."""
  if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
    data = _from_host(jax.random.key_data(a), NamedSharding(sharding.mesh, PartitionSpec()))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
  a = np.asarray(jax.device_get(a))
  return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _to_host(a):
  """A host (numpy) copy of ``a``, the same in every process: a replicated array read from
  this process's copy, a sharded one gathered from all processes."""
  if not isinstance(a, jax.Array):
    return np.asarray(a)
  if a.is_fully_addressable:
    return jax.device_get(a)
  if a.sharding.is_fully_replicated:  # (a PRNG key stays a key array, as device_get keeps it)
    return jax.device_get(a.addressable_data(0))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))


SINGLE = Parallel()  # one device, plain jax.jit: the default everywhere


def shard_key(key, local_size: int, axis_name: str | None) -> ShardKey | jax.Array:
  """The loss key of a step: ``key`` itself on one device (or under sharded jit), a
  :class:`ShardKey` for this device's slice of the global batch under ``pmap``."""
  if axis_name is None:
    return key
  size = jax.lax.psum(1, axis_name)
  return ShardKey(key, jax.lax.axis_index(axis_name) * local_size, local_size * size)


def split_key(key, num: int = 2) -> list:
  """``jax.random.split`` that also splits a :class:`ShardKey` (each part keeps its slice)."""
  if isinstance(key, ShardKey):
    return [key._replace(key=k) for k in jax.random.split(key.key, num)]
  return list(jax.random.split(key, num))


def draw(key, sample: Callable, shape) -> jax.Array:
  """``sample(key, shape)``, a per-example draw whose first axis is the batch: with a
  :class:`ShardKey` (under ``pmap``), the global batch's draw cut to this device's rows, so
  that random labels, timesteps, noise and label dropout are those of one device.

  Example: ``t = draw(key, lambda k, s: jax.random.randint(k, s, 0, T), (B,))``.
  """
  if isinstance(key, ShardKey):
    full = sample(key.key, (key.global_size, *shape[1:]))
    return jax.lax.dynamic_slice_in_dim(full, key.offset, shape[0])
  return sample(key, tuple(shape))


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, heartbeat_timeout_s: int = 60) -> None:
  """Joins this process to a multi-process run (``jax.distributed.initialize``; with no
  arguments, what the cluster environment says: TPU pods, SLURM, ...). Call it before
  anything touches a JAX backend. On the CPU the processes' collectives go over gloo.

  A process that dies stops sending heartbeats: after ``heartbeat_timeout_s`` the others
  are terminated by JAX's distributed service ("another task died"), instead of waiting
  forever in a collective. What was checkpointed is kept; the same commands resume.
  """
  import inspect
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  options = {}
  if 'heartbeat_timeout_seconds' in inspect.signature(jax.distributed.initialize).parameters:
    options['heartbeat_timeout_seconds'] = heartbeat_timeout_s
  jax.distributed.initialize(coordinator, num_processes, process_id, **options)
  previous = sys.excepthook

  def leave_on_error(kind, value, traceback):  # an uncaught exception ends this process now
    previous(kind, value, traceback)
    leave_if_failed(1)
  sys.excepthook = leave_on_error


def leave_if_failed(code: int) -> int:
  """Returns ``code``, or, in a multi-process run with a failure (``code != 0``), ends this
  process at once with it.

  A Python process that returns normally takes part in JAX's shutdown barrier, which waits
  for every process: one that fails while the others wait in a collective would hang with
  them until the barrier's timeout (minutes). Ending now closes its connections, so the
  others' collectives fail at once (gloo: "connection reset by peer") or their distributed
  service stops them within the heartbeat timeout. :func:`initialize_distributed` does this
  for an uncaught exception; call it with your exit status in your own script.
  """
  if code and jax.process_count() > 1:
    print(f'jaxunlearn: process {jax.process_index()} of {jax.process_count()} failed '
          f'(exit status {code}) and stops now; the others stop when they miss it. What was '
          'checkpointed is kept: start every process again to resume.', file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  return code


def host_shard(indices: np.ndarray, process_index: int | None = None,
               process_count: int | None = None) -> np.ndarray:
  """This host's contiguous share of ``indices`` (multi-host data loading): process ``i``
  of ``n`` reads ``indices[i * m:(i + 1) * m]``, ``m = len // n`` (the remainder dropped
  so every host has as many examples)."""
  i = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  share = len(indices) // n
  return np.asarray(indices)[i * share:(i + 1) * share]
