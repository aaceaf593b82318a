"""The checkpoint store: one complete folder named by the pointer, whatever fails while writing the next."""

import errno
import json

import pytest

from moerl.core.checkpoint_store import (
    POINTER,
    checkpoint_folder,
    checkpoint_step,
    remove_checkpoints,
    write_checkpoint,
)


def _writer(text):
    def write(folder):
        (folder / "state.txt").write_text(text)
    return write


def test_pointer_names_the_newest_complete_folder_and_older_ones_go(tmp_path):
    assert checkpoint_step(tmp_path) is None
    write_checkpoint(tmp_path, 3, _writer("a"), kind="epoch")
    write_checkpoint(tmp_path, 5, _writer("b"), kind="epoch")
    assert checkpoint_step(tmp_path) == 5
    assert (checkpoint_folder(tmp_path) / "state.txt").read_text() == "b"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-5"]


def test_a_second_checkpoint_at_the_same_step_never_replaces_the_named_folder(tmp_path):
    """A signal checkpoint mid-epoch shares its step with the epoch's checkpoint: it gets its own folder."""
    first = write_checkpoint(tmp_path, 4, _writer("end of epoch 4"))
    second = write_checkpoint(tmp_path, 4, _writer("mid epoch 5"))
    assert first != second and not first.exists()
    assert (checkpoint_folder(tmp_path) / "state.txt").read_text() == "mid epoch 5"


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failing_write_keeps_the_previous_checkpoint_whole(tmp_path, error):
    write_checkpoint(tmp_path, 1, _writer("good"))

    def broken(folder):
        (folder / "state.txt").write_text("half")
        raise error

    with pytest.raises(type(error)):
        write_checkpoint(tmp_path, 2, broken)
    assert json.loads((tmp_path / POINTER).read_text())["step"] == 1
    assert (checkpoint_folder(tmp_path) / "state.txt").read_text() == "good"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-1"]


def test_remove_checkpoints_leaves_nothing(tmp_path):
    write_checkpoint(tmp_path, 1, _writer("x"))
    remove_checkpoints(tmp_path)
    assert checkpoint_step(tmp_path) is None and not (tmp_path / "checkpoints").exists()
