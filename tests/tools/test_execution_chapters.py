"""Every chapter keeps the contract, and its stored outputs come from its current code."""
import ast
import re

import pytest
import yaml
from repro.tools import execution as ch

CHAPTERS = ch.chapters()
VERDICT = re.compile(r"^(NOT REPRODUCED|REPRODUCED|INCONCLUSIVE): \S.*$")


def assigned_names(source: str) -> list[str]:
    return [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)]


def declared_knobs(source: str) -> set[str]:
    """The keys of ``KNOBS = dict(...)`` in the preamble cell."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "KNOBS" for t in node.targets):
            call = node.value
            assert isinstance(call, ast.Call) and not call.args, "KNOBS must be written as dict(name=..., ...)"
            return {k.arg for k in call.keywords}
    raise AssertionError("the preamble declares no KNOBS = dict(...)")


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
    assert any("show_verdicts(" in c.source for c in code), "the verdicts are not shown with their forest plot"
    s = ch.summary(path)
    assert s["verdicts"] and s["wall_time_s"] is not None, "no stored evidence or wall time"
    assert not any(o.output_type == "error" for c in code for o in c.outputs), "stored outputs hold an error"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_uses_the_preamble_helper(path):
    """One fill_parameters call fills and checks every parameter; no per-knob `x = x or PROFILE[...]` lines."""
    nb = ch.read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any("or PROFILE[" in c.source for c in code), "a knob is filled with `or PROFILE[...]`"
    preamble = [c for c in code if "repro.fill_parameters(globals(), PROFILE, KNOBS)" in c.source]
    assert len(preamble) == 1, "the preamble must call repro.fill_parameters(globals(), PROFILE, KNOBS) once"
    params = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    names = set(assigned_names(params.source)) - {"profile", "seed"}
    knobs = declared_knobs(preamble[0].source)
    assert names == knobs, (f"parameters without a declaration: {sorted(names - knobs)}; "
                            f"declarations without a parameter: {sorted(knobs - names)}")


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
