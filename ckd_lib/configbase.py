"""What every run config shares: typed construction, YAML, hashing, run ids, validation.

Why one base for classification (:class:`ckd_lib.config.RunConfig`) and detection
(:class:`ckd_lib.detection.config.DetectionConfig`): a config is the unit of bookkeeping. Its
hash over the fields that change what is computed names the run's record and checkpoint, so it
must be computed the same careful way everywhere: every value converted to its declared type
first (``lr: 1`` and ``lr: 1.0`` are one run), the method's loss parameters resolved through the
registry (defaults made explicit, ``gamma: 2`` and ``2.0`` equal), execution options left out.
And a config must be refused, naming the field and the accepted form, before any data loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, ClassVar

from ckd_lib.errors import ConfigError
from ckd_lib.fields import coerce_fields, coerce_value, plain_dict
from ckd_lib.yamlio import dump_yaml, read_yaml


class RunConfigBase:
    """Mixin for a run-config dataclass; see the module docstring.

    Subclasses set ``TASK`` (which methods apply), ``NOT_HASHED`` (execution options),
    ``FIELD_FORMS`` (accepted forms, in words, of fields whose type alone says too little) and
    implement :meth:`run_id` and :meth:`_validate`.
    """

    TASK: ClassVar[str] = "classification"
    NOT_HASHED: ClassVar[tuple[str, ...]] = ()
    FIELD_FORMS: ClassVar[dict[str, str]] = {}

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict):
        """A config from plain data: unknown fields and ill-typed values are refused."""
        return cls(**coerce_fields(cls, data, "config field(s)", ConfigError, cls.FIELD_FORMS))

    @classmethod
    def from_yaml(cls, path: str | Path) -> list:
        """The configs of a YAML file holding one mapping of fields, or a list of them."""
        data = read_yaml(path, "config file")
        items = data if isinstance(data, list) else [data]
        configs = []
        for index, item in enumerate(items):
            where = f"{path}" if len(items) == 1 else f"{path}, item {index + 1}"
            if not isinstance(item, dict):
                raise ConfigError(f"{where}: expected a mapping of config fields, got "
                                  f"{type(item).__name__} {item!r}")
            try:
                configs.append(cls.from_dict(item))
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None
        return configs

    def to_dict(self) -> dict:
        return plain_dict(self)

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def with_overrides(self, overrides: dict):
        """A new config with ``overrides`` applied (``loss`` entries merged into ``loss``)."""
        data = self.to_dict()
        overrides = dict(overrides)
        loss = overrides.pop("loss", None)
        if loss is not None:
            if not isinstance(loss, dict):
                raise ConfigError(f"loss={loss!r} is not accepted; loss must be a mapping")
            data["loss"] = {**(data.get("loss") or {}), **loss}
        data.update(overrides)
        return type(self).from_dict(data)

    # -- the method ---------------------------------------------------------------------------
    @property
    def method_spec(self):
        from ckd_lib.methods import get_method

        return get_method(self.method, self.TASK)

    def loss_params(self) -> dict:
        """The method's defaults updated with this config's ``loss``, each value converted to
        its declared type and checked."""
        return self.method_spec.resolve(self.loss)

    # -- identity ---------------------------------------------------------------------------
    def hash_content(self) -> dict:
        """What the hash covers: every field but the execution options, loss resolved."""
        data = {k: v for k, v in self.to_dict().items() if k not in self.NOT_HASHED}
        data["loss"] = self.loss_params()
        if not data.get("rehearsal"):  # real runs keep the ids they had before the field
            data.pop("rehearsal", None)
        return data

    def config_hash(self) -> str:
        canon = json.dumps(self.hash_content(), sort_keys=True, default=str)
        return hashlib.sha256(canon.encode()).hexdigest()

    def run_id(self) -> str:
        raise NotImplementedError

    # -- validation -------------------------------------------------------------------------
    def check_types(self) -> None:
        """Every field converted to its declared type again (a field may have been assigned
        after construction); refuses what does not fit."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce_value(f.name, getattr(self, f.name), hints[f.name],
                                               ConfigError, self.FIELD_FORMS.get(f.name)))

    def validate(self):
        """Raise ConfigError on any value no run can use; cheap: loads no data, builds no model.
        Returns the config."""
        self.check_types()
        self.loss_params()  # method known, loss parameters accepted and in range
        self._validate()
        return self

    def _validate(self) -> None:
        raise NotImplementedError


def show(value: Any) -> str:
    """A value as a message shows it: numbers as the user wrote them (-1, 0.001), else repr."""
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:g}" if abs(value) >= 1e-4 or value == 0 else repr(value)
    return repr(value)


def check_choice(name: str, value: Any, accepted) -> None:
    if value not in accepted:
        raise ConfigError(f"{name}={value!r} is not accepted; choose one of {list(accepted)}")
