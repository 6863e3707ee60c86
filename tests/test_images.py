"""Robust image reading: formats, modes, PGM maxval scaling, EXIF, and bad inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convlens.images as images_mod
from convlens.errors import ConvlensError, ImageError
from convlens.images import list_images, load_image


def _pattern(w: int = 40, h: int = 30) -> np.ndarray:
    """An RGB picture with a distinct colour in each quadrant (easy to check after decoding)."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    arr[: h // 2, w // 2:] = (0, 255, 0)
    arr[h // 2:, : w // 2] = (0, 0, 255)
    arr[h // 2:, w // 2:] = (255, 255, 255)
    return arr


# -- formats ------------------------------------------------------------------
@pytest.mark.parametrize("fmt,suffix,lossy", [
    ("JPEG", ".jpg", True), ("PNG", ".png", False), ("BMP", ".bmp", False),
    ("WEBP", ".webp", True), ("TIFF", ".tif", False), ("PPM", ".ppm", False),
])
def test_formats_decode_to_rgb_with_the_right_pixels(tmp_path, fmt, suffix, lossy):
    arr = _pattern()
    path = tmp_path / f"pic{suffix}"
    Image.fromarray(arr).save(path, format=fmt)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (40, 30)
    got = np.asarray(img).astype(int)
    # sample the centre of each quadrant (away from lossy edges)
    for (y, x) in [(7, 10), (7, 30), (22, 10), (22, 30)]:
        err = np.abs(got[y, x] - arr[y, x].astype(int)).max()
        assert err <= (40 if lossy else 0), (fmt, y, x, got[y, x], arr[y, x])


def test_gif_gives_first_frame(tmp_path):
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    img = load_image(path)
    assert img.mode == "RGB"
    r, g, b = np.asarray(img)[8, 8]
    assert r > 200 and b < 50  # the first frame (red), not the second (blue)


# -- modes --------------------------------------------------------------------
def test_mode_L_to_rgb_and_kept_as_L_with_mode_none(tmp_path):
    arr = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    path = tmp_path / "g.png"
    Image.fromarray(arr, mode="L").save(path)
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (4, 16, 3) and (rgb[..., 0] == arr).all() and (rgb[..., 2] == arr).all()
    gray = load_image(path, mode=None)
    assert gray.mode == "L" and (np.asarray(gray) == arr).all()


def test_rgba_and_la_are_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255           # red ...
    rgba[:, :4, 3] = 0           # ... fully transparent on the left
    rgba[:, 4:, 3] = 255         # ... opaque on the right
    p = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    out = np.asarray(load_image(p))
    assert (out[:, :4] == 255).all()                    # transparent -> white, not black
    assert (out[:, 4:] == (255, 0, 0)).all()

    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[..., 1] = 0                                     # all transparent black
    la[:4, :, 1] = 255                                 # top half opaque black
    p2 = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(p2)
    g = np.asarray(load_image(p2, mode=None))
    assert (g[:4] == 0).all() and (g[4:] == 255).all()


def test_palette_with_and_without_transparency(tmp_path):
    base = Image.fromarray(_pattern()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    p = tmp_path / "p.png"
    base.save(p)
    assert Image.open(p).mode == "P"
    out = np.asarray(load_image(p))
    assert tuple(out[7, 10]) == (255, 0, 0) and tuple(out[22, 30]) == (255, 255, 255)

    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    pal.paste(1, (4, 0, 8, 8))
    pt = tmp_path / "pt.png"
    pal.save(pt, transparency=0)  # palette entry 0 (black) is transparent
    assert "transparency" in Image.open(pt).info
    out = np.asarray(load_image(pt))
    assert (out[:, :4] == 255).all()          # transparent -> white
    assert (out[:, 4:] == (0, 255, 0)).all()


def test_cmyk_converts_to_rgb(tmp_path):
    cmyk = Image.new("CMYK", (6, 6), (0, 255, 255, 0))  # pure red in CMYK
    p = tmp_path / "c.jpg"
    cmyk.save(p, quality=100)
    assert Image.open(p).mode == "CMYK"
    out = np.asarray(load_image(p)).astype(int)
    assert out.shape == (6, 6, 3)
    assert out[3, 3, 0] > 200 and out[3, 3, 1] < 60 and out[3, 3, 2] < 60


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_is_scaled_not_clipped(tmp_path, fmt):
    arr = np.array([[0, 32768, 65535, 16384]], dtype=np.uint16)
    p = tmp_path / f"wide.{fmt.lower()}"
    Image.fromarray(arr).save(p, format=fmt)
    assert Image.open(p).mode.startswith("I")
    out = np.asarray(load_image(p, mode=None))
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[0, 2] == 255
    assert abs(int(out[0, 1]) - 128) <= 1 and abs(int(out[0, 3]) - 64) <= 1


# -- PGM / PPM with a header maxval that is not 255 -----------------------------
def _p2(values: list[int], maxval: int) -> bytes:
    return f"P2\n# written by hand\n{len(values)} 1\n{maxval}\n{' '.join(map(str, values))}\n".encode()


def _p5(values: list[int], maxval: int) -> bytes:
    body = bytes(values) if maxval < 256 else np.array(values, dtype=">u2").tobytes()
    return f"P5\n{len(values)} 1\n{maxval}\n".encode() + body


@pytest.mark.parametrize("maxval", [119, 1000, 65535])
@pytest.mark.parametrize("writer", [_p2, _p5], ids=["P2", "P5"])
def test_pgm_scaled_by_header_maxval(tmp_path, writer, maxval):
    half, quarter = maxval // 2, maxval // 4
    path = tmp_path / f"x_{maxval}.pgm"
    path.write_bytes(writer([0, quarter, half, maxval], maxval))
    out = np.asarray(load_image(path, mode=None)).astype(int)[0]
    assert out[0] == 0
    assert out[3] == 255                            # maxval -> 255, whatever maxval is
    assert abs(out[2] - 128) <= 2                   # half of maxval -> ~128 (not clipped at 255)
    assert abs(out[1] - 64) <= 2
    assert len(set(out.tolist())) == 4              # nothing collapsed by clipping


def test_ppm_p6_with_maxval_1000(tmp_path):
    vals = np.array([[0, 500, 1000], [1000, 0, 500]], dtype=">u2")
    path = tmp_path / "c.ppm"
    path.write_bytes(b"P6\n2 1\n1000\n" + vals.tobytes())
    try:
        out = np.asarray(load_image(path)).astype(int)
    except ImageError as exc:  # a clear error is acceptable for a format Pillow cannot decode
        pytest.skip(f"Pillow cannot decode 16-bit P6 here: {exc}")
    assert out.shape == (1, 2, 3)
    assert abs(out[0, 0, 1] - 128) <= 2 and out[0, 0, 2] == 255 and out[0, 1, 0] == 255


# -- EXIF orientation ---------------------------------------------------------------
@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_rotates(tmp_path, orientation):
    arr = np.zeros((20, 60, 3), dtype=np.uint8)  # wide picture: 60 x 20
    arr[:, :10] = 255                           # white band on the left
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(arr).save(p, exif=exif.tobytes(), quality=95)
    assert Image.open(p).size == (60, 20)
    img = load_image(p)
    assert img.size == (20, 60)                 # rotated upright: now tall
    out = np.asarray(img).astype(int)
    # 6 = rotate 90° clockwise to display: the left band goes to the top; 8: to the bottom
    top, bottom = out[:8].mean(), out[-8:].mean()
    if orientation == 6:
        assert top > 200 and bottom < 50
    else:
        assert bottom > 200 and top < 50


# -- other sources -------------------------------------------------------------------
def test_arrays_tensors_bytes_and_file_objects(tmp_path):
    import torch

    arr = _pattern()
    assert np.array_equal(np.asarray(load_image(arr)), arr)
    chw = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    assert np.abs(np.asarray(load_image(chw)).astype(int) - arr).max() <= 1
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    assert np.array_equal(np.asarray(load_image(buf.getvalue())), arr)
    buf.seek(0)
    assert np.array_equal(np.asarray(load_image(buf)), arr)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 3, 4, 5)))


