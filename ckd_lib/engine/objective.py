"""A run's training objective: its method's registered terms as one module.

The objective is an nn.Module because some terms carry parameters that train with the student
(a learnable CKD temperature, the ReviewKD connectors); it hands the trainer their optimizer
groups (:meth:`Objective.param_groups`), so a plugin's trainable term is optimised without the
trainer knowing it. It returns a dict of weighted terms whose sum is the loss, so the history
logs every term separately. Per-epoch scalars (the warm-up factor) arrive as a device tensor,
which keeps the whole step capturable in a CUDA graph.
"""

from __future__ import annotations

import torch
from torch import nn

from ckd_lib.config import RunConfig
from ckd_lib.methods import Method, TermContext, TermInputs, get_method
from ckd_lib.methods.contract import FirstNonFinite, call_term, check_value


class Objective(nn.Module):
    """The terms of ``method`` built with the resolved loss ``params``; see the module docstring.

    ``terms``: the term names in the method's order (the history's ``loss_<term>`` columns);
    ``needs_features``: whether the student (and teacher) must run ``forward_features``;
    ``warmup_epochs``: the linear warm-up length of the method's warm-up terms (None: none);
    ``first_non_finite``: the terms that turned non-finite first (what a divergence blames).
    Each term's value is checked on the first call (:mod:`ckd_lib.methods.contract`).
    """

    def __init__(self, method: Method, params: dict, context: TermContext):
        super().__init__()
        self.method = method
        self.params = dict(params)
        self.terms = method.terms
        self.needs_features = method.needs_features
        self.warmup_epochs = params.get("warmup_epochs") if method.warmup_terms() else None
        self._warmup = frozenset(method.warmup_terms())
        self.parts = nn.ModuleDict(method.build_terms(self.params, context))
        self._registered = {use.term.name: use.term for use in method.uses}
        self._checked = False
        self.first_non_finite = FirstNonFinite(self.terms)

    def forward(self, logits_student, logits_teacher, target, factor, feats_student=None,
                feats_teacher=None) -> dict[str, torch.Tensor]:
        inputs = TermInputs(logits_student, logits_teacher, target, feats_student, feats_teacher)
        out = {}
        for name, part in self.parts.items():
            value = call_term(self._registered[name], part, inputs)
            if not self._checked:  # the first call is eager, also under the CUDA-graph step
                check_value(self._registered[name], value, inputs)
            out[name] = factor * value if name in self._warmup else value
        self._checked = True
        if out:
            self.first_non_finite.update(list(out.values()))
        return out

    def param_groups(self, weight_decay: float) -> list[tuple[list, float]]:
        """``(parameters, weight_decay)`` of every term that trains parameters."""
        return [group for part in self.parts.values() for group in
                part.param_groups(weight_decay)]

    def metrics(self) -> dict[str, float]:
        """Per-epoch values the terms report (a learnable τ as ``tau``)."""
        out: dict[str, float] = {}
        for part in self.parts.values():
            out.update(part.metrics())
        return out

    def term_states(self) -> dict[str, dict]:
        """What the terms trained, to keep with the model (:func:`term_states`)."""
        return term_states(self.parts)


def term_states(parts: nn.ModuleDict) -> dict[str, dict]:
    """``{term: state_dict}`` of every term that has state (a FitNet connector, a learnable τ,
    ReviewKD's connectors), on the CPU: the ``objective`` entry of a finished run's
    ``model_last.pth`` (classification and detection), so what a method trained besides the
    student is kept once its checkpoint is dropped. Stateless terms are left out."""
    return {name: {k: v.detach().cpu() for k, v in part.state_dict().items()}
            for name, part in parts.items() if part.state_dict()}


class StudentStep(nn.Module):
    """A student and its objective as one module: what DistributedDataParallel wraps.

    Wrapping both keeps the objective's own parameters (ReviewKD connectors, a learnable τ) in
    DDP's gradient averaging, so every rank applies the same update.
    """

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x, target, logits_teacher, feats_teacher, factor):
        if self.objective.needs_features:
            logits, feats = self.model.forward_features(x)
        else:
            logits, feats = self.model(x), None
        terms = self.objective(logits, logits_teacher, target, factor, feats, feats_teacher)
        return logits, terms


def build_objective(config: RunConfig, student: nn.Module, teacher: nn.Module | None) -> Objective:
    """The objective of ``config.method`` with its resolved loss parameters."""
    return Objective(get_method(config.method), config.loss_params(),
                     TermContext("classification", student, teacher))
