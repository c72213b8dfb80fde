"""repro stability: outcomes per seed set, agreement and flips, the stored table, and the status page."""
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from repro.tools import execution as ch
from repro.tools.stability import chapter_stability, claims_table, describe, seed_sets, stability, store
from repro.tools.status import status_markdown

FIXTURE = Path(__file__).parent / "fixtures" / "tiny.ipynb"


def rec(*outcomes):
    return {"status": "ok", "verdicts": [{"claim": f"claim {i}", "outcome": o} for i, o in enumerate(outcomes, 1)]}


def test_seed_sets_are_disjoint_bases():
    assert seed_sets(3) == [0, 1000, 2000]
    with pytest.raises(ValueError, match="at least 2"):
        seed_sets(1)


def test_claims_table_marks_agreement_and_flips():
    t = claims_table("c", {0: rec("REPRODUCED", "REPRODUCED", "INCONCLUSIVE"),
                           1000: rec("REPRODUCED", "NOT REPRODUCED", "REPRODUCED"),
                           2000: {"status": "failed", "error": "x"}})
    assert list(t.columns) == ["chapter", "claim", "text", "seed_0", "seed_1000", "seed_2000", "agreed", "flipped"]
    assert t.seed_2000.tolist() == ["FAILED"] * 3 and not t.agreed.any()
    assert t.flipped.tolist() == [False, True, False]
    t = claims_table("c", {0: rec("REPRODUCED"), 1000: rec("REPRODUCED")})
    assert t.agreed.all() and describe(t) == "c: stable across 2 seed sets (1 claims)"


def test_store_keeps_the_other_chapters_rows(tmp_path):
    csv = tmp_path / "s.csv"
    store(claims_table("a", {0: rec("REPRODUCED"), 1000: rec("INCONCLUSIVE")}), csv)
    store(claims_table("b", {0: rec("REPRODUCED"), 1000: rec("REPRODUCED")}), csv)
    store(claims_table("a", {0: rec("REPRODUCED"), 1000: rec("REPRODUCED")}), csv)
    table = pd.read_csv(csv)
    assert table.chapter.tolist() == ["a", "b"] and table.agreed.all()
    assert chapter_stability(csv) == {"a": "stable across 2 seed sets", "b": "stable across 2 seed sets"}


def test_stability_runs_each_seed_set_and_resumes(tmp_path, capsys):
    folder = tmp_path / "nb"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "tiny.ipynb")
    csv = tmp_path / "stability.csv"
    table = stability([str(folder / "tiny.ipynb")], sets=2, out_dir=tmp_path / "out", workers=2, csv=csv,
                      progress=False)
    assert table.seed_0.tolist() == ["REPRODUCED"] and table.seed_1000.tolist() == ["REPRODUCED"]
    assert table.agreed.all() and not table.flipped.any() and csv.exists()
    stability([str(folder / "tiny.ipynb")], sets=2, out_dir=tmp_path / "out", csv=None, progress=False)
    assert "0 runs to do" in capsys.readouterr().out
    # a change to the chapter's code makes the stored runs out of date: they are done again
    nb = ch.read(folder / "tiny.ipynb")
    next(c for c in nb.cells if c.cell_type == "code").source += "\n# changed"
    ch.nbformat.write(nb, str(folder / "tiny.ipynb"))
    stability([str(folder / "tiny.ipynb")], sets=2, out_dir=tmp_path / "out", csv=None, progress=False)
    assert "2 runs to do" in capsys.readouterr().out
    # the status page reads the records stored in the notebooks and the stability table
    ch.execute(folder / "tiny.ipynb", "quick", progress=False)
    page = status_markdown(folder, csv)
    assert "**1 chapters, 1 claims:** 1 REPRODUCED, 0 NOT REPRODUCED, 0 INCONCLUSIVE." in page
    assert "| 1 / 0 / 0 | stable across 2 seed sets |" in page
    assert re.search(r"spread: 1\.0\d*, 95% interval \[0\.9\d*, 1\.0\d*\], n = 5, bar < 2: REPRODUCED", page)
