"""jaxunlearn: machine unlearning as composable, jit-compiled optax transformations."""

__version__ = '0.1.0'
