"""The Triton GPU backend (see ``backend`` for its API). Docstring completed below."""
