"""Sphinx configuration of jaxunlearn's documentation (the guides in Markdown via MyST, the
API reference from docstrings via autodoc/autosummary). Built warnings-as-errors by
tests/test_docs_build.py:

    sphinx-build -W -b html docs docs/_build/html
"""

project = 'jaxunlearn'
author = 'jaxunlearn developers'
copyright = '2026, jaxunlearn developers'

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',  # Google-style "Args:" / "Returns:" sections
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
]
source_suffix = {'.md': 'markdown', '.rst': 'restructuredtext'}
root_doc = 'index'
exclude_patterns = ['_build']
myst_heading_anchors = 3
autosummary_generate = False
autodoc_typehints = 'description'
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'undoc-members': False, 'show-inheritance': False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # an 'Attributes:' section as fields, not a second entry per field
html_theme = 'alabaster'
html_title = 'jaxunlearn'


def _skip_fields(app, what, name, obj, skip, options):
  """Fields of NamedTuple states and flax dataclasses are described in their class's
  docstring; autodoc would list each twice (as a field and as an attribute)."""
  doc = getattr(obj, '__doc__', None) or ''
  if what == 'class' and (doc.startswith('Alias for field number') or
                          type(obj).__name__ in ('_tuplegetter', 'Field')):
    return True
  return skip


def setup(app):
  app.connect('autodoc-skip-member', _skip_fields)
