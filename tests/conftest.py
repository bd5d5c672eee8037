import os

# Eight fake CPU devices, for the pmap checks of the transform harness and the data-parallel
# equivalence tests. Must be set before jax is imported anywhere.
# XLA:CPU aborts the process when a participant of an in-process collective is late by
# its terminate timeout (seconds by default); on a loaded 2-core host, with another test
# process compiling, eight fake devices' threads can be that late without anything being
# wrong (a CI run aborted so, compiling SFR-on's step while another program ran). The tests
# await every multi-device program (jaxunlearn.parallel); these flags only stop a slow host
# from killing a correct run.
CPU_TEST_FLAGS = {
    '--xla_force_host_platform_device_count': '8',
    '--xla_cpu_collective_call_terminate_timeout_seconds': '1800',
    '--xla_cpu_collective_timeout_seconds': '1800',
}
_flags = os.environ.get('XLA_FLAGS', '')
os.environ['XLA_FLAGS'] = ' '.join(
    [_flags] + [f'{k}={v}' for k, v in CPU_TEST_FLAGS.items() if k not in _flags]).strip()

# Compiled programs are kept on disk and shared by the test workers (and the `jaxunlearn`
# processes some tests start): many tests compile the same small steps, and reading one back
# is cheaper than compiling it again (the default suite on 2 cores: 8.5 -> 6.9 minutes in a
# cold cache, 2026-12-04). A cached program is the program XLA compiled, so results are
# unchanged. JAX_COMPILATION_CACHE_DIR set beforehand wins ('' turns it off).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '.pytest_cache', 'jax-compilation'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

# Tests never touch the user's cache of trained models.
os.environ.setdefault('JAXUNLEARN_CACHE', os.path.join(os.path.dirname(__file__), '..', '.pytest_cache', 'jaxunlearn'))

# torchvision's PyPI wheel needs CUDA libraries the CPU torch here lacks; diffusers imports
# torchvision when it is installed (pytorch-fid needs it), so load its Python code only.
from tests.torch_reference import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()

import numpy as np
import pytest

from jaxunlearn.data import Dataset


def synthetic_dataset(n_train=60, n_test=30, classes=3, size=8, seed=0) -> Dataset:
  """Separable toy images: class c has a bright c-th row band."""
  rng = np.random.default_rng(seed)

  def make(n):
    y = (np.arange(n) % classes).astype(np.int32)
    x = rng.normal(0, 0.3, (n, size, size, 1)).astype(np.float32)
    for c in range(classes):
      x[y == c, c * 2:c * 2 + 2, :, 0] += 2.0
    return x, y

  x_train, y_train = make(n_train)
  x_test, y_test = make(n_test)
  return Dataset('toy', x_train, y_train, x_test, y_test, classes)


@pytest.fixture(autouse=True, scope='module')
def _release_compiled_programs():
  """Drops jax's caches of traced and compiled programs after each test module: a worker
  runs many modules, and the programs of one are not reused by the next (without this a
  worker of the slow suite grew past 6 GiB)."""
  yield
  import gc

  import jax
  jax.clear_caches()
  gc.collect()


@pytest.fixture
def toy():
  return synthetic_dataset()


@pytest.fixture(scope='session')
def tiny_unet():
  """A class-conditional UNet2D (3 classes + null) on 8x8x1 images and its variables,
  initialised once per test session (initialisation takes ~10 s to compile on CPU)."""
  import jax
  import jax.numpy as jnp

  from jaxunlearn.models import UNet2D
  model = UNet2D(in_channels=1, out_channels=1, block_out_channels=(8, 16),
                 down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
                 up_block_types=('AttnUpBlock2D', 'UpBlock2D'), layers_per_block=1,
                 norm_num_groups=4, num_class_embeds=4)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros(1),
                                  jnp.zeros(1, jnp.int32))
  return model, variables
