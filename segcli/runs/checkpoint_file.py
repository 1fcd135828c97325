"""Checkpoints as safetensors files: tensors in the body, JSON metadata in the header.

Loading never executes code from the file. Nested training state (optimiser, scheduler,
RNG) is flattened: its tensors go into the body under `state/...` keys and the rest of
its structure into the header. Writes go to a temporary file that is renamed over the
old one, so a crash at any moment leaves the previous checkpoint intact.

The header's `segcli.format_version` says how the rest is laid out; a checkpoint without it,
or with a version this segcli does not read, is refused before anything else is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from segcli.errors import CheckpointError, shortened
from segcli.files import atomic_write
from segcli.json_files import parse_json

if TYPE_CHECKING:
    import torch

SUFFIX = ".safetensors"
# The layout of the header and body that this segcli writes and reads. Raise it when a change
# means an older reader would misread a checkpoint (docs/training.md, Checkpoints).
FORMAT_VERSION = 1
_VERSION_KEY = "segcli.format_version"
_TENSOR = "__tensor__"


def _flatten(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    import torch

    if isinstance(tree, torch.Tensor):
        key = f"state/{prefix}"
        tensors[key] = tree.detach().to("cpu").contiguous()
        return {_TENSOR: key}
    if isinstance(tree, dict):
        if not all(isinstance(k, (str, int)) for k in tree):
            raise TypeError(f"cannot store dict keys of {prefix}")
        # keys are kept with their type so optimizer state ids (ints) survive the round trip
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        items = [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(tree)]
        return {"__tuple__": items} if isinstance(tree, tuple) else items
    return tree


def _unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The nested training state back from its header structure; a KeyError, TypeError or
    ValueError when the structure is not one `_flatten` writes (a damaged header)."""
    if isinstance(tree, dict):
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if "__dict__" in tree:
            return {k: _unflatten(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(_unflatten(v, tensors) for v in tree["__tuple__"])
    if isinstance(tree, list):
        return [_unflatten(v, tensors) for v in tree]
    return tree


def save_checkpoint(
    path: Path,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> None:
    """Atomically write weights, JSON-able `meta` and optional nested `training_state`."""
    from safetensors.torch import save as safetensors_bytes

    path = Path(path)
    tensors = {f"model/{k}": v.detach().to("cpu").contiguous() for k, v in model_state.items()}
    header = {_VERSION_KEY: str(FORMAT_VERSION), "segcli.meta": json.dumps(meta)}
    if training_state is not None:
        header["segcli.state"] = json.dumps(_flatten(training_state, "", tensors))
    data = safetensors_bytes(tensors, metadata=header)
    with atomic_write(Path(path), durable=True) as stream:
        stream.write(data)


class Checkpoint:
    """A loaded checkpoint: `model_state`, `meta` and (for `last`) `training_state`."""

    def __init__(self, path: Path, model_state: dict, meta: dict, training_state: dict | None):
        self.path = path
        self.model_state = model_state
        self.meta = meta
        self.training_state = training_state


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header (and, if asked, every tensor) of a segcli checkpoint, with clear errors.

    Every reader of a checkpoint comes here, so each checks the format version. The header
    alone is read without importing torch, which `segcli visualize confusion` does not need."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist", hint="check the path or run `segcli train`"
        )
    try:
        with safe_open(str(path), framework="pt" if with_tensors else "numpy") as handle:
            header = handle.metadata() or {}
            if "segcli.meta" not in header:
                raise CheckpointError(f"{path} is a safetensors file but not a segcli checkpoint")
            _check_format_version(path, header.get(_VERSION_KEY))
            tensors = {k: handle.get_tensor(k) for k in handle.keys()} if with_tensors else {}
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable: {_first_line(exc)}",
            hint=ANOTHER_CHECKPOINT,
        ) from None
    return header, tensors


def _check_format_version(path: Path, recorded: str | None) -> None:
    """A CheckpointError unless the header records the one format version this segcli reads:
    a checkpoint of another layout would otherwise fail, or load wrongly, deep inside a
    command."""
    if recorded == str(FORMAT_VERSION):
        return
    reads = f"this segcli reads format version {FORMAT_VERSION}"
    if recorded is None:
        raise CheckpointError(
            f"checkpoint {path} records no format version (a pre-release segcli wrote it); {reads}",
            hint="train it again with this segcli, or use the segcli version that wrote it",
        )
    if recorded.isdigit() and int(recorded) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {recorded}, newer than this segcli; {reads}",
            hint="upgrade segcli (pip install --upgrade segcli) to read it",
        )
    raise CheckpointError(
        f"checkpoint {path} has format version {recorded!r}, which this segcli does not read; "
        f"{reads}",
        hint="train it again with this segcli, or use the segcli version that wrote it",
    )


