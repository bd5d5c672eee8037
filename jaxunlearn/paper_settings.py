"""The papers' settings: every hyperparameter of every paper script, and where it comes from.

``SETTINGS[setting][method][name]`` is a :class:`Ref`: the value and the file and line of
the reference code it was read from (or ``ours``, with the reason, where no reference fixes
it). The paper scripts (``experiments/cifar10_random10.py`` ...) take their overrides from
here (:func:`overrides`); ``docs/paper-settings.md`` is :func:`markdown` of this table, and
``tests/test_paper_settings.py`` checks that every script resolves to these values, that
every hyperparameter of every method a script runs has a row, and that the docs show this
table, so none of the three can drift from the others.

Which code a method's values come from: the method's own authors' code where it fixes them
(SalUn: OPTML-Group/Unlearn-Saliency; SFR-on: K1nght/Unified-Unlearning-w-Remain-Geometry);
for the baselines SalUn's paper runs (FT, GA, RL, l1-sparse, IU, BS), that code base, the
commands of its predecessor OPTML-Group/Unlearn-Sparse, and those of JingWu321/Scissorhands
(built on the same code; its scripts fix IU's and l1-sparse's ``--alpha``); for SCRUB and
Bad Teacher, SFR-on's code (its CIFAR-10 blocks); for ScissorHands, its authors' CIFAR-10
command. Values a reference leaves to its command line (``--alpha
${alpha}``) are marked ``ours``. The library's own defaults (``jaxunlearn methods``) are
scaled for the 1.4k-image digits set and are not these.
"""

from __future__ import annotations

import dataclasses
from typing import Any

REPOS = {
    'salun': 'OPTML-Group/Unlearn-Saliency',
    'sparse': 'OPTML-Group/Unlearn-Sparse',
    'sfron': 'K1nght/Unified-Unlearning-w-Remain-Geometry',
    'scissorhands': 'JingWu321/Scissorhands',
}


@dataclasses.dataclass(frozen=True)
class Ref:
  """A hyperparameter's value and its source: ``'repo:path:line'`` (``repo`` a key of
  :data:`REPOS`) or ``'ours'``; ``note`` says what a reader should know about it."""

  value: Any
  source: str
  note: str = ''

  def __post_init__(self):
    repo = self.source.split(':')[0]
    if self.source != 'ours' and (repo not in REPOS or self.source.count(':') != 2):
      raise ValueError(f"a Ref's source is 'repo:path:line' (repo one of {sorted(REPOS)}) or "
                       f"'ours', got {self.source!r}")
    if self.source == 'ours' and not self.note:
      raise ValueError(f'a value of ours ({self.value!r}) needs a note saying why')

  def where(self) -> str:
    """The source as ``owner/repo path:line`` (markdown table cell)."""
    if self.source == 'ours':
      return 'ours'
    repo, path, line = self.source.split(':')
    return f'{REPOS[repo]} `{path}:{line}`'


SALUN_ARGS = 'salun:Classification/arg_parser.py'
SFRON_SH = 'sfron:Classification/scripts/unlearn.sh:6'  # batch_size=128, every method
_CONSTANT = ('the unlearning loop\'s MultiStepLR drops at epochs 91 and 136, after the last '
             'of its 10 epochs: a constant rate')


def _salun_sgd(lr: Ref, epochs: Ref) -> dict:
  """SGD as SalUn's code runs its unlearning loops (``impl.py``): batch 256, momentum 0.9,
  weight decay 5e-4 from its parser, a constant rate."""
  return {'lr': lr, 'epochs': epochs, 'batch_size': Ref(256, f'{SALUN_ARGS}:69'),
          'momentum': Ref(0.9, f'{SALUN_ARGS}:71'),
          'weight_decay': Ref(5e-4, f'{SALUN_ARGS}:72'),
          'schedule': Ref('constant', 'salun:Classification/unlearn/impl.py:95', _CONSTANT)}


def _sfron_sgd(path: str, lines: tuple[int, int, int, int, int], lr, epochs,
               schedule: str) -> dict:
  """SGD as a method file of SFR-on's code sets it (``lines``: momentum, weight decay, lr,
  epochs, schedule), batch 128 from its script."""
  src = lambda i: f'sfron:Classification/unlearn/{path}:{lines[i]}'
  return {'momentum': Ref(0.9, src(0)), 'weight_decay': Ref(5e-4, src(1)),
          'lr': Ref(lr, src(2)), 'epochs': Ref(epochs, src(3)),
          'schedule': Ref(schedule, src(4)), 'batch_size': Ref(128, SFRON_SH)}


