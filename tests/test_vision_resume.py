"""Checkpoints and exact resume of the masked-experts family (masked-moe joint and sequential, PackNet).

Unit level: a learner stopped (``request_stop``) after k epochs, its ``state_dict`` saved with ``torch.save``
and loaded into a fresh learner that trains on, ends bit for bit where the uninterrupted learner ends
(weights, which parameters learn, history, accuracy matrices, evaluation, and the final positions of both
random streams, i.e. the same random numbers were drawn). Cuts: inside a phase, exactly at a phase boundary
(the last epoch of a dataset: its best weights not yet restored, its expert not yet frozen), at the epoch
where early stopping ends a phase, PackNet in its train and in its fine-tune stage.

End to end: ``moerl train`` in a subprocess, killed with SIGKILL or stopped with SIGTERM at a random epoch
(and a random moment inside it) after the first checkpoint, then ``moerl train --resume RUN``: results.json
(timing aside), history.csv, model.pt and the TensorBoard scalars (no gap, no duplicated step) equal those
of the uninterrupted run. What differs, and why: ``train_seconds`` (wall-clock time of the processes) and
``status.json`` (``resumed_from``, times, pid).
"""

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moerl.cli import main
from moerl.core.errors import ConfigError
from moerl.masked.config import MaskedExpertsConfig
from moerl.masked.learners import make_learner
from moerl.masked.suites import build_suite
from tests.conftest import read_tb_scalars

torch.set_num_threads(1)
SIZES = dict(max_train=200, max_val=60, max_test=60)
# dropout > 0: training draws torch random numbers every step (Gumbel noise too, in the joint schedule)
SMALL = dict(env="digits-split", batch_size=64, expert_dims=[32, 16], dropout=0.2, seed=3, **SIZES)
SEQ = dict(schedule="sequential", experts=1)
PACKNET = dict(arch="packnet", schedule="sequential", finetune_epochs=2)


@pytest.fixture(scope="module")
def suite():
    return build_suite("digits-split", **SIZES)


def _learner(suite, **kw):
    return make_learner(suite, MaskedExpertsConfig(**{**SMALL, **kw}))


def _assert_same_learner(a, b) -> None:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], torch.Tensor):
            assert torch.equal(sa[key], sb[key]), key
        else:
            assert sa[key] == sb[key], key
    assert ({n: p.requires_grad for n, p in a.model.named_parameters()}
            == {n: p.requires_grad for n, p in b.model.named_parameters()})
    assert a.history == b.history
    assert a.tasks_learned == b.tasks_learned
    assert a.accuracy_matrix == b.accuracy_matrix
    assert getattr(a, "accuracy_matrix_agnostic", None) == getattr(b, "accuracy_matrix_agnostic", None)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state
    assert torch.equal(a.stream.state_dict()["cpu"], b.stream.state_dict()["cpu"])
    assert a.evaluate("test") == b.evaluate("test")


def _stop_after(learner, epochs: int) -> None:
    learner.on_epoch_end = lambda: learner.request_stop() if learner.epochs_done == epochs else None


@pytest.mark.parametrize("config,cut,where", [
    pytest.param(dict(epochs=4, patience=4), 2, "inside", id="joint"),
    pytest.param(dict(**SEQ, epochs=3, patience=3), 4, "inside", id="sequential-in-task2"),
    pytest.param(dict(**SEQ, epochs=3, patience=3), 3, "boundary", id="sequential-at-phase-boundary"),
    # seed 1, patience 1: task 1 stops early after 3 of 6 epochs (its best epoch is not its last)
    pytest.param(dict(**SEQ, epochs=6, patience=1, seed=1), 3, "boundary", id="sequential-at-early-stop"),
    pytest.param(dict(**PACKNET, epochs=3, patience=3), 4, "inside", id="packnet-finetune-stage"),
    pytest.param(dict(**PACKNET, epochs=3, patience=3), 3, "boundary", id="packnet-before-prune"),
    pytest.param(dict(**PACKNET, epochs=3, patience=3), 7, "inside", id="packnet-train-stage-task2"),
])
def test_stopped_saved_loaded_and_continued_equals_uninterrupted(suite, tmp_path, config, cut, where):
    reference = _learner(suite, **config).learn()
    phases = [h.phase for h in reference.history]
    assert cut < len(phases)
    assert (phases[cut - 1] != phases[cut]) == (where == "boundary")  # the cut is where the id says

    stopped = _learner(suite, **config)
    _stop_after(stopped, cut)
    stopped.learn()
    assert stopped.stopped and stopped.epochs_done == cut
    assert stopped.tasks_learned < len(suite.tasks)
    torch.save(stopped.state_dict(), tmp_path / "state.pt")

    fresh = _learner(suite, **config)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert fresh.epochs_done == cut
    fresh.learn()
    assert not fresh.stopped
    _assert_same_learner(reference, fresh)

    stopped.on_epoch_end = None  # the stopped learner itself also goes on where it stopped
    stopped.learn()
    _assert_same_learner(reference, stopped)


