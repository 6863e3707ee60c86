"""Data: sources decoded once into memory, seeded stratified splits, augmentation specs.

>>> from convlens.data import load_source, make_split, parse_augment
>>> ds = load_source("digits")
>>> make_split(ds, seed=0).sizes()
{'train': 1258, 'val': 180, 'test': 359}
"""

from .arrays import array_source
from .augment import Augment, parse_augment
from .imageset import ImageSet
from .registry import load_source
from .size import parse_size, resize_set
from .splits import Split, make_split

__all__ = ["Augment", "ImageSet", "Split", "array_source", "load_source", "make_split", "parse_augment", "parse_size",
           "resize_set"]
