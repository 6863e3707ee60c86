"""The old name of the data sources: every public name this module held before the sources were
split one module per kind (:mod:`convlens.data.registry` says which goes where), importable from
here as before.

>>> from convlens.data.sources import load_source
>>> load_source("digits").images.shape
torch.Size([1797, 1, 8, 8])
"""

from .arrays import array_source
from .cmu_faces import FACE_LABELS, FACE_SCALES, cmu_faces_source
from .digits import digits_source
from .folder import folder_source
from .imageset import GALLERY_COLS, GALLERY_LIMIT, ImageSet
from .mnist import FASHION_CLASSES, IDX_PARTS, MNIST_FILES, MNIST_HOMES, fetch_mnist, mnist_source
from .registry import SOURCE_KINDS, SOURCES, DataSource, load_source, pick_images, split_index
from .size import SizeWarning, parse_size, resize_set

__all__ = [
    "FACE_LABELS", "FACE_SCALES", "FASHION_CLASSES", "GALLERY_COLS", "GALLERY_LIMIT", "IDX_PARTS", "MNIST_FILES",
    "MNIST_HOMES", "SOURCES", "SOURCE_KINDS", "DataSource", "ImageSet", "SizeWarning", "array_source",
    "cmu_faces_source", "digits_source", "fetch_mnist", "folder_source", "load_source", "mnist_source", "parse_size",
    "pick_images", "resize_set", "split_index",
]