def _train() -> dict:
  """The original's (and Retrain's) recipe: SalUn's ``main_train.py`` defaults."""
  return {'epochs': Ref(182, f'{SALUN_ARGS}:74'), 'batch_size': Ref(256, f'{SALUN_ARGS}:69'),
          'lr': Ref(0.1, f'{SALUN_ARGS}:70'), 'momentum': Ref(0.9, f'{SALUN_ARGS}:71'),
          'weight_decay': Ref(5e-4, f'{SALUN_ARGS}:72'),
          'schedule': Ref('step', 'salun:Classification/main_train.py:82',
                          'MultiStepLR(gamma=0.1), stepped once per epoch'),
          'drop_epochs': Ref((91, 136), f'{SALUN_ARGS}:78')}


def _random_labels(passes: str, exclude_true: bool = False) -> dict:
  branch = 'Classification/unlearn/RL.py'
  return {
      'exclude_true_label': Ref(exclude_true, f'salun:{branch}:125',
                                "randint(0, C): the true label too, 1 time in C (the paper's "
                                "eq. 4 says y' != y: --set METHOD.exclude_true_label=true)"),
      'passes': (Ref('alternate', f'salun:{branch}:109', 'CIFAR-10 branch: the forget loader, '
                     'then the retain loader, each epoch') if passes == 'alternate' else
                 Ref('mixed', f'salun:{branch}:51', 'CIFAR-100 branch: forget and retain '
                     'concatenated, one shuffled loader'))}


