"""domains/files.py: where data.path points (a folder of files, a table file, a saved HF dataset, hf:<name>)."""
import pytest

from multissl.domains.files import class_count, locate
from multissl.errors import UserError


def test_locate_tells_folders_files_saved_datasets_and_cache_names(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_dict.json").write_text("{}")
    (tmp_path / "t.csv").write_text("a\n1\n")
    assert locate(str(tmp_path / "clips"), "x") == ("folder", tmp_path / "clips")
    assert locate(str(tmp_path / "saved"), "x") == ("saved", tmp_path / "saved")
    assert locate(str(tmp_path / "clips"), "x", folders=False) == ("saved", tmp_path / "clips")  # only HF reads it
    assert locate(str(tmp_path / "t.csv"), "x", files=True) == ("file", tmp_path / "t.csv")
    assert locate("hf:someone/set", "x") == ("cache", "someone/set")


@pytest.mark.parametrize("name, match", [("t.csv", "is a file; point it at an image folder"),
                                         ("nothere", "does not exist; point it at an image folder")])
def test_locate_errors_name_the_path_and_what_to_point_at(tmp_path, name, match):
    (tmp_path / "t.csv").write_text("a\n1\n")
    with pytest.raises(UserError, match=match) as e:
        locate(str(tmp_path / name), "an image folder")
    assert "\n" not in str(e.value)


def test_class_count_ignores_unlabelled_rows():
    class Split:
        def __init__(self, labels):
            self.labels = labels
    assert class_count(Split([0, 2, -1])) == 3 and class_count(Split([-1, -1])) is None
    assert class_count(Split([])) is None
