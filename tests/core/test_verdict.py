import numpy as np
import torch


def test_line_and_record(capsys):
    v = verdict("Networks fit random labels", passed=np.float64(0.995) > 0.99,
                evidence={"train accuracy": torch.tensor(0.995)})
    assert capsys.readouterr().out == "REPRODUCED: Networks fit random labels\n"
    rec = v.record()
    assert rec["reproduced"] is True and abs(rec["evidence"]["train accuracy"] - 0.995) < 1e-6


def test_not_reproduced(capsys):
    v = verdict("A claim", passed=False)
    assert capsys.readouterr().out == "NOT REPRODUCED: A claim\n"
    v.show()
    assert "evidence" in capsys.readouterr().out
