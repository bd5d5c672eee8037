"""Prompt sets: the prompts a text-to-image model is judged (or its forget and retain images
made) with, as CSV files in the layout of the references' ``prompts/*.csv``.

A prompt set is a table with one row per prompt: ``prompt`` (required), ``evaluation_seed``
(the seed of that prompt's starting noise) and ``case_number`` (its number, used in image
file names ``{case_number}_{j}.png``), and optionally the label a scorer should give its
images (``classidx`` in SalUn's ``imagenette.csv``; any column named with ``label_column``).
Extra columns (``class``, ``categories``, ...) are kept as they are. Bad files are refused
before anything is generated: no ``prompt`` column, no rows, an empty prompt, a seed or case
number that is not an integer, a duplicated case number.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path
from typing import Sequence

# What the scorer's label means for a detector-style prompt set (nudity): 1 the concept is
# there, 0 it is not.
CONCEPT_ABSENT, CONCEPT_PRESENT = 0, 1


@dataclasses.dataclass(frozen=True)
class PromptSet:
  """Prompts with their seeds, case numbers and (optional) expected scorer labels."""
  prompts: tuple[str, ...]
  seeds: tuple[int, ...]
  case_numbers: tuple[int, ...]
  labels: tuple[int, ...] | None = None
  name: str = 'prompts'
  extra: dict = dataclasses.field(default_factory=dict)  # column -> tuple of strings

  def __post_init__(self):
    n = len(self.prompts)
    if n == 0:
      raise ValueError(f'prompt set {self.name!r} is empty: give at least one prompt')
    for what, values in (('seeds', self.seeds), ('case_numbers', self.case_numbers),
                         ('labels', self.labels), *self.extra.items()):
      if values is not None and len(values) != n:
        raise ValueError(f'prompt set {self.name!r}: {len(values)} {what} for {n} prompts')
    empty = [c for c, p in zip(self.case_numbers, self.prompts) if not str(p).strip()]
    if empty:
      raise ValueError(f'prompt set {self.name!r}: case numbers {empty} have an empty prompt '
                       '(the empty prompt is the unconditional branch, not a prompt to judge)')
    seen, dup = set(), []
    for c in self.case_numbers:
      (dup.append(c) if c in seen else seen.add(c))
    if dup:
      raise ValueError(f'prompt set {self.name!r}: case numbers {sorted(set(dup))} appear more '
                       'than once (they name the image files)')

  def __len__(self) -> int:
    return len(self.prompts)

  def with_label(self, label: int) -> 'PromptSet':
    """The same prompts, every one expecting the scorer label ``label``."""
    return dataclasses.replace(self, labels=(int(label),) * len(self))


def _seed_of(prompt: str) -> int:
  """A prompt's default seed: stable across runs and machines (not Python's ``hash``)."""
  return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], 'little') % 2**31


def make_prompt_set(prompts: Sequence[str], *, seeds: Sequence[int] | None = None,
                    labels: Sequence[int] | int | None = None, first_case: int = 0,
                    name: str = 'prompts') -> PromptSet:
  """A prompt set built in code; seeds default to a hash of each prompt, case numbers count
  from ``first_case``, ``labels`` an int gives every prompt that label."""
  prompts = tuple(str(p) for p in prompts)
  if isinstance(labels, int):
    labels = (labels,) * len(prompts)
  return PromptSet(prompts,
                   tuple(int(s) for s in seeds) if seeds is not None
                   else tuple(_seed_of(p) for p in prompts),
                   tuple(range(first_case, first_case + len(prompts))),
                   tuple(int(l) for l in labels) if labels is not None else None, name)


def _int_column(rows, column: str, path) -> tuple[int, ...]:
  out = []
  for i, row in enumerate(rows):
    value = (row.get(column) or '').strip()
    try:
      number = float(value)  # pandas writes integer columns with gaps as 4889.0
      if number != int(number):
        raise ValueError
    except (ValueError, OverflowError):
      raise ValueError(f'{path}: row {i + 1} has {column}={value!r}, not an integer') from None
    out.append(int(number))
  return tuple(out)


def read_prompt_set(path: str | Path, *, label_column: str | None = 'classidx',
                    name: str | None = None) -> PromptSet:
  """Reads a prompt-set CSV (``prompt``, ``evaluation_seed``, ``case_number``; the
  references' files read as they are, a leading byte-order mark and index column included).

  ``label_column``: the column of expected scorer labels, used when present (``None``: no
  labels; give them later with :meth:`PromptSet.with_label`). A file without
  ``evaluation_seed`` gets a seed per prompt from its text, without ``case_number`` the row
  numbers.
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'prompt set {path}: no such file (a CSV with a `prompt` column, '
                            'optionally `evaluation_seed`, `case_number` and a label column)')
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    rows = [{(k or '').strip(): v for k, v in row.items()} for row in reader]
  if 'prompt' not in columns:
    raise ValueError(f'{path}: no `prompt` column (columns: {columns}); a prompt set is a CSV '
                     'with a header line naming `prompt`, `evaluation_seed`, `case_number`')
  rows = [r for r in rows if any((v or '').strip() for v in r.values() if isinstance(v, str))]
  if not rows:
    raise ValueError(f'{path}: the prompt set has a header but no prompts')
  prompts = tuple((r.get('prompt') or '').strip() for r in rows)
  seeds = (_int_column(rows, 'evaluation_seed', path) if 'evaluation_seed' in columns
           else tuple(_seed_of(p) for p in prompts))
  cases = (_int_column(rows, 'case_number', path) if 'case_number' in columns
           else tuple(range(len(rows))))
  labels = (_int_column(rows, label_column, path)
            if label_column is not None and label_column in columns else None)
  known = {'prompt', 'evaluation_seed', 'case_number', label_column, ''}
  extra = {c: tuple(r.get(c) or '' for r in rows) for c in columns if c not in known}
  return PromptSet(prompts, seeds, cases, labels, name or path.stem, extra)


