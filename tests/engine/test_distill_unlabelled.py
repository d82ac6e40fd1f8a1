"""Distillation on unlabelled images: the teacher labels what the user did not."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from tests.engine._synth import CLASSES, squares, tiny_cfg
from tests.pngdata import write_square_pngs
from vitdesk.engine.run import TrainData, load_run, train
from vitdesk.engine.trainer import Trainer, dataset_targets
from vitdesk.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny CNN that solves the bright-square task (val accuracy >= 0.8 checked below)."""
    torch.set_num_threads(1)
    cfg = tiny_cfg(tmp_path_factory.mktemp("teacher") / "cnn", epochs=4, lr=1e-2)
    cfg.model.name = "cnn_test_tiny"
    cfg.model.attention = "auto"
    return train(cfg, data=TrainData(squares(128, 0), squares(64, 1), list(CLASSES)))


def _unlabelled(n: int, seed: int) -> TensorDataset:
    x, _ = squares(n, seed).tensors
    return TensorDataset(x, torch.full((n,), -1))


def _accuracy(run, ds: TensorDataset) -> float:
    model = load_run(run).model
    x, y = ds.tensors
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def test_label_loss_skips_unlabelled_targets(tmp_path):
    cfg = tiny_cfg(tmp_path / "r")
    model = torch.nn.Linear(4, 2)
    t = Trainer(cfg, model, squares(4, 0), None, CLASSES, torch.device("cpu"), None)
    logits = torch.randn(3, 2, requires_grad=True)
    mixed = t._loss(logits, torch.tensor([0, -1, 1]))
    torch.testing.assert_close(mixed, F.cross_entropy(logits[[0, 2]], torch.tensor([0, 1])))
    none = t._loss(logits, torch.tensor([-1, -1, -1]))
    assert none.item() == 0.0 and none.requires_grad  # the teacher term still backpropagates


def test_unlabelled_images_need_a_teacher_and_no_mixup(tmp_path):
    cfg = tiny_cfg(tmp_path / "r")
    cfg.teacher.unlabelled = str(tmp_path)
    with pytest.raises(ConfigError, match="needs a teacher"):
        cfg.validate()
    cfg.teacher.run = str(tmp_path)
    cfg.data.mixup = 0.2
    with pytest.raises(ConfigError, match="mixup"):
        cfg.validate()


def test_teacher_labels_on_unlabelled_images_teach_the_student(tmp_path, teacher):
    """4 labelled images alone teach little; 96 more labelled by the teacher teach the task."""
    assert json.loads((teacher / "metrics.json").read_text())["best_val_acc"] >= 0.8
    labelled, held_out = squares(4, 3), squares(128, 5)
    accs = {}
    for name, unl in (("labels only", None), ("with unlabelled", _unlabelled(96, 4))):
        cfg = tiny_cfg(tmp_path / name.replace(" ", "-"), epochs=12, lr=2e-3, batch=16)
        cfg.teacher.run = str(teacher)
        cfg.teacher.alpha = 0.5
        # the class-token ViT is the slower learner: 4 labels alone leave it near chance
        cfg.model.pool = "token"
        run = train(cfg, data=TrainData(labelled, None, list(CLASSES), unlabelled=unl),
                    distill_mode="hard")
        accs[name] = _accuracy(run, held_out)
        if unl is not None:
            env = json.loads((run / "env.json").read_text())
            assert env["teacher"]["unlabelled_images"] == 96
            steps = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
            # an epoch covers labelled + unlabelled images: ceil(100 / 16) = 7 updates
            assert steps[0]["step"] == 7
    assert accs["with unlabelled"] >= 0.8, accs
    assert accs["with unlabelled"] >= accs["labels only"] + 0.1, accs


def _pngs(folder, n, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        img = rng.normal(90, 20, (32, 32)).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"u{i:03d}.png"), img)
    return folder


def test_source_unlabelled_images_leave_out_held_out_patients(tmp_path):
    src = write_square_pngs(tmp_path / "data", per_class=10)
    teacher = tmp_path / "cnn"  # the folder's classes (sorted names): lesion, normal
    cfg = tiny_cfg(teacher, epochs=1, lr=1e-2)
    cfg.model.name, cfg.model.attention, cfg.data.source = "cnn_test_tiny", "auto", str(src)
    train(cfg)
    cfg = tiny_cfg(tmp_path / "same", epochs=1)
    cfg.data.source = str(src)
    cfg.teacher.run = str(teacher)
    cfg.teacher.unlabelled = str(src)  # the labelled folder itself: nothing new is left
    with pytest.raises(DataError, match="no image is left"):
        train(cfg, distill_mode="hard")
    assert not (tmp_path / "same").exists()  # refused before anything was written

    extra = _pngs(tmp_path / "extra", 12, 1)
    cfg = tiny_cfg(tmp_path / "run", epochs=1)
    cfg.data.source = str(src)
    cfg.teacher.run = str(teacher)
    cfg.teacher.unlabelled = str(extra)
    run = train(cfg, distill_mode="hard")
    assert json.loads((run / "env.json").read_text())["teacher"]["unlabelled_images"] == 12


def test_concat_targets_mark_unlabelled_images():
    ds = torch.utils.data.ConcatDataset([squares(4, 0), _unlabelled(3, 1)])
    t = dataset_targets(ds)
    assert t[:4] == squares(4, 0).tensors[1].tolist() and t[4:] == [-1, -1, -1]