def _classification(passes: str) -> dict:
  """Every classification method's reference values; ``passes``: RL and SalUn's order of
  the forget and retain examples (the reference's CIFAR-10 or CIFAR-100 branch)."""
  sparse = 'sparse:README.MD'
  sh = 'scissorhands:Classification/sh/main_0.1_cifar10.sh'
  sh_args = 'scissorhands:Classification/arg_parser.py'
  salun_readme = 'salun:Classification/README.md:34'
  return {
      'train': _train(),
      'retrain': {**_train(), 'epochs': Ref(182, f'{SALUN_ARGS}:74', 'the original\'s recipe '
                                            '(SalUn\'s retrain.py takes epochs and lr from '
                                            'its command line)')},
      'ft': _salun_sgd(Ref(0.01, f'{sparse}:70'), Ref(10, f'{sparse}:70')),
      'ga': {**_salun_sgd(Ref(1e-4, f'{sparse}:74'), Ref(5, f'{sparse}:74')),
             'clip_norm': Ref(0.0, 'salun:Classification/unlearn/GA.py:76',
                              'no gradient clipping in SalUn\'s GA')},
      'rl': {**_salun_sgd(Ref(0.01, f'{SALUN_ARGS}:117', 'the parser\'s default (its README '
                                                          'leaves --unlearn_lr open)'),
                          Ref(10, f'{SALUN_ARGS}:121')),
             **_random_labels(passes)},
      'salun': {**_salun_sgd(Ref(0.013, salun_readme), Ref(10, salun_readme)),
                'keep': Ref(0.5, salun_readme, 'mask/with_0.5.pt: the top 50% of weights'),
                **_random_labels(passes)},
      'l1_sparse': {**_salun_sgd(Ref(0.01, f'{sparse}:86'), Ref(10, f'{sparse}:86')),
                    'strength': Ref(1e-4, f'{sh}:32', 'SalUn\'s README leaves --alpha open; '
                                    'the ScissorHands authors\' command on the same code')},
      'iu': {'step_size': Ref(10.0, f'{sh}:20', 'SalUn\'s README leaves --alpha open; the '
                              'ScissorHands authors\' command on the same code'),
             'damping': Ref(1.0, 'ours', 'WoodFisher\'s dampening: our exact Woodbury solve'),
             'num_samples': Ref(256, 'ours', 'examples of the Fisher estimate')},
      'bs': {**_salun_sgd(Ref(1e-6, f'{sh}:28', 'SalUn\'s README gives no command for '
                              'BS; the ScissorHands authors\' on the same code'),
                          Ref(10, f'{sh}:28')),
             'bound': Ref(0.1, 'salun:Classification/unlearn/boundary_sh.py:69',
                          '"hard coding in the paper"; ours in standardized units')},
      'scrub': {**_sfron_sgd('scrub.py', (81, 80, 79, 78, 77), 8e-5, 6, 'cosine'),
                'lr': Ref(8e-5, 'sfron:Classification/unlearn/scrub.py:79', 'the block '
                          'labelled CIFAR10 is commented out there; the live one (AdamW 1e-4, '
                          'weight decay 0.05, 1 epoch) is its setting for other data'),
                'msteps': Ref(2, 'sfron:Classification/unlearn/scrub.py:72'),
                'ce_weight': Ref(0.99, 'sfron:Classification/unlearn/scrub.py:68'),
                'kl_weight': Ref(0.001, 'sfron:Classification/unlearn/scrub.py:69'),
                'temperature': Ref(4.0, 'sfron:Classification/unlearn/scrub.py:75')},
      'bad_teacher': {**_sfron_sgd('bad_teacher.py', (55, 56, 57, 58, 59), 0.02, 10, 'cosine'),
                      'temperature': Ref(1.0, 'sfron:Classification/unlearn/bad_teacher.py:53')},
      'sfron': {**{k: v for k, v in _sfron_sgd('sfron.py', (103, 104, 105, 107, 117), 0.01,
                                                1500, 'cosine').items() if k != 'epochs'},
                'iterations': Ref(1500, 'sfron:Classification/unlearn/sfron.py:107'),
                'every': Ref(5, 'sfron:Classification/unlearn/sfron.py:109'),
                'forget_weight': Ref(25.0, 'sfron:Classification/unlearn/sfron.py:111'),
                'forget_clip_norm': Ref(7.0, 'sfron:Classification/unlearn/sfron.py:112'),
                'lam': Ref(0.5, 'sfron:Classification/unlearn/sfron.py:118'),
                'mask': Ref(True, 'sfron:Classification/unlearn/sfron.py:120'),
                'gamma': Ref(1.0, 'sfron:Classification/unlearn/sfron.py:121')},
      'lur': {name: Ref(value, 'ours', 'LUR\'s code is unreleased: the library default')
              for name, value in (('lr', 0.01), ('epochs', 10), ('batch_size', 128),
                                  ('momentum', 0.9), ('weight_decay', 5e-4),
                                  ('schedule', 'constant'), ('exclude_true_label', True),
                                  ('inner_lr', 0.01), ('order', 'second'),
                                  ('virtual', 'retain'), ('forget_loss', 'rl'),
                                  ('forget_weight', 1.0), ('retain_weight', 1.0),
                                  ('reinit', False), ('sparsity', 0.97))},
      'scissorhands': {
          'lr': Ref(5e-3, f'{sh}:44'), 'epochs': Ref(10, f'{sh}:44'),
          'sparsity': Ref(0.97, f'{sh}:44'),
          'forget_weight': Ref(0.05, f'{sh}:44', 'its --lam'),
          'project': Ref(True, f'{sh}:44', '--project --memory_num 1: one memory, the only '
                         'size we implement'),
          'snip_batches': Ref(1, f'{sh}:44', 'its --prune_num'),
          'last_stages': Ref(2, 'scissorhands:Classification/unlearn/SHs_cifar10.py:144',
                             "layer3, layer4 and fc"),
          'batch_size': Ref(256, f'{sh_args}:67'), 'momentum': Ref(0.9, f'{sh_args}:69'),
          'weight_decay': Ref(5e-4, f'{sh_args}:70'),
          'schedule': Ref('constant', 'scissorhands:Classification/unlearn/impl.py:100',
                          _CONSTANT)},
  }


SALUN_DDPM = 'salun:DDPM/configs/cifar10_saliency_unlearn.yml'
SFRON_DDPM = 'sfron:DDPM/configs/cifar10_sfron.yml'
SA_DDPM = 'sfron:DDPM/configs/cifar10_sa.yml'
SFRON_DDPM_README = 'sfron:DDPM/README.md'
SFRON_RUNNER = 'sfron:DDPM/runners/diffusion.py'
SAMPLE_PY = 'sfron:DDPM/sample.py'
_NO_DDPM_CODE = ('not among the references\' DDPM baselines (SalUn and SFR-on compare SA, '
                 'SalUn, SFR-on): ours, with their Adam and budget')
_LUR = 'LUR\'s code is unreleased: ours, on SalUn\'s diffusion losses'