def _metadata(path: Path, header: dict[str, str]) -> dict[str, Any]:
    """The header's `segcli.meta`, checked to have the shape every reader relies on, so that
    damage fails here, as one line naming the file, rather than deep inside a command."""
    meta = _parsed(path, header["segcli.meta"], "metadata")
    if not isinstance(meta, dict):
        raise _damaged(path, f"its metadata is {json_kind(meta)}, not a JSON object")
    for key, kinds in METADATA_FIELDS.items():
        if key in meta and not isinstance(meta[key], kinds):
            wanted = " or ".join(_KIND_NAMES[kind] for kind in kinds)
            raise _damaged(path, f"its metadata `{key}` is {json_kind(meta[key])}, not {wanted}")
    for record in meta.get("classes", []):
        if not (
            isinstance(record, dict)
            and isinstance(record.get("id"), int)
            and isinstance(record.get("name"), str)
            and isinstance(record.get("color"), list)
            and len(record["color"]) == 3
            and all(isinstance(value, int) for value in record["color"])
        ):
            raise _damaged(
                path,
                f"its metadata `classes` holds {json_kind(record)} that is no class "
                "record (id, name, [r, g, b])",
            )
    return meta


def _parsed(path: Path, text: str, what: str) -> Any:
    """A header entry's JSON; not JSON, or nested deep enough to exhaust a parser (a few KB
    of `[[[[...`), is a CheckpointError naming the file."""
    return parse_json(text, f"checkpoint {path}: its {what}", CheckpointError, ANOTHER_CHECKPOINT)


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is damaged: {what}", hint=ANOTHER_CHECKPOINT)


def json_kind(value: Any) -> str:
    """How a JSON value reads in a message: `a list`, `a number`, `null`."""
    if value is None:
        return "null"
    kind = next((kind for kind in _KIND_NAMES if isinstance(value, kind)), None)
    return _KIND_NAMES[kind] if kind else f"a {type(value).__name__}"


ANOTHER_CHECKPOINT = "use another checkpoint, e.g. the run's best or last"
# The metadata every reader relies on and the JSON type each must have, when present.
METADATA_FIELDS: dict[str, tuple[type, ...]] = {
    "config": (dict,),
    "classes": (list,),
    "image_channels": (int,),
    "dataset": (str,),
    "model": (dict,),
    "preprocessing": (dict,),
    "environment": (dict,),
    "epoch": (int,),
    "metrics": (dict,),
}
# bool before int: in Python a bool is an int, in JSON it is not a number
_KIND_NAMES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def is_checkpoint(path: Path) -> bool:
    """Whether a safetensors file is a segcli checkpoint (of any format version), so that its
    reader must be this module's; False for plain weights and for unreadable files."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return False
    return "segcli.meta" in header or _VERSION_KEY in header


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """Only a checkpoint's metadata (configuration, classes, metrics): no weights are read."""
    return _metadata(path, _read(path, with_tensors=False)[0])


def load_checkpoint(path: Path, *, with_training_state: bool = False) -> Checkpoint:
    """A checkpoint's weights and metadata, and (if asked) its training state, which is None
    when it has none (`best`) and a CheckpointError when it is damaged."""
    header, tensors = _read(path, with_tensors=True)
    meta = _metadata(path, header)
    state = None
    if with_training_state and "segcli.state" in header:
        try:
            state = _unflatten(_parsed(path, header["segcli.state"], "training state"), tensors)
        except (KeyError, TypeError, ValueError) as exc:
            raise _damaged(path, f"its training state is malformed ({_first_line(exc)})") from None
    model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    return Checkpoint(path, model_state, meta, state)


def load_model_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: object
) -> None:
    """Load a checkpoint's weights into `model`, all of them, or say on one line what differs."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [
        f"{key} {tuple(state[key].shape)} in the file, {tuple(own[key].shape)} in the model"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    problems = [
        f"{what}: {shortened(keys)}"
        for what, keys in (
            (f"{len(missing)} keys missing from the file", missing),
            (f"{len(unexpected)} keys the model does not have", unexpected),
            (f"{len(shapes)} shapes differ", shapes),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}",
            hint="was it trained with another model, depth, width or number of classes?",
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # what names and shapes cannot show (a plugin's own checks)
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: {detail}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
