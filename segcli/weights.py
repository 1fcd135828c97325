"""Loading pretrained weights, safely and with errors that say what is wrong.

A model option like ``backbone_weights`` takes a local file or the name of weights the
model's plugin knows the address of (``imagenet``, ``coco``): `resolve_weights` turns
either into a `WeightsFile`. Named weights live in torch hub's cache
(``torch.hub.get_dir()/checkpoints``, under ``$TORCH_HOME``): a file already there is used
as it is, without touching the network; one that is not is downloaded and its SHA-256
checked against the hash in its published file name; offline, the error names the file,
the folder to put it in and the address to fetch it from. `record_pretrained` keeps on the
model which file it started from (name, file, SHA-256), for the run's records;
`load_backbone` does all three for a model factory's ``backbone_weights`` option.

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

import hashlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn
from torch.hub import HASH_REGEX

from segcli.errors import (
    CheckpointError,
    ConfigError,
    SegcliError,
    UsageError,
    WeightsUnavailable,
)
from segcli.files import write_error
from segcli.runs.checkpoint_file import is_checkpoint, load_checkpoint

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".tar")
SAFETENSORS_SUFFIX = ".safetensors"
_SHOWN = 4  # keys listed in an error message
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")

logger = logging.getLogger(__name__)


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

    if is_checkpoint(path):  # read as every checkpoint is: its format version checked first
        return load_checkpoint(path).model_state
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"weights file {path} is not a readable safetensors file: {exc}"
        ) from None


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


# --- weights by name: torch hub's cache, the download, and the run's record -----------------

PRETRAINED_ATTRIBUTE = "pretrained_weights"  # model attribute: option -> WeightsFile.record()


@dataclass(frozen=True)
class WeightsFile:
    """A weights file a model starts from: a local file, or published weights by name."""

    path: Path
    name: str | None = None  # the published name (``imagenet``...), None for a local file
    url: str | None = None

    @cached_property
    def sha256(self) -> str:
        with self.path.open("rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()

    def record(self) -> dict[str, str | None]:
        """What a run records to be reproducible: which file, by content."""
        return {"name": self.name, "file": self.path.name, "url": self.url, "sha256": self.sha256}


def weights_cache_dir() -> Path:
    """Where published weights are looked for and downloaded to: torch hub's checkpoints
    folder (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def published_file_name(url: str) -> str:
    """The file name torch hub caches `url` under."""
    return PurePosixPath(urlparse(url).path).name


def resolve_weights(value: str, published: Mapping[str, str], *, target: str) -> WeightsFile:
    """`value` as a weights file: a name from `published` (name -> URL) fetched through the
    cache, else a local path. A value shaped like a name (no folder, no suffix) that is
    neither is a ConfigError listing the names `target` (a model name) knows."""
    if value in published:
        return fetch_published(published[value], name=value, target=target)
    path = Path(value).expanduser()
    shaped_like_a_name = "/" not in value and os.sep not in value and not path.suffix
    if shaped_like_a_name and not path.exists():
        names = ", ".join(sorted(published))
        raise ConfigError(
            f"{target} has no published weights named {value!r}"
            + (f"; valid names: {names}" if names else " (it knows none by name)"),
            hint="or give the path of a local .pt, .pth or .safetensors file",
        )
    return WeightsFile(path)


def fetch_published(url: str, *, name: str, target: str) -> WeightsFile:
    """The cached file of `url`, downloaded first (SHA-256 checked) when not cached yet."""
    folder = weights_cache_dir()
    file_name = published_file_name(url)
    weights = WeightsFile(folder / file_name, name, url)
    expected = HASH_REGEX.search(file_name)
    if weights.path.is_file():
        _warn_if_not_published(weights, expected.group(1) if expected else None)
        return weights
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(exc, folder) from None
    logger.info("downloading %s weights of %s from %s to %s", name, target, url, folder)
    try:
        torch.hub.download_url_to_file(
            url,
            str(weights.path),
            expected.group(1) if expected else None,
            progress=sys.stderr.isatty(),
        )
    except (URLError, HTTPException, ConnectionError, TimeoutError) as exc:
        raise WeightsUnavailable(
            f"{name!r} weights of {target} are not in the cache and cannot be downloaded from "
            f"{url} ({_reason(exc)})",
            hint=f"on a machine with internet access fetch {file_name} from that address and "
            f"put it in {folder}, or set TORCH_HOME to a folder whose hub/checkpoints holds it",
        ) from None
    except RuntimeError as exc:  # torch hub's hash check; the partial file is already gone
        raise CheckpointError(
            f"the download of {file_name} from {url} does not have the published content "
            f"({exc}); nothing was saved",
            hint="download it again; if it keeps failing, the transfer is being altered",
        ) from None
    except OSError as exc:
        raise _write_error(exc, folder) from None
    return weights


def _warn_if_not_published(weights: WeightsFile, hash_prefix: str | None) -> None:
    """torch hub trusts a cached file as it is; so do we, but say when it is not the
    published one (a hand-placed stand-in, another release under the same name). The
    digest is kept on `weights` for the run's record."""
    if hash_prefix and not weights.sha256.startswith(hash_prefix):
        logger.warning(
            "%s is not the published file (its SHA-256 does not start with %s); using it as it is",
            weights.path,
            hash_prefix,
        )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split()) or type(exc).__name__


