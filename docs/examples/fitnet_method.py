"""A worked example of a trainable term: FitNet's hint loss (Romero et al., ICLR 2015).

The student's last stage output goes through a 1x1 convolution (the *connector*, trained with
the student) and is matched to the teacher's last stage output by mean squared error; FitNet
is cross-entropy plus that hint. docs/METHODS.md explains each part (the constructor,
``param_groups``, ``metrics``, how to refuse a value) and what the study keeps of the connector
(the ``objective`` entry of ``model_last.pth``).

    python -m ckd_lib.train --plugin docs/examples/fitnet_method.py --recipe cifar100 \\
        resnet32x4 resnet8x4 FitNet --set teacher_checkpoint=...

It has no recipe rows of its own: it borrows KD's.
"""

import torch.nn.functional as F
from torch import nn

from ckd_lib.errors import InputError
from ckd_lib.methods import Param, TermModule, register_method, register_term


class FitNetTerm(TermModule):
    """hint_weight · MSE(connector(student's last stage), teacher's last stage)."""

    def __init__(self, params: dict, context):
        super().__init__(params)
        student, teacher = context.student.stage_channels(), context.teacher.stage_channels()
        self.connector = nn.Conv2d(student[-1], teacher[-1], kernel_size=1, bias=False)

    def forward(self, inputs):
        hint = self.connector(inputs.student_features["feats"][-1])
        target = inputs.teacher_features["feats"][-1]
        if hint.shape[-2:] != target.shape[-2:]:
            raise InputError(f"FitNet: the student's last stage is {tuple(hint.shape[-2:])}, the "
                             f"teacher's {tuple(target.shape[-2:])}; the hint needs the same "
                             "spatial size (choose a pair whose last stages match)")
        return self.params["hint_weight"] * F.mse_loss(hint, target.float())

    def param_groups(self, weight_decay: float):
        return [(list(self.connector.parameters()), weight_decay)]

    def metrics(self) -> dict[str, float]:
        return {"connector_norm": float(self.connector.weight.detach().norm())}


register_term("fitnet", params=[Param("hint_weight", float, 100.0, "weight of the hint loss")],
              needs=["features"], tasks=("classification",), module=FitNetTerm,
              help="MSE between the connector's student features and the teacher's")
register_method("FitNet", ["ce", "fitnet"], recipe_from="KD", help="CE + FitNet hint")
