"""Data sources, splits and augmentation specs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.data import Augment, load_source, make_split, parse_augment
from convlens.errors import DataError, SpecError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _folder(root: Path, classes: dict[str, int], size=(12, 10), mode="L", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for ci, (name, n) in enumerate(classes.items()):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            arr = (rng.random(shape) * 60 + ci * 120).astype(np.uint8)
            Image.fromarray(arr).save(d / f"{name}_{i}.png")
    return root


# -- sources -------------------------------------------------------------------------

def test_digits_source_has_classes_and_raw_pixels():
    ds = load_source("digits")
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.class_names == [str(i) for i in range(10)]
    assert int(ds.images.max()) == 255 and sum(ds.counts().values()) == 1797


def test_folder_source_labels_from_subfolders(tmp_path):
    root = _folder(tmp_path / "imgs", {"cats": 5, "dogs": 7})
    ds = load_source(f"folder:{root}")
    assert ds.class_names == ["cats", "dogs"] and ds.counts() == {"cats": 5, "dogs": 7}
    assert ds.images.shape == (12, 1, 10, 12)
    # class 1 was drawn brighter: labels follow the folders
    bright = ds.images.float().mean(dim=(1, 2, 3)) > 100
    assert torch.equal(bright, ds.labels == 1)
    assert ds.ids[0] == "cats/cats_0.png" and ds.given_split is None


def test_folder_source_mixed_sizes_and_colour_are_unified(tmp_path):
    root = _folder(tmp_path / "a", {"x": 3}, size=(12, 10))
    _folder(tmp_path / "a", {"y": 3}, size=(20, 16), mode="RGB")
    ds = load_source(f"folder:{root}")
    assert ds.images.shape[1:] == (3, 10, 12)  # colour wins, the most common size wins


def test_folder_given_train_test_split_is_kept(tmp_path):
    _folder(tmp_path / "d" / "train", {"a": 6, "b": 6})
    _folder(tmp_path / "d" / "test", {"a": 2, "b": 3}, seed=1)
    ds = load_source(f"folder:{tmp_path / 'd'}")
    split = make_split(ds, val=0.2, seed=0)
    assert split.given_test and len(split.test) == 5 and len(split.val) == 2
    assert all(ds.ids[i].startswith("test/") for i in split.test.tolist())
    assert all(ds.ids[i].startswith("train/") for i in torch.cat([split.train, split.val]).tolist())


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    root = _folder(tmp_path / "f", {"a": 4, "b": 4})
    (root / "a" / "broken.png").write_bytes(b"not a png at all")
    (root / "b" / "empty.jpg").write_bytes(b"")
    ds = load_source(f"folder:{root}")
    assert len(ds) == 8 and ds.skipped == 2
    assert sorted(ds.skipped_files) == ["a/broken.png", "b/empty.jpg"]


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.mkdir(), "no class subfolders"),
    (lambda p: (p / "a").mkdir(parents=True), "holds no image files"),
    (lambda p: _folder(p, {"only": 3}), "at least two classes"),
    (lambda p: [(p / c).mkdir(parents=True) or (p / c / "x.png").write_bytes(b"junk") for c in "ab"],
     "none of its 2 image files could be read"),
])
def test_bad_folders_give_one_clear_line(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message) as exc:
        load_source(f"folder:{root}")
    assert "\n" not in str(exc.value) and str(root) in str(exc.value)


def test_unknown_source_and_label_kinds():
    with pytest.raises(DataError, match="unknown data source.*did you mean: mnist"):
        load_source("mnst:/x")
    with pytest.raises(DataError, match="only cmu-faces sources take one"):
        load_source("digits", label="eyes")
    with pytest.raises(DataError, match="no such folder"):
        load_source("folder:/no/such/dir")


def _idx(path: Path, arr: np.ndarray, code_dims: int) -> None:
    head = struct.pack(">BBBB", 0, 0, 8, code_dims) + struct.pack(f">{code_dims}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


def test_mnist_idx_reader(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 28, 28))
    y = np.arange(30) % 10
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", x, 3)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y, 1)
    ds = load_source(f"mnist:{tmp_path}")
    assert ds.images.shape == (30, 1, 28, 28)
    assert np.array_equal(ds.images[:, 0].numpy(), x) and np.array_equal(ds.labels.numpy(), y)
    # a truncated file is a clear error
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 30, 28, 28) + b"\0" * 100)
    with pytest.raises(DataError, match="truncated"):
        load_source(f"mnist:{tmp_path}")


def _idx_plain(path: Path, arr: np.ndarray, code_dims: int) -> None:
    head = struct.pack(">BBBB", 0, 0, 8, code_dims) + struct.pack(f">{code_dims}I", *arr.shape)
    path.write_bytes(head + arr.astype(np.uint8).tobytes())


def _mnist_pair(root: Path, prefix: str, n: int, seed: int, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    write = _idx if gz else _idx_plain
    ext = ".gz" if gz else ""
    root.mkdir(parents=True, exist_ok=True)
    write(root / f"{prefix}-images-idx3-ubyte{ext}", x, 3)
    write(root / f"{prefix}-labels-idx1-ubyte{ext}", y, 1)
    return x, y


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_both_pairs_as_the_given_split(tmp_path, gz):
    xtr, ytr = _mnist_pair(tmp_path, "train", 40, 0, gz=gz)
    xte, yte = _mnist_pair(tmp_path, "t10k", 12, 1, gz=gz)
    ds = load_source(f"mnist:{tmp_path}")
    assert len(ds) == 52 and ds.images.shape == (52, 1, 28, 28)
    assert np.array_equal(ds.images[:40, 0].numpy(), xtr) and np.array_equal(ds.images[40:, 0].numpy(), xte)
    assert np.array_equal(ds.labels.numpy(), np.concatenate([ytr, yte]))
    assert ds.given_split == ["train"] * 40 + ["test"] * 12
    assert ds.ids[0] == "train#0" and ds.ids[40] == "t10k#0" and len(set(ds.ids)) == 52
    assert "as the given train/test split" in ds.describe() and "train-images-idx3-ubyte" in ds.describe()
    split = make_split(ds, val=0.1, seed=0)  # the given split is honoured: test is exactly t10k
    assert split.given_test and sorted(split.test.tolist()) == list(range(40, 52))
    assert len(split.train) + len(split.val) == 40


def test_fashion_mnist_has_its_class_names(tmp_path):
    _mnist_pair(tmp_path, "train", 20, 0)
    _mnist_pair(tmp_path, "t10k", 10, 1)
    ds = load_source(f"fashion-mnist:{tmp_path}")
    assert ds.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert ds.source["kind"] == "fashion-mnist" and ds.source["spec"].startswith("fashion-mnist:")
    assert load_source(f"mnist:{tmp_path}").class_names == [str(i) for i in range(10)]


def test_mnist_one_pair_is_read_and_says_so(tmp_path):
    _mnist_pair(tmp_path, "t10k", 30, 0)
    ds = load_source(f"mnist:{tmp_path}")
    assert len(ds) == 30 and ds.given_split is None and ds.ids[0] == "#0"  # old runs' ids stay valid
    assert "read only t10k-images-idx3-ubyte.gz (30)" in ds.describe() and "no train-* pair" in ds.describe()


def test_mnist_plain_and_gz_copies_are_read_once(tmp_path):
    _mnist_pair(tmp_path, "t10k", 10, 0, gz=True)
    _mnist_pair(tmp_path, "t10k", 10, 0, gz=False)
    assert len(load_source(f"mnist:{tmp_path}")) == 10


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.mkdir(), "no idx files"),
    (lambda p: (_mnist_pair(p, "t10k", 5, 0), (p / "t10k-labels-idx1-ubyte.gz").unlink()),
     "t10k-images-idx3-ubyte.gz has no matching t10k-labels-idx1-ubyte"),
    (lambda p: (_mnist_pair(p, "train", 5, 0), (p / "train-images-idx3-ubyte.gz").unlink()),
     "train-labels-idx1-ubyte.gz has no matching train-images-idx3-ubyte"),
    (lambda p: (_mnist_pair(p, "a", 5, 0), _mnist_pair(p, "b", 5, 1)), "want one pair, or a train-"),
    (lambda p: (_mnist_pair(p, "train", 5, 0), _idx(p / "t10k-images-idx3-ubyte.gz", np.zeros((4, 20, 20)), 3),
                _idx(p / "t10k-labels-idx1-ubyte.gz", np.zeros(4), 1)), "differ in size .*28x28 vs 20x20"),
    (lambda p: (_idx(p / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), 3),
                _idx(p / "t10k-labels-idx1-ubyte.gz", np.zeros(3), 1)), "want \\(N, H, W\\) images and N labels"),
    (lambda p: (_idx(p / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), 3),
                _idx(p / "t10k-labels-idx1-ubyte.gz", np.full(4, 12), 1)), "label 12"),
])
def test_bad_mnist_folders_give_one_clear_line(tmp_path, setup, message, monkeypatch):
    monkeypatch.setenv("CONVLENS_OFFLINE", "1")  # an empty folder would be downloaded into when online
    root = tmp_path / "m"
    root.mkdir()
    if message == "no idx files":
        root.rmdir()
    setup(root)
    with pytest.raises(DataError, match=message) as exc:
        load_source(f"mnist:{root}")
    assert "\n" not in str(exc.value) and str(root) in str(exc.value)


@pytest.mark.data
def test_cmu_faces_labels_scales_and_bad_files():
    eyes = load_source(f"cmu-faces:{DATA / 'cmu_faces'}", label="eyes")
    assert eyes.class_names == ["open", "sunglasses"] and len(eyes) == 624
    assert eyes.images.shape[1:] == (1, 60, 64) and eyes.skipped == 16
    assert all(f.endswith(".bad") for f in eyes.skipped_files)
    ident = load_source(f"cmu-faces:{DATA / 'cmu_faces'}", label="identity", scale=4)
    assert ident.num_classes == 20 and ident.images.shape[1:] == (1, 30, 32)
    # maxval scaling: faces use the full 0..255 range, not 0..~150
    assert int(eyes.images.max()) > 200
    with pytest.raises(DataError, match="not a cmu-faces kind.*did you mean: pose"):
        load_source(f"cmu-faces:{DATA / 'cmu_faces'}", label="poses")


@pytest.mark.data
def test_real_mnist_and_defungi_given_split():
    m = load_source(f"mnist:{DATA / 'mnist'}")  # the shared copy holds the t10k pair only
    assert len(m) == 10000 and m.counts()["1"] > 1000 and m.given_split is None
    assert "read only t10k-images-idx3-ubyte.gz (10000)" in m.describe()
    d = load_source(f"folder:{DATA / 'defungi'}")
    s = make_split(d)
    assert d.class_names == ["BBH", "GMA"] and s.given_test and len(s.test) == 148 + 164


# -- splits ----------------------------------------------------------------------------

def test_split_is_seeded_stratified_and_disjoint():
    ds = load_source("digits")
    a, b, c = make_split(ds, seed=0), make_split(ds, seed=0), make_split(ds, seed=1)
    assert torch.equal(a.test, b.test) and not torch.equal(a.test, c.test)
    parts = [set(a.train.tolist()), set(a.val.tolist()), set(a.test.tolist())]
    assert sum(map(len, parts)) == len(ds) and len(set().union(*parts)) == len(ds)
    assert abs(len(a.test) / len(ds) - 0.2) < 0.01 and abs(len(a.val) / len(ds) - 0.1) < 0.01
    whole = np.bincount(ds.labels.numpy()) / len(ds)
    test = np.bincount(ds.labels[a.test].numpy(), minlength=10) / len(a.test)
    assert np.abs(whole - test).max() < 0.01  # stratified


def test_split_ids_round_trip():
    from convlens.data import Split

    ds = load_source("digits")
    s = make_split(ds, seed=3)
    back = Split.from_ids(s.to_ids(ds), ds)
    assert torch.equal(back.test, s.test) and torch.equal(back.train, s.train)


# -- augmentation --------------------------------------------------------------------

def test_parse_augment_and_errors_name_the_token():
    a = parse_augment("rotate=15, translate=0.1,zoom=0.1,flip=h")
    assert a == Augment(rotate=15, translate=0.1, zoom=0.1, flip="h")
    assert parse_augment(a.spec) == a and not parse_augment(None).active
    for bad, msg in [("rotat=15", "unknown token 'rotat=15'.*did you mean: rotate"),
                     ("zoom=lots", "'zoom=lots'.*not a number"), ("flip=x", "flip takes h, v or hv"),
                     ("rotate", "needs a value"), ("translate=3", "between 0 and 1")]:
        with pytest.raises(SpecError, match=msg):
            parse_augment(bad)


@pytest.mark.parametrize("angle, tx, ty, scale, shear", [
    (30, 0, 0, 1.0, 0), (0, 5, -3, 1.0, 0), (0, 0, 0, 1.2, 0), (20, 3, 1, 1.1, 10), (-45, -2, 4, 0.8, -8)])
def test_batched_affine_matches_torchvision(angle, tx, ty, scale, shear):
    """The batched grid_sample affine is torchvision's v2 affine, parameter for parameter."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from convlens.data.augment import affine_batch

    x = torch.zeros(1, 1, 40, 48)
    x[..., 10:16, 8:40] = 255.0
    x[..., 10:30, 30:36] = 255.0  # an asymmetric "7": a wrong sign or axis would show
    ref = TF.affine(x, angle=angle, translate=[tx, ty], scale=scale, shear=[float(shear), 0.0],
                    interpolation=InterpolationMode.BILINEAR)
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    ours = affine_batch(x, t(angle), t(tx), t(ty), t(scale), t(shear))
    assert (ours - ref).abs().mean() < 0.01 and ref.mean() > 20


