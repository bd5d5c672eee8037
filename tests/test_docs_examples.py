"""The code blocks of docs/your-training-loop.md run as written (one namespace, in order,
as a reader pasting them one after another would)."""

import re
from pathlib import Path

DOC = Path(__file__).parent.parent / 'docs' / 'your-training-loop.md'


def test_every_python_block_of_the_training_loop_guide_runs():
  blocks = re.findall(r'```python\n(.*?)```', DOC.read_text(), flags=re.S)
  assert len(blocks) >= 4
  namespace = {}
  for i, block in enumerate(blocks):
    try:
      exec(compile(block, f'{DOC.name}[block {i}]', 'exec'), namespace)
    except Exception as e:
      raise AssertionError(f'block {i} of {DOC.name} failed: {type(e).__name__}: {e}') from e
