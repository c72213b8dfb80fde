import json
import shutil

import pandas as pd
import pytest
from repro.cli import main as cli
from repro.tools import sweep as sw

FIXTURE = sw.Path(__file__).parent / "fixtures" / "tiny.ipynb"


@pytest.fixture
def chapter(tmp_path):
    p = tmp_path / "tiny.ipynb"
    shutil.copy(FIXTURE, p)
    return p


def test_grid_casts_and_validates(chapter):
    grid = sw.build_grid(chapter, [["seed", "0", "1"], ["scale", "1", "3.5"]], fixed={"profile": "quick"})
    assert len(grid) == 4 and grid[0] == {"seed": 0, "scale": 1.0, "profile": "quick"}
    with pytest.raises(sw.SweepError, match="has no parameter 'width'; its parameters are: profile, seed, scale, fail"):
        sw.build_grid(chapter, [["width", "3"]])
    with pytest.raises(sw.SweepError, match="parameter seed takes a value of type int"):
        sw.build_grid(chapter, [["seed", "1.5"]])
    with pytest.raises(sw.SweepError, match="parameter scale takes a value of type float"):
        sw.build_grid(chapter, [["scale", "big"]])


def test_grid_from_yaml(chapter, tmp_path):
    (tmp_path / "g.yaml").write_text("seed: [0, 1, 2]\nscale: 2.0\n")
    assert len(sw.build_grid(chapter, yaml_file=str(tmp_path / "g.yaml"))) == 3


def test_unknown_chapter_and_unwritable_folder(chapter, tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown chapter 'nope'"):
        sw.sweep("nope", [["seed", "0"]], out_dir=str(tmp_path / "o"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli(["sweep", str(chapter), "-p", "seed", "0", "-o", str(blocker / "sub")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_sweep_records_failures_resumes_and_aggregates(chapter, tmp_path, capsys):
    out = tmp_path / "out"
    table = sw.sweep(str(chapter), [["seed", "0", "1"], ["scale", "1", "3"], ["fail", "False", "True"]],
                     out_dir=str(out), profile="quick", progress=False)
    assert len(table) == 8 and (table.status == "failed").sum() == 4
    failed = table[table.status == "failed"].iloc[0]
    assert "RuntimeError: asked to fail" in failed.error
    ok = table[table.status == "ok"]
    # spread of N(0, scale^2) samples: below two for scale 1 only
    assert ok.groupby("scale").outcome.unique().apply(list).to_dict() == {1.0: ["REPRODUCED"], 3.0: ["NOT REPRODUCED"]}
    assert len(list((out / "runs").glob("*.ipynb"))) == 8
    assert (out / "results.csv").exists() and (out / "summary-seed.png").exists() and (out / "summary-scale.png").exists()
    assert "4 finished runs (2 REPRODUCED, 2 NOT REPRODUCED, 0 INCONCLUSIVE); 4 runs failed" in capsys.readouterr().out
    # an interrupted sweep: lose two finished records, run again: only those two (and the failures) run
    finished = sorted((out / "records").glob("*.json"))
    oks = [f for f in finished if json.loads(f.read_text())["status"] == "ok"]
    for f in oks[:2]:
        f.unlink()
    sw.sweep(str(chapter), [["seed", "0", "1"], ["scale", "1", "3"], ["fail", "False", "True"]],
             out_dir=str(out), profile="quick", progress=False)
    assert "8 runs in the grid, 2 already finished, 6 to run" in capsys.readouterr().out
    again = pd.read_csv(out / "results.csv")
    assert (again.status == "ok").sum() == 4


def test_ray_engine_gives_the_same_records(chapter, tmp_path):
    pytest.importorskip("ray")
    grid = [["seed", "0", "1"], ["scale", "1", "3"]]
    local = sw.sweep(str(chapter), grid, out_dir=str(tmp_path / "local"), profile="quick", progress=False)
    ray = sw.sweep(str(chapter), grid, out_dir=str(tmp_path / "ray"), profile="quick", engine="ray", progress=False)
    cols = ["run", "seed", "scale", "status", "outcome", "verdict 1", "spread"]
    a = local[cols].sort_values("run").reset_index(drop=True)
    b = ray[cols].sort_values("run").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_an_undeclared_parameter_stops_the_run_with_one_sentence(chapter, tmp_path):
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(chapter), str(tmp_path / "out.ipynb"), parameters={"scael": 2.0},
                            cwd=str(tmp_path), progress_bar=False, kernel_name="python3")
    assert e.value.ename == "ParameterError"
    assert e.value.evalue == "'scael' is not a parameter of this chapter; its parameters are: profile, seed, scale, fail."