def _adam_rows(config: str, lr_line: int, batch_line: int = 36, clip_line: int = 56,
               lr_note: str = '') -> dict:
  """A DDPM config's Adam: lr, batch 128, global-norm clip 1 (``optim.grad_clip``)."""
  return {'lr': Ref(1e-4, f'{config}:{lr_line}', lr_note),
          'batch_size': Ref(128, f'{config}:{batch_line}'),
          'clip_norm': Ref(1.0, f'{config}:{clip_line}')}


def _ours(values: dict, note: str) -> dict:
  return {name: Ref(value, 'ours', note) for name, value in values.items()}


def _ddpm() -> dict:
  """The DDPM CIFAR-10 class-forgetting setting: the original's training (SalUn's
  ``cifar10_train.yml``), each method's config and command (SalUn from its own code, SFR-on
  and SA from SFR-on's), the evaluation sampler (``sample.py``'s defaults)."""
  train = 'salun:DDPM/configs/cifar10_train.yml'
  cond_drop = Ref(0.1, 'salun:DDPM/functions/losses.py:28', 'the conditional loss\'s default '
                  'label dropout, on the retain loss')
  return {
      'ddpm': {'steps': Ref(800_000, f'{train}:37'), 'batch_size': Ref(128, f'{train}:36'),
               'lr': Ref(2e-4, f'{train}:49'),
               'warmup': Ref(0, 'salun:DDPM/runners/diffusion.py:214', 'no warm-up: a '
                             'constant Adam rate from the first step'),
               'lr_schedule': Ref('constant', 'salun:DDPM/runners/diffusion.py:201',
                                  'no scheduler'),
               'ema_decay': Ref(0.0, 'salun:DDPM/runners/diffusion.py:505',
                                "their training keeps an EMA (ema_rate 0.9999, "
                                f"{train}:24) in the checkpoint, but the saliency mask, "
                                "the unlearning and the sampler load states[0], the last "
                                "weights (diffusion.py:125, 505, 651; ema: False in "
                                "cifar10_saliency_unlearn.yml:25 and cifar10_sample.yml:25): "
                                "the model forgotten and judged is the last weights"),
               'clip_norm': Ref(1.0, f'{train}:53'), 'schedule': Ref('linear', f'{train}:30'),
               'num_timesteps': Ref(1000, f'{train}:33'),
               'cond_drop_prob': Ref(0.1, f'{train}:27')},
      'classifier': _ours({'epochs': 20, 'batch_size': 128, 'lr': 0.1, 'momentum': 0.9,
                           'weight_decay': 5e-4, 'schedule': 'cosine', 'drop_epochs': ()},
                          'the references fine-tune an ImageNet-pretrained ResNet-34 '
                          '(train_classifier.py); no pretrained weights here: a ResNet-18 '
                          'trained from scratch on the real images'),
      'sampling': {
          'sample_steps': Ref(1000, f'{SAMPLE_PY}:60'), 'sample_eta': Ref(1.0, f'{SAMPLE_PY}:65'),
          'sample_clip': Ref(False, 'sfron:DDPM/functions/denoising.py:85',
                             'generalized_steps_conditional does not clip x0'),
          'guidance': Ref(3.0, f'{SAMPLE_PY}:71', 'their cond_scale 2: (1 + s) eps_c - s eps_u '
                          '= our g = 1 + s')},
      'salun': {**_adam_rows(SALUN_DDPM, 52, lr_note='SFR-on\'s copy of this config says '
                             '1e-5; SalUn\'s own code is followed'),
                'cond_drop_prob': cond_drop, 'steps': Ref(1000, f'{SALUN_DDPM}:37'),
                'keep': Ref(0.5, 'salun:DDPM/runners/diffusion.py:1006', 'threshold_list: '
                            'the top 50% of weights'),
                'retain_weight': Ref(3.072, 'salun:DDPM/README.md:39', '--alpha 1e-3 times '
                                     'a per-image sum over 3x32x32 pixels = 3.072 per pixel')},
      'sfron': {**_adam_rows(SFRON_DDPM, 51, clip_line=55),
                'cond_drop_prob': Ref(0.1, 'sfron:DDPM/functions/losses.py:29'),
                'iterations': Ref(150, f'{SFRON_DDPM}:37'),
                'every': Ref(1, f'{SFRON_RUNNER}:1122', '--method ron: a forget step in every '
                             'iteration'),
                'forget_weight': Ref(10.0, f'{SFRON_DDPM_README}:62'),
                'retain_weight': Ref(1.0, f'{SFRON_DDPM_README}:62'),
                'lam': Ref(0.5, f'{SFRON_DDPM}:42'),
                'gamma': Ref(1.0, f'{SFRON_DDPM_README}:52', 'generate_fisher_mask.py '
                             '--threshold 1.0'),
                'mask': Ref(True, f'{SFRON_DDPM_README}:63', '--mask_path'),
                'forget_cond_drop_prob': Ref(0.1, 'sfron:DDPM/functions/losses.py:57',
                                             "adaptive_loss's default: the null class is "
                                             'ascended too'),
                'loss': Ref('ddpm', 'sfron:DDPM/functions/losses.py:37', 'the pixel sum'),
                'forget_loss': Ref('adaptive', f'{SFRON_DDPM_README}:63', '--unlearn_loss adaga'),
                'forget_schedule': Ref('cosine', f'{SFRON_RUNNER}:1077', '--decay_forget_alpha'),
                'retain_clip': Ref(True, f'{SFRON_RUNNER}:1170'),
                'fisher_batch_size': Ref(0, 'sfron:DDPM/configs/cifar10_fisher.yml:36',
                                         '0 = batch_size: batches of 128'),
                'fisher_clip': Ref(True, f'{SFRON_RUNNER}:1271'),
                'fisher_examples': Ref(0, f'{SFRON_RUNNER}:1244', '0 = all: one pass over '
                                       'each set')},
      'lur': _ours({'lr': 1e-4, 'batch_size': 128, 'clip_norm': 1.0, 'cond_drop_prob': 0.1,
                    'steps': 1000, 'inner_lr': 0.01, 'order': 'first', 'virtual': 'retain',
                    'forget_loss': 'rl', 'forget_weight': 1.0, 'retain_weight': 3.072}, _LUR),
      'sa': {**_adam_rows(SA_DDPM, 52),
             'cond_drop_prob': Ref(0.0, f'{SFRON_RUNNER}:420', 'cond_drop_prob=0.0 on both '
                                   'losses'),
             'steps': Ref(20_000, f'{SA_DDPM}:37'),
             'strength': Ref(10.0, f'{SA_DDPM}:43', 'lmbda: the Fisher penalty'),
             'replay_weight': Ref(1.0, f'{SA_DDPM}:42', 'gamma: the replay term'),
             'replay_per_class': Ref(500, f'{SFRON_DDPM_README}:75', '--n_samples_per_class '
                                     '500, the samples of the Fisher and the replay'),
             'fisher_timesteps': Ref(1000, f'{SFRON_DDPM_README}:80', 'the ELBO sums over '
                                     'all 1000 timesteps per sample'),
             'sample_steps': Ref(1000, f'{SAMPLE_PY}:60', 'the replay samples are '
                                 'sample.py\'s'),
             'guidance': Ref(3.0, f'{SAMPLE_PY}:71', 'cond_scale 2 = our 3')},
      'ga': _ours({'lr': 1e-4, 'batch_size': 128, 'clip_norm': 1.0, 'cond_drop_prob': 0.1,
                   'steps': 200}, _NO_DDPM_CODE),
  }


