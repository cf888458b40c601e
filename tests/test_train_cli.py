"""train.py's own argument handling (the loop itself is tested in test_loop.py)."""
from train import main


def test_sweep_flags_dispatch_to_the_sweep_runner(capsys):
    assert main(["--cfg", "configs/quickstart.toml", "--sweep", "optim.lr"]) == 2
    assert "--sweep optim.lr" in capsys.readouterr().err


def test_missing_cfg_is_a_clear_error(capsys):
    assert main([]) == 2
    assert "give --cfg configs/<name>.toml" in capsys.readouterr().err


def test_bad_override_is_reported_before_anything_loads(capsys):
    assert main(["--cfg", "configs/quickstart.toml", "--set", "optim.lrr=1"]) == 2
    assert "did you mean optim.lr?" in capsys.readouterr().err
