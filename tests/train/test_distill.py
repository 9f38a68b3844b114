"""Distillation: the soft term against a naive KL, the mixing, the teacher's checks and its input."""
import math

import numpy as np
import pytest
import torch

import hyperseg
from hyperseg.classes import CAMVID_CLASSES
from hyperseg.cli import main as cli_main
from hyperseg.train.distill import DistillationLoss, Teacher, soft_kl
from hyperseg.train.losses import build_loss

TINY = [
    "model.name=hyperseg", "model.options.encoder_name=tf_efficientnet_lite0",
    "model.options.weight_groups=[16,16,8,8,4]", "data.dataset=camvid", "data.crop_size=[64,96]",
    "data.batch_size=2", "data.workers=0", "data.val_split=null", "optim.max_iters=1",
    "train.tensorboard=false", "train.progress=false",
]


def naive_kl(student, teacher, temperature):
    """T^2 * mean over pixels of sum_c p_c log(p_c / q_c), one pixel at a time in float64."""
    s, t = student.double().numpy(), teacher.double().numpy()
    b, c, h, w = s.shape
    total = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                p = np.exp(t[i, :, y, x] / temperature)
                p /= p.sum()
                q = np.exp(s[i, :, y, x] / temperature)
                q /= q.sum()
                total += sum(p[k] * math.log(p[k] / q[k]) for k in range(c))
    return temperature ** 2 * total / (b * h * w)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_kl_equals_a_naive_kl(temperature):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 3, 4, generator=g) * 3, torch.randn(2, 5, 3, 4, generator=g) * 3
    got = soft_kl(student.double(), teacher.double(), temperature).item()
    assert got == pytest.approx(naive_kl(student, teacher, temperature), rel=1e-10)
    assert soft_kl(teacher.double(), teacher.double(), temperature).item() == pytest.approx(0, abs=1e-12)


def test_distillation_loss_mixes_task_and_soft_terms():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 4, 6, 5, generator=g), torch.randn(2, 4, 6, 5, generator=g)
    labels = torch.randint(0, 4, (2, 6, 5), generator=g)
    labels[0, 0] = 255
    task = build_loss("ce")
    for weight in (0.0, 0.3, 1.0):
        loss = DistillationLoss(task, temperature=2.0, weight=weight)(student, labels, teacher)
        expected = (1 - weight) * task(student, labels).item() + weight * naive_kl(student, teacher, 2.0)
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def _tiny_model(num_classes=11, **meta):
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=num_classes,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    model.meta.update(meta)
    return model


def test_teacher_renormalises_the_students_batch():
    """A teacher trained with other mean/std sees the image as it was trained to, and no gradient leaves it."""
    model = _tiny_model(3, class_names=["a", "b", "c"], mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    teacher = Teacher(model, class_names=["a", "b", "c"], mean=[0.5] * 3, std=[0.5] * 3, device=torch.device("cpu"))
    image = torch.rand(1, 3, 64, 96)  # in [0, 1]
    student_input = (image - 0.5) / 0.5
    teacher_input = (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(teacher_input)
    got = teacher(student_input)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not got.requires_grad and not got.is_inference()


def test_teacher_with_other_classes_is_refused_naming_both(tiny_camvid, tmp_path, capsys):
    hyperseg.save_model(_tiny_model(5, class_names=list("abcde")), tmp_path / "five.pt")
    code = cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'run'}",
                     f"distill.teacher={tmp_path / 'five.pt'}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "five.pt predicts 5 classes ['a', 'b', 'c', 'd', 'e']" in err and "11 classes ['sky'" in err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
    # same count, other names (a different order is another labelling)
    names = list(CAMVID_CLASSES)
    hyperseg.save_model(_tiny_model(11, class_names=names[::-1]), tmp_path / "reversed.pt")
    assert cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'run'}",
                     f"distill.teacher={tmp_path / 'reversed.pt'}"]) == 2
    assert "same classes in the same order" in capsys.readouterr().err


def test_missing_teacher_names_the_sources(tiny_camvid, tmp_path, capsys):
    code = cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'run'}",
                     "distill.teacher=no_such_teacher.pt"])
    err = capsys.readouterr().err
    assert code == 2 and "no_such_teacher.pt" in err and "registered weights" in err and "camvid_train" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("override, expected", [("distill.weight=1.5", "in [0, 1]"), ("distill.weight=-0.1", "in [0, 1]"),
                                                ("distill.temperature=0", "> 0"), ("distill.temperature=-2", "> 0")])
def test_out_of_range_distill_values_are_one_line(tmp_path, capsys, override, expected):
    assert cli_main(["train", *TINY, f"train.out_dir={tmp_path / 'run'}", "distill.teacher=camvid_train",
                     override]) == 2
    err = capsys.readouterr().err
    assert override.split("=")[0] in err and expected in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_a_teacher_file_that_changed(tiny_camvid, tmp_path, capsys):
    """The run records its teacher's SHA-256; the same path holding other weights on --resume is refused in
    one line naming the file and both digests, and the original teacher resumes."""
    import hashlib
    import shutil

    import torch

    teacher = tmp_path / "teacher.pt"
    hyperseg.save_model(_tiny_model(class_names=list(CAMVID_CLASSES)), teacher)
    original = hashlib.sha256(teacher.read_bytes()).hexdigest()
    run = ["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'run'}",
           f"distill.teacher={teacher}"]
    assert cli_main(run) == 0
    last = tmp_path / "run" / "last.pt"
    assert torch.load(last, weights_only=True)["train_state"]["teacher_sha256"] == original
    shutil.copy(teacher, tmp_path / "original.pt")

    torch.manual_seed(1)  # other random weights, the same classes: only the digest tells them apart
    hyperseg.save_model(_tiny_model(class_names=list(CAMVID_CLASSES)), teacher)
    replaced = hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert replaced != original
    before = last.read_bytes()
    capsys.readouterr()
    assert cli_main([*run, "--resume", "optim.max_iters=2"]) == 2
    err = capsys.readouterr().err
    assert str(teacher) in err and original[:12] in err and replaced[:12] in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert last.read_bytes() == before

    shutil.copy(tmp_path / "original.pt", teacher)
    assert cli_main([*run, "--resume", "optim.max_iters=2"]) == 0
    state = torch.load(last, weights_only=True)["train_state"]
    assert state["step"] == 2 and state["teacher_sha256"] == original
