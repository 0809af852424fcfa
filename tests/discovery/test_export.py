import torch
import torch.nn.functional as F

from podisco.cli.main import main
from podisco.discovery.archive import Archive
from podisco.discovery.export import export_attempt
from podisco.losses.forms import load_loss_file
from podisco.tasks.seeds import PREFERENCE_SEEDS


def test_export_writes_a_loss_file_that_loads_under_the_contract(tmp_path, capsys):
    archive = Archive(tmp_path / "archive.sqlite")
    archive.create_run("r", {"beta": 0.05}, "imdb", "3-tiny", "bwrap")
    attempt_id = archive.add_proposed("r", 1, 0, "llm", "dpo", 'a "quoted" """thought"""', PREFERENCE_SEEDS["dpo"])
    archive.finish(attempt_id, "evaluated", fitness=0.01)
    assert main(["runs", "show", "r", "--root", str(tmp_path)]) == 0
    assert "dpo" in capsys.readouterr().out
    assert main(["export", "r", "--best", "-o", str(tmp_path / "loss.py"), "--root", str(tmp_path)]) == 0
    label, fn = load_loss_file(f"{tmp_path / 'loss.py'}:dpo")
    assert label.startswith("loss.py:dpo@")
    pc, pr, rc, rr = (torch.randn(6, dtype=torch.float64) for _ in range(4))
    expected = -F.logsigmoid(0.1 * ((pc - pr) - (rc - rr)))
    torch.testing.assert_close(fn(pc, pr, rc, rr, beta=0.1), expected)
    again = export_attempt(archive.attempt(attempt_id), tmp_path / "again.py")
    assert "podisco train --loss again.py:dpo" in again.read_text()