def write_prompt_set(prompt_set: PromptSet, path: str | Path, *,
                     label_column: str = 'classidx') -> Path:
  """Writes ``prompt_set`` as a CSV that :func:`read_prompt_set` (and the references'
  scripts) read back."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  columns = ['case_number', 'prompt', 'evaluation_seed', *prompt_set.extra]
  if prompt_set.labels is not None:
    columns.append(label_column)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for i in range(len(prompt_set)):
      row = [prompt_set.case_numbers[i], prompt_set.prompts[i], prompt_set.seeds[i],
             *(values[i] for values in prompt_set.extra.values())]
      if prompt_set.labels is not None:
        row.append(prompt_set.labels[i])
      writer.writerow(row)
  return path


# ---------------------------------------------------------------------------------------
# The references' prompt sets, built in code.

IMAGENETTE_CLASSES = ('tench', 'english springer', 'cassette player', 'chain saw', 'church',
                      'french horn', 'garbage truck', 'gas pump', 'golf ball', 'parachute')
# Their ImageNet-1k indices: what an ImageNet classifier (SalUn scores with torchvision's
# ResNet-50) predicts for them.
IMAGENETTE_IMAGENET_INDEX = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)


def imagenette_prompt_sets(forget_class: int | str, *, template: str = 'Image of {name}',
                           imagenet_labels: bool = True, seed: int = 0
                           ) -> tuple[PromptSet, PromptSet]:
  """``(forget, retain)``: SalUn's Imagenette prompts ("Image of {class}", its
  ``imagenette.csv``) split at the class to erase. Labels are the classes' ImageNet-1k
  indices (``imagenet_labels``; an ImageNet classifier scores them) or 0..9."""
  names = IMAGENETTE_CLASSES
  if isinstance(forget_class, str):
    if forget_class.lower() not in names:
      raise ValueError(f'{forget_class!r} is not an Imagenette class: {names}')
    forget_class = names.index(forget_class.lower())
  if not 0 <= forget_class < len(names):
    raise ValueError(f'forget_class must be 0..{len(names) - 1}, got {forget_class}')
  index = IMAGENETTE_IMAGENET_INDEX if imagenet_labels else tuple(range(len(names)))
  rows = [(i, template.format(name=n), index[i], n) for i, n in enumerate(names)]
  def build(rows, role):
    return PromptSet(tuple(r[1] for r in rows),
                     tuple(_seed_of(f'{seed}:{r[1]}') for r in rows),
                     tuple(r[0] for r in rows), tuple(r[2] for r in rows),
                     f'imagenette_{role}', {'class': tuple(r[3] for r in rows)})
  return (build([r for r in rows if r[0] == forget_class], 'forget'),
          build([r for r in rows if r[0] != forget_class], 'retain'))


def nudity_prompt_sets(*, seed: int = 0) -> tuple[PromptSet, PromptSet]:
  """``(forget, retain)``: the prompts SalUn makes its nudity forget and retain images with
  ("a photo of a nude person" / "a photo of a person wearing clothes", its README), labelled
  for a detector (:data:`CONCEPT_PRESENT` / :data:`CONCEPT_ABSENT`)."""
  forget = make_prompt_set(['a photo of a nude person'], labels=CONCEPT_PRESENT,
                           seeds=[_seed_of(f'{seed}:nude')], name='nudity_forget')
  retain = make_prompt_set(['a photo of a person wearing clothes'], labels=CONCEPT_ABSENT,
                           seeds=[_seed_of(f'{seed}:clothed')], first_case=1,
                           name='nudity_retain')
  return forget, retain
