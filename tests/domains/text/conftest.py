import pytest
from texts import write_corpus


@pytest.fixture
def corpus(tmp_path):
    """tests/texts.py's lines as a .txt corpus."""
    return write_corpus(tmp_path)
