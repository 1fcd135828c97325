"""Loading pretrained weights from local files, safely and with errors that say what is wrong.

Files are read without executing code: ``.safetensors`` through safetensors, ``.pt``/``.pth``/
``.bin``/``.tar`` through ``torch.load(weights_only=True)``. A state dict may be wrapped the
usual ways (``{"state_dict": ...}``, ``{"model": ...}``, a segcli checkpoint's ``model/``
keys, DataParallel's ``module.`` prefix); all are unwrapped.

Matching a file into a module (`load_matching`):

- a common key prefix of the file (``features.`` of a torchvision VGG, ``backbone.``...) is
  found automatically; file keys outside it belong to other parts of the source model and
  are left out;
- keys under the module's ``head_prefixes`` may be missing or shaped differently (another
  class count): those layers keep their fresh initialisation;
- keys under ``ignore_prefixes`` (e.g. an ImageNet classifier ``fc.``) are left out;
- anything else that is missing, unexpected or shaped differently is an error listing the
  first few keys, because it means the file is for another architecture.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from segcli.errors import CheckpointError

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".tar")
SAFETENSORS_SUFFIX = ".safetensors"
_SHOWN = 4  # keys listed in an error message
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


@dataclass
class LoadReport:
    """What happened to each key when weights were loaded."""

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"loaded {len(self.loaded)} tensors from {self.source}"
        if self.reinitialised:
            text += f"; {len(self.reinitialised)} head tensors kept fresh (class count differs)"
        if self.left_out:
            text += f"; {len(self.left_out)} tensors of the file not used"
        return text


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, by name, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"weights file {path} does not exist",
            hint="give the path of a local .pt, .pth or .safetensors file",
        )
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        state = _read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        state = _read_torch(path)
    else:
        raise CheckpointError(
            f"weights file {path} has an unknown suffix {path.suffix!r}",
            hint=f"use one of {', '.join((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))}",
        )
    if not state:
        raise CheckpointError(f"weights file {path} contains no tensors")
    return _strip_common(state, "module.")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"weights file {path} is not a readable safetensors file: {exc}"
        ) from None
    if any(key.startswith("model/") for key in state):  # a segcli checkpoint
        state = {key[len("model/") :]: v for key, v in state.items() if key.startswith("model/")}
    return state


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"weights file {path} holds Python objects besides tensors, which segcli does not "
            f"unpickle ({str(exc).splitlines()[0][:120]})",
            hint="re-save it with torch.save(model.state_dict(), path)",
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"weights file {path} is corrupt or not a PyTorch file: {exc}"
        ) from None
    while isinstance(data, Mapping) and not _is_state(data):
        inner = next((data[k] for k in _WRAPPER_KEYS if isinstance(data.get(k), Mapping)), None)
        if inner is None:
            break
        data = inner
    if isinstance(data, nn.Module):
        data = data.state_dict()
    if not isinstance(data, Mapping) or not _is_state(data):
        raise CheckpointError(
            f"weights file {path} is not a state dict (found {type(data).__name__})",
            hint="save weights with torch.save(model.state_dict(), path)",
        )
    return {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def _is_state(data: Mapping) -> bool:
    return bool(data) and all(isinstance(v, torch.Tensor) for v in data.values())


def _strip_common(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if all(key.startswith(prefix) for key in state):
        return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_matching(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    target: str,
    head_prefixes: Iterable[str] = (),
    ignore_prefixes: Iterable[str] = (),
) -> LoadReport:
    """Copy the tensors of `state` that belong to `module` into it (see the module docstring)."""
    head_prefixes, ignore_prefixes = tuple(head_prefixes), tuple(ignore_prefixes)
    own = module.state_dict()
    prefix = _best_prefix(state, own)
    report = LoadReport(source)
    chosen: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    unexpected: list[str] = []
    for file_key, tensor in state.items():
        if not file_key.startswith(prefix):
            report.left_out.append(file_key)
            continue
        key = file_key[len(prefix) :]
        if key not in own:
            if key.startswith(ignore_prefixes) or key.startswith(head_prefixes):
                report.left_out.append(file_key)
            else:
                unexpected.append(file_key)
        elif tuple(own[key].shape) == tuple(tensor.shape):
            chosen[key] = tensor
        elif key.startswith(head_prefixes):
            report.reinitialised.append(key)
        else:
            mismatched.append(
                f"{key} {tuple(tensor.shape)} in the file, {tuple(own[key].shape)} in the model"
            )
    missing = [
        key
        for key in own
        if key not in chosen
        and key not in report.reinitialised
        and not key.startswith(head_prefixes)
        and not key.endswith("num_batches_tracked")
    ]
    report.reinitialised += [
        k
        for k in own
        if k.startswith(head_prefixes) and k not in chosen and k not in report.reinitialised
    ]
    if not chosen:
        raise CheckpointError(
            f"none of the {len(state)} tensors in {source} fit {target}: the file is for another "
            f"architecture (its keys: {_few(state)}; expected keys like {_few(own)})",
            hint="check that the file matches the model name and options",
        )
    for what, keys in (
        ("shapes differ", mismatched),
        ("keys missing from the file", missing),
        ("keys the model does not have", unexpected),
    ):
        if keys:
            raise CheckpointError(
                f"{source} does not fit {target}: {len(keys)} {what}, first: {_few(keys)}",
                hint="is the file for another architecture, depth or backbone?",
            )
    module.load_state_dict(chosen, strict=False)
    report.loaded = sorted(chosen)
    return report


def _best_prefix(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> str:
    """The file-key prefix whose removal makes the most keys match the module's."""
    candidates = {""}
    for key in state:
        parts = key.split(".")
        candidates.update(".".join(parts[:i]) + "." for i in range(1, len(parts)))
    scored = [
        (sum(1 for k in state if k.startswith(p) and k[len(p) :] in own), -len(p), p)
        for p in candidates
    ]
    return max(scored)[2]


def _few(keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_weights_into(model: nn.Module, path: str | Path) -> LoadReport:
    """`model.weights=PATH`: load a whole model's weights, keeping a fresh head when the
    class count differs (layers under the model's `head_prefixes` attribute)."""
    return load_matching(
        model,
        read_state_dict(path),
        source=str(path),
        target=type(model).__name__,
        head_prefixes=getattr(model, "head_prefixes", ()),
        ignore_prefixes=getattr(model, "ignore_prefixes", ()),
    )


def save_state_dict(module: nn.Module, path: str | Path) -> None:
    """Write a module's state dict as safetensors (used by tests and the contract suite)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))
