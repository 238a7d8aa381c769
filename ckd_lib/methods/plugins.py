"""User plugins: a Python file (or importable module) outside ``ckd_lib`` that registers methods.

Why an environment variable besides the explicit calls: a study runs its work in other
processes (papermill kernels, one worker per GPU, torchrun ranks, SLURM jobs). Every plugin
loaded here is added to ``CKD_PLUGINS`` (``os.pathsep``-separated, like ``PATH``), so those
processes load the same plugins before they look a method up, without each launcher having to
forward a flag. Records list the plugins with the sha256 of their files
(:func:`loaded_plugins`), so a result says which code defined its method.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from ckd_lib.errors import InputError

ENV_VAR = "CKD_PLUGINS"
_LOADED: dict[str, dict] = {}
_LOADING_ENV = False


def _key(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if spec.endswith(".py") else spec


def _load_file(path: Path) -> object:
    name = "ckd_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _registering_as(source: str, load):
    """Run ``load()`` with the registry attributing what it registers to ``source``."""
    from ckd_lib.methods.registry import _SOURCE

    _SOURCE.append(source)
    try:
        return load()
    finally:
        _SOURCE.pop()


def load_plugin(spec: str) -> dict:
    """Load one plugin: a ``.py`` file path or a module name. Loading it again does nothing."""
    spec = str(spec).strip()
    key = _key(spec)
    if key in _LOADED:
        return _LOADED[key]
    path = Path(key) if spec.endswith(".py") else None
    try:
        if path is not None:
            if not path.is_file():
                raise InputError(f"plugin {spec!r}: no such file")
            module = _registering_as(str(path), lambda: _load_file(path))
        else:
            module = _registering_as(spec, lambda: importlib.import_module(spec))
            path = Path(module.__file__).resolve() if getattr(module, "__file__", None) else None
    except InputError:
        raise
    except ModuleNotFoundError as error:
        if error.name and spec.startswith(error.name):
            raise InputError(f"plugin {spec!r}: no such file or module (a file must end in .py)"
                             ) from None
        raise InputError(f"plugin {spec!r} failed to load: {_where(error, path)}") from error
    except SystemExit as error:  # never "exit 0 having done nothing"
        raise InputError(f"plugin {spec!r} called sys.exit({error.code!r}) while loading"
                         f"{_place(error, path)}: a plugin only registers terms and methods"
                         ) from None
    except Exception as error:
        raise InputError(f"plugin {spec!r} failed to load: {_where(error, path)}") from error
    info = {"plugin": spec, "path": str(path) if path else None,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path else None}
    _LOADED[key] = info
    _export(key)
    return info


def _place(error: BaseException, path: Path | None) -> str:
    """`` (file.py, line 12)``: the innermost frame in the plugin's own file (else the innermost
    frame), where the error was raised, for a one-line error."""
    if isinstance(error, SyntaxError):
        return f" ({Path(error.filename or '?').name}, line {error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if path is not None and Path(f.filename) == path]
    frame = (own or frames or [None])[-1]
    return f" ({Path(frame.filename).name}, line {frame.lineno})" if frame else ""


def _where(error: BaseException, path: Path | None = None) -> str:
    """``ValueError: message (file.py, line 12)``, for a one-line error."""
    return f"{type(error).__name__}: {error}{_place(error, path)}"


def _export(key: str) -> None:
    current = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    if key not in current:
        os.environ[ENV_VAR] = os.pathsep.join(current + [key])


def load_plugins(specs) -> list[dict]:
    """Load every plugin of ``specs`` (a list, or one string) in order."""
    if isinstance(specs, str):
        specs = [specs]
    return [load_plugin(s) for s in specs or ()]


def load_env_plugins() -> None:
    """Load the plugins named in ``CKD_PLUGINS`` (once each)."""
    global _LOADING_ENV
    if _LOADING_ENV:
        return
    _LOADING_ENV = True
    try:
        for spec in os.environ.get(ENV_VAR, "").split(os.pathsep):
            if spec and _key(spec) not in _LOADED:
                load_plugin(spec)
    finally:
        _LOADING_ENV = False


def loaded_plugins() -> list[dict]:
    """``[{"plugin", "path", "sha256"}]`` of every plugin loaded in this process."""
    load_env_plugins()
    return list(_LOADED.values())