def test_augment_applies_different_params_per_image():
    img = torch.zeros(1, 1, 20, 20)
    img[..., 2:6, 2:18] = 255.0  # a bar near the top
    x = img.repeat(64, 1, 1, 1)
    assert torch.allclose(Augment()(x), x)
    # flips: every copy is either the original or its mirror, and both occur
    f = Augment(flip="h")(x, generator=torch.Generator().manual_seed(1))
    same = (f == x).flatten(1).all(1)
    mirrored = (f == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()
    # translation moves the bar's centre of mass by up to 10% of the height, differently per copy
    t = Augment(translate=0.1, fill="zeros")(x, generator=torch.Generator().manual_seed(2))
    rows = torch.arange(20.0).view(1, 1, 20, 1)
    cy = (t * rows).sum(dim=(1, 2, 3)) / t.sum(dim=(1, 2, 3))
    assert cy.std() > 0.5 and (cy - 3.5).abs().max() <= 2.6


def test_augment_is_seeded_and_keeps_range():
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    a = parse_augment("rotate=20,zoom=0.2,brightness=0.3,contrast=0.3,flip=hv")
    o1 = a(x, generator=torch.Generator().manual_seed(5))
    o2 = a(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(o1, o2) and o1.min() >= 0 and o1.max() <= 255
    assert a.to_torchvision()(x[0]).shape == (3, 16, 16)


def test_augment_preview_grid(sample_photos):
    grid = parse_augment("rotate=30,zoom=0.2").preview(sample_photos["chelsea"])
    assert grid.mode == "RGB" and grid.width >= 480
    arr = np.asarray(grid)
    h = arr.shape[0]
    tiles = [arr[r * h // 3:(r + 1) * h // 3] for r in range(3)]
    assert not np.array_equal(tiles[0], tiles[1])  # the copies differ


# -- arrays as a notebook holds them, resized copies ------------------------------------

from convlens.data import array_source, parse_size, resize_set  # noqa: E402


def test_arrays_in_every_layout_and_dtype_give_raw_pixels():
    rng = np.random.default_rng(0)
    u8 = (rng.random((12, 6, 5)) * 255).astype(np.uint8)
    y = np.arange(12) % 3
    ds = load_source((u8, y), class_names=["a", "b", "c"])
    assert ds.images.shape == (12, 1, 6, 5) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(u8)) and ds.class_names == ["a", "b", "c"]
    assert ds.source["kind"] == "arrays" and len(ds.source["digest"]) == 32 and ds.ids[:2] == ["#0", "#1"]
    # floats in [0, 1] (x / 255 in a notebook) are scaled back; NHWC colour; one-hot labels; torch tensors
    assert torch.equal(load_source((u8 / 255.0, y)).images, ds.images)
    rgb = load_source((np.repeat(u8[..., None], 3, axis=3), np.eye(3)[y]))
    assert rgb.images.shape == (12, 3, 6, 5) and rgb.labels.tolist() == y.tolist() \
        and rgb.class_names == ["0", "1", "2"]
    assert load_source((torch.from_numpy(u8).float(), torch.from_numpy(y))).images.shape == (12, 1, 6, 5)
    # the same arrays, the same digest; other pixels, another
    assert load_source((u8, y)).source["digest"] == load_source((u8.copy(), y.copy())).source["digest"]
    assert load_source((255 - u8, y)).source["digest"] != load_source((u8, y)).source["digest"]


def test_arrays_with_a_test_pair_are_the_given_split():
    rng = np.random.default_rng(1)
    x, xt = rng.random((20, 8, 8)), rng.random((6, 8, 8))
    ds = load_source(((x, np.arange(20) % 2), (xt, np.arange(6) % 2)), class_names=["no", "yes"])
    assert len(ds) == 26 and ds.given_split.count("test") == 6 and ds.ids[20] == "test#0"
    assert make_split(ds, seed=0).sizes()["test"] == 6 and "as the given split" in ds.describe()


@pytest.mark.parametrize("x, y, names, message", [
    (np.zeros((4, 8)), [0, 1, 0, 1], None, r"images of shape 4x8; want \(N, H, W\) or \(N, H, W, C\)"),
    (np.zeros((4, 8, 8, 2)), [0, 1, 0, 1], None, "images of shape 4x8x8x2"),
    (np.zeros((4, 8, 8)), [0, 1, 0], None, "4 images but labels of shape 3; want 4 labels"),
    (np.full((4, 8, 8), 300.0), [0, 1, 0, 1], None, "pixel values from 300 to 300"),
    (np.full((4, 8, 8), -0.5), [0, 1, 0, 1], None, "pixel values from -0.5"),
    (np.full((4, 8, 8), np.nan), [0, 1, 0, 1], None, "NaN or infinite"),
    (np.array([["a"] * 8] * 8 * 4).reshape(4, 8, 8), [0, 1, 0, 1], None, "images must be numbers"),
    (np.zeros((4, 8, 8)), [0, 1.5, 0, 1], None, "labels must be whole numbers"),
    (np.zeros((4, 8, 8)), [0, -1, 0, 1], None, "label -1 is negative"),
    (np.zeros((4, 8, 8)), [0, 0, 0, 0], None, "needs at least two classes"),
    (np.zeros((4, 8, 8)), [0, 1, 2, 1], ["a", "b"], "2 names for labels up to 2"),
    (np.zeros((4, 8, 8)), [0, 1, 0, 1], ["a", "a"], "'a' is given twice"),
    (np.zeros((4, 8, 8)), [0, 1, 0, 1], "ab", "a list of names"),
])
def test_bad_arrays_give_one_clear_line(x, y, names, message):
    with pytest.raises(DataError, match=message) as e:
        load_source((x, np.asarray(y)), class_names=names)
    assert "\n" not in str(e.value) and e.value.param in ("data", "class_names")


def test_bad_data_objects_and_class_names_for_a_named_source():
    with pytest.raises(DataError, match="a int is not a data source"):
        load_source(3)
    with pytest.raises(DataError, match="only arrays take class names") as e:
        load_source("digits", class_names=["a"])
    assert e.value.param == "class_names"
    with pytest.raises(DataError, match="train images are"):
        array_source(np.zeros((4, 8, 8)), [0, 1, 0, 1], test=(np.zeros((2, 6, 6)), [0, 1]))


def test_resize_set_makes_smaller_copies_and_records_the_size():
    ds = load_source("digits")
    small = resize_set(ds, "6x4")  # width x height
    assert small.images.shape == (1797, 1, 4, 6) and small.images.dtype == torch.uint8
    assert small.source["size"] == [4, 6] and small.source["original_size"] == [8, 8]
    assert small.ids == ds.ids and torch.equal(small.labels, ds.labels)
    assert resize_set(ds, (8, 8)) is ds and resize_set(ds, None) is ds
    flat = array_source(np.full((4, 8, 8), 77, np.uint8), [0, 1, 0, 1])
    assert int(resize_set(flat, 16).images.float().std()) == 0 and int(resize_set(flat, 16).images[0, 0, 0, 0]) == 77


@pytest.mark.parametrize("size, want", [("28x28", (28, 28)), ("64X60", (60, 64)), ("32x30", (30, 32)), ("32", (32, 32)),
                                        (16, (16, 16)), ((30, 32), (30, 32)), (None, None)])
def test_parse_size(size, want):
    assert parse_size(size) == want


@pytest.mark.parametrize("size", ["28x", "axb", "0x5", "5x5x5", 5000, True, (1.5, 2), "-3x4"])
def test_bad_sizes_name_the_option(size):
    with pytest.raises(DataError, match="size") as e:
        parse_size(size)
    assert e.value.param == "size"


def test_gallery_of_a_data_set_and_show_data_cli(tmp_path, capsys):
    """ImageSet.figure shows every image by class (a sample past the limit); `convlens show-data`
    writes gallery.png and data.json, prints JSON, and refuses a bad limit in one line."""
    import json

    from convlens.cli import main

    ds = load_source("digits")
    every = ds.gallery_items(None)
    assert sorted(every) == list(range(len(ds)))
    sample = ds.gallery_items(100, seed=1)
    assert 90 <= len(sample) <= 100 and sample == ds.gallery_items(100, seed=1)
    assert {int(ds.labels[i]) for i in sample} == set(range(10))
    small = ds.figure(50, cols=5)
    assert small.width < small.height  # 10 classes x 5 per row, each wrapped onto a row of its own
    out = tmp_path / "g"
    assert main(["show-data", "digits", "--out", str(out), "--limit", "60", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 1797 and doc["counts"]["0"] == 178 and doc["height"] == 8
    assert (out / "gallery.png").is_file() and json.loads((out / "data.json").read_text())["n"] == 1797
    assert main(["show-data", "digits", "--limit", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--limit" in err[0]
    assert main(["show-data", "folder:" + str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