# -- bad inputs -----------------------------------------------------------------
def _png_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["text"] = tmp_path / "notes.jpg"
    files["text"].write_text("this is not an image, just text\n")
    files["empty"] = tmp_path / "empty.png"
    files["empty"].write_bytes(b"")
    full = _png_bytes()
    files["truncated_png"] = tmp_path / "cut.png"
    files["truncated_png"].write_bytes(full[: len(full) // 2])
    jbuf = io.BytesIO()
    Image.fromarray(_pattern(200, 150)).save(jbuf, "JPEG")
    files["truncated_jpg"] = tmp_path / "cut.jpg"
    files["truncated_jpg"].write_bytes(jbuf.getvalue()[: len(jbuf.getvalue()) // 2])
    files["directory"] = tmp_path / "folder.png"
    files["directory"].mkdir()
    files["missing"] = tmp_path / "nope.png"
    return files


@pytest.mark.parametrize("kind,words", [
    ("text", "not an image"), ("empty", "empty"), ("truncated_png", "truncated|corrupt|decode"),
    ("truncated_jpg", "truncated|corrupt|decode"), ("directory", "directory"), ("missing", "no such file"),
])
def test_bad_files_raise_imageerror_naming_the_file(tmp_path, kind, words):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(ImageError, match=words) as info:
        load_image(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


def test_decompression_bomb_by_header(tmp_path):
    # a valid PNG header that claims 100000 x 100000 pixels (10^10), with no pixel data
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    png += struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    p = tmp_path / "bomb.png"
    p.write_bytes(png)
    with pytest.raises(ImageError, match="bomb") as info:
        load_image(p)
    assert str(p) in str(info.value)


def test_decompression_bomb_by_limit(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    p.write_bytes(_png_bytes((64, 48)))
    with pytest.raises(ImageError, match="over the limit"):
        load_image(p, max_pixels=1000)
    assert load_image(p).size == (64, 48)
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 1000)  # the module limit is read at call time
    with pytest.raises(ImageError, match="over the limit") as info:
        load_image(p)
    assert str(p) in str(info.value)


def test_list_images_walks_directories(tmp_path):
    (tmp_path / "sub").mkdir()
    for n in ("b.png", "sub/a.jpg", "readme.txt"):
        (tmp_path / n).write_bytes(b"x")
    found = list_images([tmp_path])
    assert [p.name for p in found] == ["b.png", "a.jpg"]  # sorted paths, non-images skipped
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ImageError, match="no image files"):
        list_images([empty])
    with pytest.raises(ImageError, match="no such file") as info:  # before any model is loaded
        list_images([tmp_path / "b.png", tmp_path / "gone.jpg"])
    assert "gone.jpg" in str(info.value)


# -- the CLI turns them into one line and exit 2 ------------------------------------
@pytest.fixture
def cli_model(reuse_builtin):
    """Let `convlens predict` reuse the session's built-in model instead of loading it again."""
    import convlens.cli.cmd_predict as cmd

    return reuse_builtin(cmd)


@pytest.mark.parametrize("kind", ["text", "empty", "truncated_jpg", "directory", "missing"])
def test_cli_bad_image_exit_2_one_line_nothing_on_stdout(tmp_path, capsys, cli_model, kind):
    from convlens.cli import main

    path = _bad_files(tmp_path)[kind]
    code = main(["predict", str(path), "--json"])  # a folder is walked: an empty one is an error
    cap = capsys.readouterr()
    assert code == 2
    assert cap.out == ""
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("convlens: error:")
    assert path.name in lines[0]
    assert "Traceback" not in cap.err


# -- the real data --------------------------------------------------------------------
@pytest.mark.data
def test_cmu_faces_pgm_use_the_full_range(data_dir):
    user = data_dir / "cmu_faces" / "an2i"
    full = sorted(p for p in user.glob("*.pgm") if not p.stem.endswith(("_2", "_4")))[0]
    half = full.with_name(full.stem + "_2.pgm")
    quarter = full.with_name(full.stem + "_4.pgm")
    expect = {full: ((128, 120), b"P2"), half: ((64, 60), b"P5"), quarter: ((32, 30), b"P5")}
    for path, (size, magic) in expect.items():
        raw = path.read_bytes()
        assert raw[:2] == magic
        maxval = images_mod._pgm_maxval(io.BytesIO(raw))
        assert maxval is not None and 100 <= maxval < 255
        img = load_image(path, mode=None)
        assert img.mode == "L" and img.size == size
        arr = np.asarray(img).astype(int)
        assert arr.max() > maxval + 40, (path.name, arr.max(), maxval)  # scaled up, not raw
        w, h = size
        if magic == b"P5":  # exactly one whitespace byte after maxval, then w*h bytes
            raw_px = np.frombuffer(raw[-w * h:], dtype=np.uint8).reshape(h, w).astype(int)
        else:
            raw_px = np.array(raw.split()[4:], dtype=int).reshape(h, w)
        assert raw_px.max() <= maxval
        expected = np.rint(raw_px * 255.0 / maxval)
        assert np.abs(arr - expected).max() <= 1  # every pixel scaled by 255 / maxval


@pytest.mark.data
def test_shared_truncated_jpeg_clear_error(photos, capsys, cli_model):
    from convlens.cli import main

    path = photos / "truncated.jpg"
    with pytest.raises(ImageError, match="truncated") as info:
        load_image(path)
    assert "truncated.jpg" in str(info.value)
    assert main(["predict", str(path), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1 and "truncated.jpg" in cap.err


def test_imageerror_is_a_convlens_error():
    assert issubclass(ImageError, ConvlensError) and ImageError("a\nb").args[0] == "a b"


def test_load_many_keeps_order_and_raises_the_first_failure(tmp_path):
    from convlens.images import load_many

    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((4 + i, 5, 3), i * 40, np.uint8)).save(p)
        paths.append(p)
    imgs = load_many(paths)
    assert [im.size for im in imgs] == [(5, 4 + i) for i in range(6)]
    assert [np.asarray(im)[0, 0, 0] for im in imgs] == [i * 40 for i in range(6)]
    assert load_many(paths, fn=lambda p: p.name, workers=1) == [p.name for p in paths]
    assert load_many([]) == []
    with pytest.raises(ImageError, match="nope.png: no such file"):
        load_many([paths[0], tmp_path / "nope.png", paths[1]])