def test_load_state_dict_refuses_another_config_or_arch(suite):
    state = _learner(suite, **SEQ, epochs=1).state_dict()
    with pytest.raises(ConfigError, match=r"another config \(lr\)"):
        _learner(suite, **SEQ, epochs=1, lr=0.01).load_state_dict(state)
    with pytest.raises(ConfigError, match="arch 'masked-moe', not 'packnet'"):
        _learner(suite, **PACKNET, epochs=1).load_state_dict(state)


# ------------------------------------------------------------------------------------------ end to end
CHECKPOINT_EVERY = 3
SEQ_ARGS = ["--env", "digits-split", "--arch", "masked-moe", "--experts", "1", "--epochs", "8", "--seed", "5",
            "--set", "schedule=sequential", "--set", "patience=8", "--set", "batch_size=32",
            "--set", "max_train=300", "--set", "feature_dim=64", "--set", "expert_dims=[64,32]",
            "--set", "dropout=0.1", "--set", f"checkpoint_every={CHECKPOINT_EVERY}", "--no-progress"]
PACKNET_ARGS = ["--env", "digits-split", "--arch", "packnet", "--epochs", "6", "--seed", "5",
                "--set", "schedule=sequential", "--set", "patience=6", "--set", "finetune_epochs=2",
                "--set", "batch_size=32", "--set", "max_train=300", "--set", "feature_dim=64",
                "--set", "expert_dims=[64,32]", "--set", f"checkpoint_every={CHECKPOINT_EVERY}", "--no-progress"]
RUNS = {"seq": (SEQ_ARGS, 16), "packnet": (PACKNET_ARGS, 16)}  # args, epochs of the whole run
# checkpoint_every=3: a kill between two checkpoints loses epochs that are then trained (and logged) again
TIMING = {"train_seconds"}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            assert main(["train", *RUNS[name][0], "--logdir", str(root), "--run-name", name]) == 0
            made[name] = root / name
        return made[name]

    return get


def _kill_at_random_epoch(run: Path, proc: subprocess.Popen, sig: int, total: int, rng: random.Random) -> int:
    """Wait until a checkpoint at or after a random epoch (1 .. total-4) exists, then send ``sig`` after a
    random delay of up to 0.15 s (one to three epochs here: the killed process has logged epochs that no
    checkpoint holds, which the resumed run purges and trains again); return the epoch aimed at."""
    target = rng.randint(1, total - 4)
    deadline = time.time() + 120
    pointer = run / "checkpoint.json"
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        try:
            if json.loads(pointer.read_text())["step"] >= target:
                break
        except (OSError, ValueError):  # not there yet (the pointer is replaced atomically)
            pass
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.15))
    assert proc.poll() is None, "the run finished before it could be killed; lengthen it"
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return target


def _tb(run: Path) -> dict:
    return {tag: sorted(vals) for tag, vals in read_tb_scalars(run / "tb").items()}


