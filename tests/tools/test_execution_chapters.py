"""Every chapter keeps the contract, and its stored outputs come from its current code."""
import re

import pytest
import yaml
from repro.tools import execution as ch

CHAPTERS = ch.chapters()
VERDICT = re.compile(r"^(NOT REPRODUCED|REPRODUCED): \S.*$")


def test_there_are_chapters():
    assert len(CHAPTERS) >= 1


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_stored_outputs_match_current_code(path):
    assert not ch.is_stale(path), (f"{path.name}: its code changed since its outputs were stored; "
                                   f"re-run it with `.venv/bin/repro run {path}`")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_contract(path):
    nb = ch.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert nb.metadata.get("paper", {}).get("title"), "notebook metadata lacks paper.title"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'profile = "auto"' in params[0].source and "seed" in params[0].source
    checked = [c for c in code if c.source.lstrip().startswith("# NBVAL_CHECK_OUTPUT")]
    assert checked, "no cell is marked # NBVAL_CHECK_OUTPUT"
    lines = [l for c in checked for o in c.outputs if o.output_type == "stream" for l in o.text.splitlines()]
    assert lines and all(VERDICT.match(l) for l in lines), f"the verdict cell must print only verdict lines: {lines}"
    assert any("ipywidgets" in c.source for c in code), "no ipywidgets section"
    assert any("start_run(" in c.source for c in code) and "finish()" in code[-1].source
    s = ch.summary(path)
    assert s["verdicts"] and s["wall_time_s"] is not None, "no stored evidence or wall time"
    assert not any(o.output_type == "error" for c in code for o in c.outputs), "stored outputs hold an error"


def test_every_chapter_is_in_the_table_of_contents():
    toc = yaml.safe_load(open(ch.ROOT / "_toc.yml"))
    files = {c["file"] for part in toc["parts"] for c in part["chapters"]}
    assert {f"notebooks/{p.stem}" for p in CHAPTERS} <= files


def test_every_chapter_claims_a_catalog_entry():
    from repro.tools.catalog import chapter_index, load
    papers = set(load(ch.ROOT / "book" / "catalog.tsv").paper.str.strip())
    claimed = chapter_index()
    assert set(claimed.values()) == {p.stem for p in CHAPTERS}, "a chapter lacks paper.catalog in its metadata"
    assert set(claimed) <= papers, f"paper.catalog names entries not in book/catalog.tsv: {set(claimed) - papers}"


def test_every_table_of_contents_entry_exists():
    # jupyter-book -W fails on an entry without a file: a planned chapter is listed only once it exists
    toc = yaml.safe_load(open(ch.ROOT / "_toc.yml"))
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    missing = [f for f in files if not any((ch.ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_bad_profile_fails_with_one_sentence(path, tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(path), str(tmp_path / "out.ipynb"), parameters={"profile": "fast"},
                            cwd=str(path.parent), progress_bar=False, kernel_name="python3")
    assert e.value.ename == "ParameterError"
    assert e.value.evalue == "profile must be one of 'auto', 'quick', 'full'; got 'fast'."