def _write_error(exc: OSError, folder: Path) -> SegcliError:
    error = write_error(folder, exc)
    error.hint = "free space there, or set TORCH_HOME to a folder on a disk you can write to"
    return error


def record_pretrained(model: nn.Module, option: str, weights: WeightsFile) -> None:
    """Remember on `model` that its `option` (e.g. ``backbone_weights``) came from `weights`."""
    records = dict(getattr(model, PRETRAINED_ATTRIBUTE, None) or {})
    records[option] = weights.record()
    setattr(model, PRETRAINED_ATTRIBUTE, records)


def load_backbone(
    model: nn.Module,
    backbone: nn.Module,
    backbone_weights: str,
    published: Mapping[str, str],
    *,
    model_name: str,
    target: str,
    ignore_prefixes: Iterable[str] = (),
    whole_model_prefix: str | None = None,
) -> WeightsFile:
    """A model's ``backbone_weights`` option in one call: the value resolved (a name of
    `published`, which `model_name` knows, or a local file), its tensors loaded into
    `backbone`, a part of `model` (`target` names it in errors; file keys under
    `ignore_prefixes` are left out), and the file recorded on `model`. A file with a key
    under `whole_model_prefix` is the whole model's, loaded into `model` instead."""
    weights = resolve_weights(backbone_weights, published, target=model_name)
    state = read_state_dict(weights.path)
    part, head_prefixes = backbone, ()
    if whole_model_prefix and any(key.startswith(whole_model_prefix) for key in state):
        # a whole model's file (torchvision's COCO weights: ``backbone.*``), loaded as
        # ``model.weights`` would be: the head is kept fresh when the class count differs
        part, target = model, model_name
        head_prefixes = getattr(model, "head_prefixes", ())
        ignore_prefixes = getattr(model, "ignore_prefixes", ())
    load_matching(
        part,
        state,
        source=str(weights.path),
        target=target,
        head_prefixes=head_prefixes,
        ignore_prefixes=ignore_prefixes,
    )
    record_pretrained(model, "backbone_weights", weights)
    return weights


def pretrained_record(model: nn.Module) -> dict[str, dict[str, str | None]]:
    """Which files `model` started from, by option (empty when none): for a run's records."""
    return dict(getattr(model, PRETRAINED_ATTRIBUTE, None) or {})


# --- the published files model plugins know by name: `segcli weights fetch|list` ------------

PUBLISHED_ATTRIBUTE = "published_weights"  # model factory attribute: name -> URL


@dataclass(frozen=True)
class PublishedWeights:
    """A published weights file a model plugin knows by name (its factory's
    ``published_weights``: ``imagenet``, ``coco``, or a backbone's name such as ``resnet18``
    where the backbone is an option)."""

    model: str
    name: str
    url: str

    @property
    def path(self) -> Path:
        """Where torch hub caches it (the file need not be there)."""
        return weights_cache_dir() / published_file_name(self.url)

    @property
    def cached(self) -> bool:
        return self.path.is_file()

    def fetch(self) -> WeightsFile:
        """The cached file, downloaded first when not there (SHA-256 checked)."""
        return fetch_published(self.url, name=self.name, target=self.model)


def published_weights(model: str | None = None) -> list[PublishedWeights]:
    """The files `model` publishes (none for a model no loaded plugin registers), or every
    loaded model's. A model whose plugin fails to load is left out: `segcli plugins` says
    why."""
    from segcli.plugins import get_plugins

    models = get_plugins().models
    names = models.names() if model is None else [model] if model in models else []
    known = []
    for model_name in names:
        try:
            factory = models.get(model_name)
        except SegcliError:
            continue
        for name, url in (getattr(factory, PUBLISHED_ATTRIBUTE, None) or {}).items():
            known.append(PublishedWeights(model_name, name, url))
    return known


def find_published(spec: str, known: Iterable[PublishedWeights] | None = None) -> PublishedWeights:
    """`MODEL:NAME` (``deeplabv3-resnet50:coco``), or a bare NAME (``resnet18``) that names
    one file; a UsageError listing the valid names otherwise."""
    known = list(published_weights() if known is None else known)
    model, _, name = spec.rpartition(":")
    matches = [w for w in known if w.name == name and model in ("", w.model)]
    if len({w.url for w in matches}) == 1:
        return matches[0]
    if matches:  # a bare name several models use for different files
        choices = ", ".join(f"{w.model}:{w.name}" for w in matches)
        raise UsageError(f"{spec!r} names {len(matches)} files", hint=f"choose one: {choices}")
    by_name: dict[str, set[str]] = {}
    for weights in known:
        by_name.setdefault(weights.name, set()).add(weights.url)
    unique = ", ".join(sorted(name for name, urls in by_name.items() if len(urls) == 1))
    raise UsageError(
        f"no published weights named {spec!r}",
        hint=f"valid names: {unique or 'none'} (one file each), or MODEL:NAME as "
        "`segcli weights list` shows them",
    )
