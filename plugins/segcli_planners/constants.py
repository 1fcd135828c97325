"""The `default` planner's numbers, each next to the measurement or reasoning that chose it
(docs/planning.md states the rule each one belongs to)."""

# Share of the budget the optimizer steps get: validation is kept to ~10 %, start-up, setup
# and checkpoints take the rest.
TRAINING_SHARE = 0.85
VALIDATION_SHARE = 0.10
# Enough optimizer steps for AdamW with a warm-up and a decay to converge on small data. A
# floor for tiny sets, where it buys steps with smaller crops: ISBI (25 images) at 8 minutes
# on 2 CPU cores reached 0.779 mIoU with 224 px crops (1244 steps), 0.778 with 160 px (1708)
# and 0.785-0.787 with 256 px (784-844), 0.776 with 320 px (680 steps; membrane Dice 0.789
# against 0.796 at 256 px); DRIVE (20) 0.819 vessel Dice at 320 px (701).
TARGET_STEPS = 750
# Training images larger than this multiple of the input are resized once, when read: the
# largest zoom planned is 1.25x. With torchvision's affine, zooming a 640 px image took 22 ms a
# sample on one core, at 168 px 1.5 ms: car damage at 112 px was loader-bound at ~39 img/s.
# The zoom is now an OpenCV warp (0.04 ms at 216 px), but the resize to the input size still
# grows with the pixels read.
LOAD_SCALE = 1.5
# Without zoom, training and validation images this many times the input's pixels or more are
# resized to the input once, when read, instead of in every sample. Measured on the 2-core Xeon
# (benchmarks/loader_speed.py, 128x176, batch 8, one loader process): 1,000 street photographs
# of ~550x690 (33x the input's pixels) trained at 33.6 img/s, 40.3 resized once (bare loop
# 42.5-43.8); IDD-Lite's 320x227 (4.5x) at 36.8 and 36.3: no loss where little is gained.
RESIZE_ONCE_AREA = 2.0
# A downscaled input is rounded up to the next level's size divisor (one level deeper) when
# that costs at most this many times the pixels of rounding to its own (docs/planning.md)
DEEPER_ROUNDING = 1.2
# A class below this share of the labelled pixels is rare: the loss gets a Dice term.
RARE_PIXEL_SHARE = 0.10
# Passes over the training data a plan must afford: 30 for 1,000 images, more for fewer (each
# pass teaches less), fewer for more. Measured on 2 CPU cores: street scenes (367 images) at
# 8 epochs of native crops lost to 109 epochs at 64 px by 0.20 mIoU; TGS (3,400 images) at
# 14 epochs of its native 101 px reached 0.78 salt IoU.
EPOCHS_AT_1000_IMAGES = 30
MIN_EPOCHS, MAX_EPOCHS = 10, 300
# Every pixel is kept when the native size costs at most this much more than the target
# passes afford: a little fewer passes lose less than a downscale does (TGS: 101 -> 96 px
# blurs the salt edges its IoU is scored on at 101 px).
NATIVE_SLACK = 1.3
# The smallest side a plan downscales to: the naive 64 px run is the floor to beat.
MIN_SIDE = 64
# Structures still thicker than this after the affordable downscale buy passes, not pixels:
# the plan downscales further, to this thickness, until the run shows the model ENOUGH_SAMPLES
# training images. Measured on 2 CPU cores, 10 minutes: car-damage photos (394 at 640 px,
# damage 92 px thick) at 144 px (20 px thick, 40 passes: 16k samples) reached 0.151 mIoU, at
# 64 px (9 px thick, 105 passes: 42k samples) 0.169; IDD-Lite at 10.5 px thick (36k samples)
# beat 64 px (6.6 px) by 0.117; TGS at 96 px (58k samples) beat 64 px by 0.106.
COMFORTABLE_THICKNESS = 10.0
ENOUGH_SAMPLES = 40_000
# A downscale by this much or less saves under half the time; when it would leave structures
# thinner than COMFORTABLE_THICKNESS, crops at native resolution (most of the image each)
# keep the pixels instead: ISBI at 30 minutes would otherwise train its 7.7 px membranes at
# 448 px, 6.7 px thick, and be scored at 512.
MILD_DOWNSCALE = 0.75
# A class is thin when its thickness (band width, blob radius) would fall below this many
# pixels: a stack of 3x3 convolutions needs a few pixels inside a band besides its two
# edges, and the prediction is scored at native size (ISBI membranes: 7.7 px at 512 px).
MIN_THICKNESS = 6.0
# Native-resolution crops validate on whole native images: not when one validation pass
# would take more than this share of the budget.
MAX_VALIDATION_PASS_SHARE = 0.15
# A U-Net's bottleneck should still see a few pixels: depth so that side / 2**depth >= 6.
BOTTLENECK_SIDE = 6
# Classes whose pixels sit this close to the middle vertically (top_share) show no up or down:
# over many images even a small lean is systematic (TGS salt: 0.48, i.e. it sits low).
SYMMETRY_TOLERANCE = 0.01
SMALL_DATASET = 500
# Images per second a validation forward pass is faster than a training step, roughly (the
# table's guess; a measurement replaces it).
FORWARD_SPEED_UP = 3.0
NEVER_BINDING_EPOCHS = 10_000
# A budget affording more than this many times the target passes at the native size spends
# the rest on width; a plan of AUGMENT_PASSES times the target passes or more adds zoom
# augmentation: a longer run sees every image more often. Measured on TGS, 2-core Xeon: 8
# minutes (17 passes, 1x the target) reached salt IoU 0.795, 30 minutes at the same width (41
# passes with zoom) only 0.800, its training loss still at its validation loss (0.28, 0.30):
# past ~1.5x the passes the small net, not the data, was the limit. 30 minutes at width 20 (25
# passes, no zoom) reached 0.794: the planner took width 20 for 1.56x the cost of 16, it was
# 2x (bf16 kernels on that CPU want channel counts that are multiples of 16: widths 16, 20, 24
# and 32 trained 95, 47, 48 and 40 images/s at 112 px). So the wider net is twice the base
# width, and its cost is measured wherever the plan is. TGS's 30 minutes are then width 16
# with zoom again: 53 passes, salt IoU 0.804, competition score 0.776. Width 32 forced there
# (23 passes at ~45 images/s) reached only 0.798 / 0.740: SURPLUS_PASSES x its cost holds.
SURPLUS_PASSES = 1.5
AUGMENT_PASSES = 2.0
WIDER = (2.0,)
# Measurements after the first: the plan is re-made from each until its input size settles.
MAX_REMEASUREMENTS = 2
# Measuring is part of the budget: after the first measurement, another is taken only while
# all of them stay within this share of it.
MEASURING_SHARE = 0.04
# Below this budget a measurement (a few seconds, more on a busy machine) costs more than a
# better plan could win back: the table plans it.
MIN_MEASURED_BUDGET = 60.0
SETTLED = 0.3  # relative change of the trained pixels below which a plan has settled
