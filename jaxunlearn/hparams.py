"""Typed hyperparameters: each method's are a frozen dataclass that checks its own values.

A method registers the class of its hyperparameters (:func:`jaxunlearn.methods.register`);
``resolve_hparams(name, overrides)`` builds it from ``--set METHOD.NAME=VALUE`` strings, a
config file's values or a dict in Python, all by one path (:meth:`Hyperparameters.resolve`):

    @dataclasses.dataclass(frozen=True)
    class SalUn(RL):
      lr: float = positive(0.013, 'peak learning rate')
      keep: float = fraction(0.5, 'share of the weights updated (the saliency mask)')

    SalUn.resolve({'keep': '0.3'}).keep  # 0.3; SalUn(keep=1.5) raises ValueError

Each field carries its check and a one-line meaning (``jaxunlearn methods`` prints both), so a
name means what its method's class says, and a wrong value fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Callable, ClassVar

Check = tuple[Callable[[Any], bool], str]


def hparam(default, check: Check | None = None, doc: str = ''):
  """A field with ``default``, a ``(predicate, 'what it must be')`` check and its meaning."""
  return dataclasses.field(default=default, metadata={'check': check, 'doc': doc})


def positive(default, doc: str = ''):
  return hparam(default, (lambda v: v > 0, '> 0'), doc)


def non_negative(default, doc: str = ''):
  return hparam(default, (lambda v: v >= 0, '>= 0'), doc)


def at_least_one(default, doc: str = ''):
  return hparam(default, (lambda v: v >= 1, '>= 1'), doc)


def fraction(default, doc: str = ''):
  """In (0, 1]."""
  return hparam(default, (lambda v: 0 < v <= 1, 'a fraction in (0, 1]'), doc)


def probability(default, doc: str = ''):
  """In [0, 1)."""
  return hparam(default, (lambda v: 0 <= v < 1, 'in [0, 1)'), doc)


def one_of(choices: tuple, default, doc: str = ''):
  what = ', '.join(repr(c) for c in choices[:-1]) + f' or {choices[-1]!r}'
  return hparam(default, (lambda v: v in choices, what), doc)


def did_you_mean(word: str, choices) -> str:
  """' (did you mean 'x'?)' for the closest of ``choices``, or ''."""
  close = difflib.get_close_matches(word, list(choices), n=1)
  return f' (did you mean {close[0]!r}?)' if close else ''


def cast_like(value, default, where: str):
  """Casts a command-line string to the type of ``default`` (bools: true/false/1/0;
  tuples: comma-separated integers, '' for none)."""
  if isinstance(default, tuple):
    if isinstance(value, list):  # a config file's JSON array
      value = tuple(value)
    if isinstance(value, str):
      try:
        return tuple(int(v) for v in value.split(',') if v.strip())
      except ValueError:
        raise ValueError(f'{where} must be comma-separated integers, got {value!r}') from None
    return value
  if not isinstance(value, str):
    return value
  if isinstance(default, bool):
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'{where} must be true or false, got {value!r}')
    return value.lower() in ('true', '1')
  try:
    return type(default)(value)
  except ValueError:
    raise ValueError(f'{where} must be a {type(default).__name__}, got {value!r}') from None


def _typed(value, default, where: str):
  """``value`` as the type of ``default``: ints for int fields (not bools, not 2.5), floats
  for float fields (ints accepted), bools and strings as they are."""
  value = cast_like(value, default, where)
  if isinstance(default, bool):
    ok = isinstance(value, bool)
  elif isinstance(default, int):
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        float(value).is_integer():
      value = int(value)
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(default, float):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    value = float(value) if ok else value
    if ok and not math.isfinite(value):
      raise ValueError(f'{where} must be a finite number, got {value!r}')
  elif default is None:
    ok = True
  elif isinstance(default, tuple):
    ok = isinstance(value, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
      raise ValueError(f'{where} must be a tuple of integers, got {value!r}')
  else:
    ok = isinstance(value, type(default))
  if not ok:
    raise ValueError(f'{where} must be a {type(default).__name__}, got {value!r}')
  return value


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
  """Base of every method's hyperparameters: on construction each field is cast to its
  default's type and checked (``ValueError`` naming ``method.field``, what it must be, and
  the value given)."""

  method: ClassVar[str] = ''  # set by ``register``; prefixes error messages
  # Names the reference code (or an older version of ours) uses for a field that is called
  # otherwise here, because the same name means another thing in another method (``alpha``
  # was five weights): ``{old: new}``. Giving an old name is an error that names the new.
  renamed: ClassVar[dict] = {}

  def __post_init__(self):
    for f in dataclasses.fields(self):
      where = f'{self.method or type(self).__name__}.{f.name}'
      value = _typed(getattr(self, f.name), f.default, where)
      object.__setattr__(self, f.name, value)
      check = f.metadata.get('check')
      if check is not None and not check[0](value):
        raise ValueError(f'{where} must be {check[1]}, got {value!r}')

  @classmethod
  def resolve(cls, overrides: dict | None = None):
    """The defaults updated by ``overrides`` (``{name: value}``, values or strings);
    a name the class does not have is a ValueError that lists those it has."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in overrides or {}:
      if key in cls.renamed and key not in names:
        raise ValueError(f'{cls.method or cls.__name__}.{key} is called '
                         f'{cls.renamed[key]!r} here (one name means one thing across '
                         f'methods); set {cls.renamed[key]!r} instead')
      if key not in names:
        raise ValueError(f'method {cls.method or cls.__name__!r} has no hyperparameter '
                         f'{key!r}{did_you_mean(key, names)}; its hyperparameters are '
                         f'{", ".join(sorted(names))}')
    return cls(**(overrides or {}))

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def describe(cls) -> list[tuple[str, Any, str]]:
    """``(name, default, 'meaning; must be ...')`` for each field."""
    out = []
    for f in dataclasses.fields(cls):
      check = f.metadata.get('check')
      meaning = f.metadata.get('doc', '')
      if check is not None:
        meaning = f'{meaning}; {check[1]}' if meaning else check[1]
      out.append((f.name, f.default, meaning))
    return out