def _dit() -> dict:
  """SFR-on's DiT experiment: its DiT code's recipe (``DiT/README.md`` command,
  ``forget.py``, ``generate_fisher.py``) at a batch of 32; the other methods, which have
  no DiT code in the references, with the same budget."""
  readme, forget, fisher = 'sfron:DiT/README.md', 'sfron:DiT/forget.py', \
      'sfron:DiT/generate_fisher.py'
  budget = {'lr': 1e-4, 'batch_size': 32, 'clip_norm': 1.0, 'cond_drop_prob': 0.1}
  no_code = 'no DiT code of this method in the references: ours, SFR-on\'s budget'
  return {
      'sfron': {'lr': Ref(1e-4, f'{readme}:62'),
                'batch_size': Ref(32, 'ours', 'their default is 1 image (forget.py '
                                  '--batch-size); 32 for a steadier step'),
                'clip_norm': Ref(1.0, f'{forget}:390'),
                'cond_drop_prob': Ref(0.1, 'sfron:DiT/models.py:158', 'DiT\'s label dropout, '
                                      'on in train mode'),
                'iterations': Ref(600, f'{readme}:62'),
                'every': Ref(1, f'{forget}:285', '--method ron: a forget step every iteration'),
                'forget_weight': Ref(1e-3, f'{readme}:63'),
                'retain_weight': Ref(1.0, f'{readme}:63'),
                'lam': Ref(0.5, 'ours', 'unused: the DiT code ascends plainly (forget_loss ga)'),
                'gamma': Ref(1.0, 'ours', 'generate_mask.py writes masks at 0.5, 1, 3, 5, 10; '
                             'the README does not say which it used'),
                'mask': Ref(True, f'{readme}:63', '--mask-path'),
                'forget_cond_drop_prob': Ref(0.1, f'{forget}:258', 'model.train(): DiT\'s '
                                             'label dropout on the forget loss too'),
                'loss': Ref('hybrid', f'{forget}:271', 'diffusion.training_losses: MSE + VLB'),
                'forget_loss': Ref('ga', f'{readme}:62', '--unlearn-loss ga'),
                'forget_schedule': Ref('constant', f'{forget}:286', '--decay-forget-alpha is '
                                       'parsed but never read'),
                'retain_clip': Ref(False, f'{forget}:312', 'the remain step is not clipped'),
                'fisher_batch_size': Ref(1, f'{fisher}:305'),
                'fisher_clip': Ref(False, f'{fisher}:279', 'squared raw gradients'),
                'fisher_examples': Ref(2000, f'{fisher}:304', '--n-iters 2000 draws')},
      'salun': _ours({**budget, 'steps': 600, 'keep': 0.5, 'retain_weight': 3.072}, no_code),
      'lur': _ours({**budget, 'steps': 600, 'inner_lr': 0.01, 'order': 'first',
                    'virtual': 'retain', 'forget_loss': 'rl', 'forget_weight': 1.0,
                    'retain_weight': 3.072}, no_code),
      'ga': _ours({**budget, 'steps': 600}, no_code),
  }


