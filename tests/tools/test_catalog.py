
import nbformat
import pytest
from repro.tools.catalog import catalog_markdown, load

FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "tiny.ipynb"


def make_catalog(tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("paper\ttriage\tnote\nTiny paper (2026)\tA\tfits | easily\nBig paper\tC\tneeds ImageNet\n"
                   "Proxy paper\tB\tby proxy\n")
    return tsv


def test_catalog_marks_chapters_planned_and_offline(tmp_path):
    tsv = make_catalog(tmp_path)
    folder = tmp_path / "nb"
    folder.mkdir()
    nb = nbformat.read(str(FIXTURE), as_version=4)
    nb.metadata["paper"]["catalog"] = "Tiny paper (2026)"
    nbformat.write(nb, str(folder / "tiny.ipynb"))
    md = catalog_markdown(tsv, folder)
    assert "3 in all, 1 with a chapter, 0 planned as faithful offline reproductions, 1 planned by proxy, and 1 " in md
    assert "| Tiny paper (2026) | A | [chapter](../notebooks/tiny.ipynb) | fits \\| easily |" in md
    assert "| Big paper | C | not here: cannot be reproduced offline | needs ImageNet |" in md


def test_a_chapter_may_claim_two_entries_for_one_paper(tmp_path):
    tsv = make_catalog(tmp_path)
    folder = tmp_path / "nb"
    folder.mkdir()
    nb = nbformat.read(str(FIXTURE), as_version=4)
    nb.metadata["paper"]["catalog"] = ["Tiny paper (2026)", "Proxy paper"]
    nbformat.write(nb, str(folder / "tiny.ipynb"))
    md = catalog_markdown(tsv, folder)
    assert "3 in all, 2 with a chapter, 0 planned as faithful offline reproductions, 0 planned by proxy" in md
    assert "| Proxy paper | B | [chapter](../notebooks/tiny.ipynb) | by proxy |" in md


def test_chapter_naming_an_unknown_entry_is_an_error(tmp_path):
    tsv = make_catalog(tmp_path)
    folder = tmp_path / "nb"
    folder.mkdir()
    nb = nbformat.read(str(FIXTURE), as_version=4)
    nb.metadata["paper"]["catalog"] = "Not in the catalog"
    nbformat.write(nb, str(folder / "tiny.ipynb"))
    with pytest.raises(ValueError, match="not in"):
        catalog_markdown(tsv, folder)


def test_missing_columns(tmp_path):
    (tmp_path / "bad.tsv").write_text("paper\tnote\nx\ty\n")
    with pytest.raises(ValueError, match="lacks the column"):
        load(tmp_path / "bad.tsv")


def test_book_catalog_is_well_formed():
    table = load(__import__("pathlib").Path(__file__).parents[2] / "book" / "catalog.tsv")
    assert len(table) > 100 and set(table.triage.str.strip()) <= {"A", "B", "C"}
