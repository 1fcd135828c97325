"""segcli's built-in dataset preparers, registered through the `segcli` entry point.

This module only registers lazy "module:function" targets, so listing datasets never
imports numpy, Pillow or the preparers themselves. Third-party dataset plugins can copy
this layout: one module per preparer, each a plain `prepare(raw, **options) -> DatasetPlan`.
"""

import segcli


@segcli.hookimpl
def register_datasets(register):
    register(
        "labpics",
        "segcli_datasets.labpics:prepare",
        "LabPics V1 chemistry photos: Simple/{Train,Test} with 1_Vessel and 16_Filled masks "
        "(3 classes)",
    )
    register(
        "isbi2012",
        "segcli_datasets.isbi2012:prepare",
        "ISBI 2012 EM membranes: multi-page TIFF volumes or train/image + train/label PNGs "
        "(membrane 0, cell 1)",
    )
    register(
        "idd-lite",
        "segcli_datasets.idd_lite:prepare",
        "IDD-Lite driving scenes: leftImg8bit/gtFine, 7 level-1 classes, 255 void kept as ignore",
    )
    register(
        "tgs-salt",
        "segcli_datasets.tgs_salt:prepare",
        "TGS Salt (Kaggle): 101x101 seismic tiles, 8/16-bit PNG or train.csv RLE masks, depths "
        "as metadata",
    )
    register(
        "nyuv2",
        "segcli_datasets.nyuv2:prepare",
        "NYUv2 in the VOC-like layout: JPEGImages, Segmentation_40, ImageSet lists (41 classes)",
    )
    register(
        "voc",
        "segcli_datasets.voc:prepare",
        "Pascal VOC layout and CVAT 'Segmentation mask 1.1': JPEGImages, SegmentationClass "
        "palette or colour masks, labelmap.txt, ImageSets lists (255 borders ignored)",
    )
    register(
        "cityscapes",
        "segcli_datasets.cityscapes:prepare",
        "Cityscapes fine annotations: leftImg8bit + gtFine labelIds -> the 19 training classes "
        "(255 ignore), or all 34 ids",
    )
    register(
        "coco",
        "segcli_datasets.coco:prepare",
        "COCO instance annotations (Roboflow, CVAT, Label Studio, COCO): polygons and RLE drawn "
        "as masks",
    )
    register(
        "labelme",
        "segcli_datasets.labelme:prepare",
        "labelme JSON files (polygons, rectangles, circles, lines, points, masks) drawn as masks",
    )
    register(
        "folder",
        "segcli_datasets.folder:prepare",
        "Your own images and masks paired by file name; index, binary, palette, RGB, 16-bit "
        "and JPEG masks",
    )
