"""Detection distillation on MS-COCO with torchvision Faster/Mask R-CNN.

Why a subpackage: detection needs its own data (COCO images with boxes and masks, an iteration-
based sampler), models and evaluation (pycocotools AP), none of which the classification code
shares. Modules are imported by name; this file deliberately imports nothing so that importing
one part does not pull in the others.
"""