def _purge_markers(run: Path) -> list[int]:
    """Steps of the purge markers (SessionLog START events) in the run's raw event files. TensorBoard's
    readers also drop a tag's earlier events when its steps go backwards, so the scalars read back cannot
    show whether the resumed writer was opened with ``purge_step``; the marker does."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [event.step for path in sorted((run / "tb").glob("events.out.tfevents.*"))
            for event in EventFileLoader(str(path)).Load() if event.HasField("session_log")]


def _saved_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same_run(a: Path, b: Path) -> None:
    ma, mb = _saved_state(a / "model.pt"), _saved_state(b / "model.pt")
    assert {k: v for k, v in ma.items() if k != "state_dict"} == {k: v for k, v in mb.items() if k != "state_dict"}
    assert ma["state_dict"].keys() == mb["state_dict"].keys()
    for key, value in ma["state_dict"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, mb["state_dict"][key]), key
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    assert {k: v for k, v in ra.items() if k not in TIMING} == {k: v for k, v in rb.items() if k not in TIMING}
    ta, tb = _tb(a), _tb(b)
    assert ta.keys() == tb.keys()
    for tag in ta:
        steps = [s for s, _ in tb[tag]]
        assert len(steps) == len(set(steps)), f"duplicated steps in {tag}"
        assert ta[tag] == tb[tag], tag


@pytest.mark.slow
@pytest.mark.parametrize("name,sig", [
    pytest.param("seq", signal.SIGKILL, id="sequential-SIGKILL"),
    pytest.param("seq", signal.SIGTERM, id="sequential-SIGTERM"),
    pytest.param("packnet", signal.SIGKILL, id="packnet-SIGKILL"),
])
def test_killed_and_resumed_equals_uninterrupted(references, tmp_path, name, sig):
    seed = time.time_ns()
    rng = random.Random(seed)
    args, total = RUNS[name]
    reference = references(name)
    run = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "moerl", "train", *args, "--logdir", str(tmp_path),
                             "--run-name", "cut"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = _kill_at_random_epoch(run, proc, sig, total, rng)
    where = f"(random seed {seed}: aimed at epoch {target}, checkpoint at {json.loads((run / 'checkpoint.json').read_text())})"
    status = json.loads((run / "status.json").read_text())
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and status["status"] == "running", where
    else:
        assert proc.returncode == 143 and status["status"] == "interrupted", where
        if "checkpoint saved" not in status["error"]:
            # A loaded machine let the run outpace the aim past its last epoch: the signal came in the final
            # evaluation, after the loop, where no stop checkpoint is written; the last periodic one is kept.
            last_periodic = total - total % CHECKPOINT_EVERY
            assert status["error"] == "terminated by SIGTERM", where
            assert json.loads((run / "checkpoint.json").read_text())["step"] == last_periodic, where
            assert not (run / "results.json").exists(), where
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0, where
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and status["resumed_from"] >= 1, where
    assert _purge_markers(run) == [status["resumed_from"]], where  # what the killed process logged after it
    assert not (run / "checkpoint.json").exists() and not (run / "checkpoints").exists(), where
    _assert_same_run(reference, run)


def test_checkpoints_change_nothing_that_is_trained(references):
    """The CLI run wrote a checkpoint after every epoch (state_dict inside the training stream); the same
    config trained through the Python API without any checkpoint ends with the same weights and history."""
    run = references("seq")
    blob = _saved_state(run / "model.pt")
    cfg = MaskedExpertsConfig.from_mapping(blob["config"])
    data = build_suite(cfg.env, cfg.data_dir, seed=cfg.seed, val_fraction=cfg.val_fraction,
                       test_fraction=cfg.test_fraction, max_train=cfg.max_train, max_val=cfg.max_val,
                       max_test=cfg.max_test)
    learner = make_learner(data, cfg).learn()
    for key, value in learner.model.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, blob["state_dict"][key]), key
    rows = (run / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + len(learner.history) == 1 + RUNS["seq"][1]


def test_a_finished_run_keeps_no_checkpoint(references):
    run = references("seq")
    assert not (run / "checkpoint.json").exists() and not (run / "checkpoints").exists()


def test_resume_refuses_a_finished_run(references, capsys):
    run = references("seq")  # may train the reference here: its progress lines are not the refusal's
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "is finished; only interrupted, failed or crashed runs resume" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra,message", [
    (["--epochs", "3"], "option --epochs cannot change a resumed run; with --resume only --device"),
    (["--set", "lr=0.1"], "--set, --config and --run-name cannot change a resumed run"),
])
def test_resume_refuses_changes(references, tmp_path, capsys, extra, message):
    run = tmp_path / "r"
    shutil.copytree(references("seq"), run)
    capsys.readouterr()  # the reference may have trained just now: its output is not the refusal's
    status = json.loads((run / "status.json").read_text())
    status["status"] = "interrupted"
    (run / "status.json").write_text(json.dumps(status))
    (run / "checkpoint.json").write_text(json.dumps({"folder": "checkpoints/epoch-3", "step": 3}))
    assert main(["train", "--resume", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"  # left as it was


def test_checkpoint_every_must_be_positive(tmp_path, capsys):
    assert main(["train", "--env", "digits-split", "--set", "checkpoint_every=0", "--logdir", str(tmp_path)]) == 2
    assert "checkpoint_every" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
