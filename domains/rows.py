"""An HF `datasets` split read one row at a time, shared by the domains whose samples are media (images, audio): the
split stays memory-mapped Arrow, a row's stored file is decoded by the domain only when its item is asked for, and
the labels are read from their column alone, so loading a split decodes nothing."""
import io

from multissl.errors import UserError

from .files import Files


def label_column(features) -> str | None:
    """The split's label column: its ClassLabel, else a column named "label", else None."""
    import datasets
    return next((k for k, v in features.items() if isinstance(v, datasets.ClassLabel)),
                "label" if "label" in features else None)


def column_labels(ds, column: str | None, where: str) -> list[int]:
    """Class ids from the label column alone (no other column is read); -1 for every row when there is none."""
    if column is None:
        return [-1] * len(ds)
    try:
        return [-1 if v is None else int(v) for v in ds.select_columns([column])[column]]
    except (TypeError, ValueError):
        raise UserError(f"HF dataset {where}: column {column!r} does not hold integer class ids; cast it to a "
                        f"ClassLabel (ds.class_encode_column({column!r})) and save the dataset again") from None


class Rows:
    """Row j of an HF split's media column as the file it stores (its bytes, or its path), read by
    `read(source, name=...)` when called. Holds the split (which pickles as a reference to its Arrow files, so loader
    workers read rows themselves), never a decoded sample. `feature`: the column's type with decode=False."""

    def __init__(self, ds, column: str, feature, where: str, read=None):
        self.ds = ds.select_columns([column]).cast_column(column, feature)
        self.column, self.where, self.read = column, where, read

    def __len__(self) -> int:
        return len(self.ds)

    def source(self, j: int):
        cell = self.ds[int(j)][self.column]
        if cell is None or not (cell.get("bytes") or cell.get("path")):
            raise UserError(f"{self.name(j)} has no {self.column}; drop the row or fill it in "
                            f"(or set data.skip_bad=true to skip unreadable samples)")
        return io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]

    def name(self, j: int) -> str:
        return f"row {j} of HF dataset {self.where}"

    def __call__(self, j: int):
        return self.read(self.source(j), name=self.name(j))


def row_split(ds, column: str, feature, where: str, read, label: str | None, skip_bad: bool) -> Files:
    """A split as Files over row numbers: item i decodes row i (an unreadable row is an error, or with skip_bad
    replaced by the next readable one and counted, as files are)."""
    names = getattr(ds.features[label], "names", None) if label else None
    classes = {name: k for k, name in enumerate(names or [])}
    return Files(range(len(ds)), column_labels(ds, label, where), classes, Rows(ds, column, feature, where, read),
                 skip_bad)
