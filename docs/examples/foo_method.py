"""A worked example of a method plugin: FOO, a logit loss with one hyperparameter.

FOO is focal-style distillation: the KL divergence from the teacher's softened distribution to the
student's, with each sample weighted by how much the student still disagrees with the teacher,
(1 - p_s(ŷ_t))^gamma, where ŷ_t is the teacher's top class and p_s the student's softmax. With
gamma = 0 it is Hinton's KD at T = 1; a larger gamma concentrates on the samples the student gets
wrong. (A made-up method: it exists to show the plugin mechanism, not to beat CKD.)

Use it without touching ckd_lib:

    python -m ckd_lib.train --plugin docs/examples/foo_method.py --recipe cifar100 \\
        resnet32x4 resnet8x4 FOO --set teacher_checkpoint=...
    python -m ckd_lib.study --profile docs/examples/foo_profile.yaml   # its plugins: list

FOO has no recipe rows: it borrows CKD's (480 epochs, cosine, lr 0.05, batch 64), so every pair
of the CIFAR tables can run it. The same term also works on COCO detection (the RoI head's logits
of the sampled proposals), registered there with its own default weight.
"""

import torch
import torch.nn.functional as F

from ckd_lib.methods import Param, register_method, register_term, use


def foo_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
             gamma: float) -> torch.Tensor:
    """mean_i (1 - p_s,i(argmax t_i))^gamma · KL(softmax(t_i) ‖ softmax(s_i)), in float32."""
    s, t = student_logits.float(), teacher_logits.float()
    log_p_s = F.log_softmax(s, dim=1)
    p_t = F.softmax(t, dim=1)
    kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - log_p_s)).sum(dim=1)
    top = t.argmax(dim=1, keepdim=True)
    weight = (1.0 - log_p_s.gather(1, top).squeeze(1).exp()).clamp_min(0.0) ** gamma
    return (weight.detach() * kl).mean()


def foo_term(inputs, params):
    """The registry calls this with the step's logits and the resolved parameters."""
    return params["foo_weight"] * foo_loss(inputs.student_logits, inputs.teacher_logits,
                                           params["gamma"])


register_term(
    "foo",
    params=[Param("foo_weight", float, 1.0, "weight of the FOO term"),
            Param("gamma", float, 2.0, "focusing exponent (0: plain KD at T=1)")],
    needs=["teacher_logits"],
    compute=foo_term,
    help="focal-weighted KL to the teacher",
)
# classification: cross-entropy plus FOO, with CKD's published recipes
register_method("FOO", ["ce", "foo"], recipe_from="CKD", help="CE + focal-weighted KD")
# detection: FOO on the RoI head's logits, CKD's COCO recipe, a smaller weight
register_method("FOO", [use("foo", foo_weight=0.1)], task="detection", recipe_from="CKD")
