"""The image domain tests' shared fixture: the digits domain, its data loaded once per module."""
import pytest

from multissl.domains.image import ImageDomain


@pytest.fixture(scope="module")
def digits():
    d = ImageDomain()
    d.dataset("train")
    return d
