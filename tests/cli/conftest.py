# The LM's tiny corpus and trained run, for `cellstate lm`'s tests here as for tests/lm (pytest
# finds fixtures by name in a conftest; a session fixture is made once per conftest that has it).
from tests.lm.conftest import text_file, trained_run  # noqa: F401
