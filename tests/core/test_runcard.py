import pytest
import repro
import torch
from repro.core.params import ParameterError
from repro.core.runcard import resolve_profile, seed_everything


def test_auto_profile_follows_device(monkeypatch):
    monkeypatch.delenv("REPRO_PROFILE", raising=False)
    expected = "full" if torch.cuda.is_available() else "quick"
    assert resolve_profile("auto") == expected
    assert resolve_profile("full") == "full"


def test_env_overrides_auto_only(monkeypatch):
    monkeypatch.setenv("REPRO_PROFILE", "full")
    assert resolve_profile("auto") == "full"
    assert resolve_profile("quick") == "quick"


def test_unknown_profile_is_one_clear_sentence():
    with pytest.raises(ParameterError) as e:
        resolve_profile("fast")
    msg = str(e.value)
    assert "profile" in msg and "'quick'" in msg and "'full'" in msg and "'fast'" in msg
    assert msg.count("\n") == 0


def test_seeding_is_repeatable():
    seed_everything(3)
    a = torch.randn(5)
    seed_everything(3)
    assert torch.equal(a, torch.randn(5))


def test_run_card_records_wall_time(capsys):
    card = repro.start_run("unit", "quick", seeds=[0, 1])
    card.finish()
    out = capsys.readouterr().out
    assert "chapter   unit" in out and "profile   quick" in out and "wall time" in out
    assert card.as_dict()["seeds"] == [0, 1] and card.wall_time_s >= 0