# The references publish one CIFAR-10 setting per method (SFR-on's sfron.py labels its block
# "CIFAR10 10%"); the class-wise script runs it too, and CIFAR-100 differs only where the
# SalUn code branches on the dataset (RL and SalUn's one mixed loader).
SETTINGS: dict[str, dict[str, dict[str, Ref]]] = {
    'cifar10_random10': _classification('alternate'),
    'cifar10_classwise': _classification('alternate'),
    'cifar100_random10': _classification('mixed'),
    'ddpm_cifar10_class': _ddpm(),
    'dit_imagenet_class207': _dit(),
}


GENERATION = ('ddpm_cifar10_class', 'dit_imagenet_class207')


def overrides(setting: str, methods=None) -> dict[str, dict]:
  """``{method: {name: value}}`` of ``setting`` (for ``ExperimentConfig.overrides``),
  the methods in ``methods`` and the non-methods (``train``, ``retrain``; ``ddpm``,
  ``classifier``, ``sampling``) (all when None)."""
  if setting not in SETTINGS:
    raise ValueError(f'unknown paper setting {setting!r}; known: {", ".join(SETTINGS)}')
  table = SETTINGS[setting]
  keep = None if methods is None else {'train', 'retrain', 'ddpm', 'classifier',
                                              'sampling', *methods}
  return {m: {k: r.value for k, r in v.items()} for m, v in table.items()
          if keep is None or m in keep}


def _cell(value) -> str:
  if isinstance(value, tuple):
    return ','.join(str(v) for v in value)
  if isinstance(value, float):
    return f'{value:g}'
  return str(value).lower() if isinstance(value, bool) else str(value)


def _rows(table: dict) -> list[str]:
  return [f'| `{method}` | `{name}` | {_cell(ref.value)} | {ref.where()} | {ref.note} |'
          for method, values in table.items() for name, ref in values.items()]


def markdown() -> str:
  """The table of every setting as markdown (``docs/paper-settings.md`` holds it): the
  first in full, the others by their differences from it."""
  head = ['| method | hyperparameter | value | source | note |', '|---|---|---|---|---|']
  (first, base), *rest = SETTINGS.items()
  out = [f'### `{first}`', '', *head, *_rows(base), '']
  for setting, table in rest:
    if setting in GENERATION:  # nothing in common with the classification settings
      out += [f'### `{setting}`', '', *head, *_rows(table), '']
      continue
    diff = {m: {k: r for k, r in v.items() if base.get(m, {}).get(k) != r}
            for m, v in table.items()}
    diff = {m: v for m, v in diff.items() if v}
    out += [f'### `{setting}`', '']
    out += ([f'As `{first}` except:', '', *head, *_rows(diff), ''] if diff else
            [f'As `{first}`.', ''])
  return '\n'.join(out)


if __name__ == '__main__':
  print(markdown())
