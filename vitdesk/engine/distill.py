"""Distillation from a frozen teacher run: the loss (Hinton et al.; DeiT's hard and
token modes) and the view of the student's batch the teacher sees (its own image size
and normalisation). The trainer applies :class:`Distiller` on every step;
``engine.run`` wraps the loaded teacher in :class:`TeacherAtOwnSize`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitdesk.engine.plan import DISTILL_MODES


class Distiller:
    """Distillation from a frozen teacher (Hinton et al.; DeiT, Touvron et al. 2021).

    ``soft``: ``(1 - alpha) * label_loss + alpha * T^2 * KL(p_teacher,T || p_student,T)``.
    ``hard`` and ``token``: ``(1 - alpha) * label_loss + alpha * CE(student, argmax
    teacher)``. With a distilled student the logits are a ``(cls, dist)`` pair: the
    label loss takes the class head (the caller computes it) and the teacher term the
    distillation head; ``token`` is hard distillation through that token, DeiT's best.
    The teacher runs in eval mode under ``no_grad``.
    """

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float,
                 mode: str = "soft") -> None:
        if mode not in DISTILL_MODES:
            raise ValueError(f"distillation mode '{mode}': use {', '.join(DISTILL_MODES)}")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.t, self.alpha, self.mode = float(temperature), float(alpha), mode

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits for ``x`` (float32, no graph)."""
        if self.teacher.training:  # someone called .train() on the whole tree
            self.teacher.eval()
        out = self.teacher(x)
        if isinstance(out, tuple):  # a distilled teacher: its own inference average
            out = (out[0] + out[1]) / 2
        return out.float()

    def __call__(self, x: torch.Tensor, student: torch.Tensor | tuple, base_loss: torch.Tensor
                 ) -> torch.Tensor:
        s = (student[-1] if isinstance(student, tuple) else student).float()
        t_logits = self.teacher_logits(x)
        if self.mode == "soft":
            term = F.kl_div(F.log_softmax(s / self.t, dim=-1),
                            F.log_softmax(t_logits / self.t, dim=-1),
                            reduction="batchmean", log_target=True) * (self.t * self.t)
        else:
            term = F.cross_entropy(s, t_logits.argmax(dim=-1))
        return (1.0 - self.alpha) * base_loss + self.alpha * term


class TeacherAtOwnSize(nn.Module):
    """A teacher that sees each (augmented) student batch as its own preprocessing
    would: resized to its image size and normalised with its mean and std.

    Both runs letterbox the same windowed slice into a square, so resizing the
    student's square is the teacher's letterbox up to interpolation; normalisation is
    per channel and affine, so it commutes with the resize. A 64-px CNN can then teach
    a 128-px ViT (the CNN's best size on small images need not be the ViT's).
    """

    def __init__(self, teacher: nn.Module, size: int, student_mean: Sequence[float],
                 student_std: Sequence[float], mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.teacher, self.size = teacher, int(size)
        ref = next(teacher.parameters(), torch.zeros(()))
        as_t = lambda v: torch.as_tensor(list(v), dtype=torch.float32,  # noqa: E731
                                         device=ref.device).view(1, -1, 1, 1)
        sm, ss, tm, ts = as_t(student_mean), as_t(student_std), as_t(mean), as_t(std)
        # x_teacher = (x * ss + sm - tm) / ts
        self.register_buffer("scale", ss / ts, persistent=False)
        self.register_buffer("shift", (sm - tm) / ts, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)
        return self.teacher(x * self.scale + self.shift)
