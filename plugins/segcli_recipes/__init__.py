"""Built-in recipes: named, complete training configurations."""

import segcli

SHAPES_UNET = {
    "dataset": {"name": "shapes"},
    "model": {"name": "unet", "depth": 3, "base_width": 16},
    "loss": {"name": "ce"},
    "metrics": ["confusion"],
    "train": {"epochs": 12, "batch_size": 16, "lr": 3e-3, "optimizer": "adamw",
              "scheduler": "cosine", "weight_decay": 1e-4},
    "input": {"size": [128, 128]},
    "augment": {"hflip": 0.5, "vflip": 0.5},
}


@segcli.hookimpl
def register_recipes(register):
    register(
        "shapes-unet",
        SHAPES_UNET,
        "Small U-Net on the synthetic shapes dataset: the quick start, ~2 min on 2 CPU cores",
    )
