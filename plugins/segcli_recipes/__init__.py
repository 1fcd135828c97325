"""Built-in recipes: named, complete training configurations.

Each reproduces one reference workload (docs/recipes.md lists each one's source settings
and where segcli differs on purpose). Recipes are plain dicts: nothing is imported.
"""

import segcli

SHAPES_UNET = {
    "dataset": {"name": "shapes"},
    "model": {"name": "unet", "depth": 3, "base_width": 16},
    "loss": {"name": "ce"},
    "metrics": ["confusion"],
    # one loader worker: on a 2-core machine a second one only competes with the model
    "train": {
        "epochs": 15,
        "batch_size": 16,
        "lr": 3e-3,
        "optimizer": {"name": "adamw", "weight_decay": 1e-4},
        "scheduler": {"name": "cosine"},
        "workers": 1,
    },
    # trained at half resolution (predict resizes back): ~2 min on 2 CPU cores
    "input": {"size": [64, 64]},
    "augment": {"hflip": {"p": 0.5}, "vflip": {"p": 0.5}},
}

LABPICS_DEEPLABV3 = {
    "dataset": {"name": "labpics"},
    "model": {"name": "deeplabv3-resnet50"},
    "loss": {"name": "ce"},
    "metrics": ["confusion"],
    "train": {"epochs": 30, "batch_size": 3, "lr": 1e-5, "optimizer": {"name": "adam"}},
    "input": {"size": [800, 800]},
    "augment": {"hflip": {"p": 0.5}},
}

ISBI_UNET = {
    "dataset": {"name": "isbi2012"},
    "model": {
        "name": "unet",
        "depth": 4,
        "base_width": 64,
        "max_width": 512,
        "batch_norm": True,
        "bilinear": True,
    },
    "loss": {"name": "bce"},
    "metrics": ["confusion", "binary"],
    "train": {
        "epochs": 40,
        "batch_size": 1,
        "lr": 1e-5,
        "optimizer": {"name": "rmsprop", "weight_decay": 1e-8, "momentum": 0.9},
    },
    "input": {"size": [512, 512], "mean": [0.5], "std": [0.5]},
    "augment": {"hflip": {"p": 0.5}, "vflip": {"p": 0.5}},
}

IDD_LITE_ERFNET = {
    "dataset": {"name": "idd-lite"},
    "model": {"name": "erfnet"},
    "loss": {"name": "ce"},
    "metrics": ["confusion"],
    "train": {
        "epochs": 100,
        "batch_size": 2,
        "lr": 5e-4,
        "optimizer": {"name": "adam", "weight_decay": 1e-4},
    },
    "input": {"size": [160, 320]},
    "augment": {"hflip": {"p": 0.5}},
}

TGS_UNET = {
    "dataset": {"name": "tgs-salt"},
    "model": {"name": "unet-valid", "depth": 2, "base_width": 16, "batch_norm": False},
    "loss": {"name": "bce"},
    "metrics": ["confusion", "binary", "tgs"],
    "train": {
        "epochs": 40,
        "batch_size": 64,
        "lr": 1e-3,
        "optimizer": {"name": "adam"},
        "monitor": "tgs/score",
    },
    "input": {"size": [128, 128], "mean": [0.0], "std": [1.0]},
    "augment": {},  # the source trains without augmentation
}

NYUV2_FCN8S = {
    "dataset": {"name": "nyuv2"},
    "model": {"name": "fcn8s-vgg", "backbone": "vgg19"},
    "loss": {"name": "ce"},
    "metrics": ["confusion"],
    "train": {
        "epochs": 200,
        "batch_size": 4,
        "lr": 3e-4,
        "optimizer": {"name": "adam", "weight_decay": 1e-4},
    },
    "input": {"size": [320, 480]},
    "augment": {"hflip": {"p": 0.5}},
}

RECIPES = [
    (
        "shapes-unet",
        SHAPES_UNET,
        "Small U-Net on the synthetic shapes dataset: the quick start, ~2 min on 2 CPU cores",
    ),
    (
        "labpics-deeplabv3",
        LABPICS_DEEPLABV3,
        "DeepLabV3-ResNet50 on LabPics vessels/filled (3 classes), Adam 1e-5, 800x800; "
        "COCO weights: --set model.backbone_weights=coco",
    ),
    (
        "isbi-unet",
        ISBI_UNET,
        "U-Net 64..512, BN, bilinear on ISBI 2012 EM membranes (grey 512x512), BCE, "
        "RMSprop 1e-5, batch 1, 40 epochs",
    ),
    (
        "idd-lite-erfnet",
        IDD_LITE_ERFNET,
        "ERFNet on IDD-Lite (7 classes + void), 160x320, Adam 5e-4 wd 1e-4, batch 2, 100 epochs",
    ),
    (
        "tgs-unet",
        TGS_UNET,
        "Valid-convolution U-Net on TGS salt (101->128 px), BCE, Adam 1e-3, batch 64, 40 epochs; "
        "keeps the best TGS score",
    ),
    (
        "nyuv2-fcn8s",
        NYUV2_FCN8S,
        "FCN-8s on VGG-19 for NYUv2 (41 classes), 320x480, Adam 3e-4 wd 1e-4, up to 200 epochs; "
        "ImageNet VGG: --set model.backbone_weights=imagenet",
    ),
]


@segcli.hookimpl
def register_recipes(register):
    for name, recipe, description in RECIPES:
        register(name, recipe, description)
