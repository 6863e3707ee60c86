"""Property-based tests (hypothesis) of the parsers people type into.

Every parser of user text (kernel matrices, arch specs, augment specs, channel lists, sizes,
featurevis targets, metric and method lists, boxes files) is held to two kinds of property:

- **robustness**: on arbitrary text (unicode, digits and separators, numbers thousands of digits
  long, ``nan``/``inf``, NUL bytes, deep brackets) it returns a valid value or raises a
  :class:`~convlens.errors.ConvlensError` whose message is one non-empty line; never any other
  exception (``ValueError``, ``OverflowError``, ``RecursionError``, ``OSError``...) and never a hang;
- **correctness on valid input**: what is generated from the grammar parses to what it describes,
  and a canonical form (``ArchInfo.spec``, ``Augment.spec``) parses back to the same value.

Each test is bounded (``max_examples``) so the file runs in seconds; no example database is
written (``database=None``), so nothing appears in the work tree.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from convlens.data.augment import _LIMITS, Augment, parse_augment
from convlens.data.sources import parse_size as data_size
from convlens.errors import ConvlensError, DataError, SpecError
from convlens.lens.cam.targets import ALIASES as METHOD_ALIASES
from convlens.lens.cam.targets import METHODS, parse_methods
from convlens.lens.featurevis import parse_size as vis_size
from convlens.lens.featurevis import parse_targets
from convlens.lens.journey import parse_channels
from convlens.lens.kernels import _ALIASES as KERNEL_ALIASES
from convlens.lens.kernels import KERNELS, kernel_names, parse_kernel
from convlens.lens.score import _ALIASES as METRIC_ALIASES
from convlens.lens.score import METRICS, load_boxes, parse_metrics
from convlens.models.arch import BUILTIN, ArchInfo, parse_arch


def bounded(n: int):
    """``n`` examples, no deadline (a 2-core CPU), no example database in the work tree."""
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- arbitrary user text ---------------------------------------------------------------------

#: pieces people (and fuzzers) type: separators, grammar words, odd numbers and odd characters
FRAGMENTS = [
    ",", ";", "x", "X", "=", "-", ".", "..", ":", "/", " ", "  ", "\t", "\n", "\r\n", "[", "]", "[[", "]]",
    "e", "E", "+", "_", "*", "{", "}", '"',
    "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e-999", "0", "00", "1", "-1", "0.5", ".5",
    "1/0", "1/3", "0/0", "1" + "0" * 400 + "/1", "1e400/1", "9" * 400, "9" * 5000, "0." + "1" * 5000,
    "²", "٣", "١٢", "①", "Ⅻ", "𝟗", "\x00", "\u2028", "\x85", "é", "İ", "ß", "🙂", "\ufeff",
    "all", "none", "off", "top", "conv", "conv16", "conv32v", "k5", "fc", "fc64", "pool", "maxpool2", "gap",
    "bn", "drop", "drop0.3", "drop1.0", "relu", "tanh", "timm:", "effnet-lite0",
    "rotate", "translate", "zoom", "flip", "h", "hv", "fill", "reflect", "brightness",
    "gradcam", "grad-cam++", "scorecam", "ig", "deletion", "road", "pointing", "center",
    "sobel-x", "Sobel X", "gaussian", "identity", ".npy", ".csv", ".txt", "/tmp/", "x" * 300,
]

typed_text = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789,;xX=-.: /", max_size=60),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.integers().map(str),
                       st.floats().map(repr), st.text(max_size=6)), max_size=14).map("".join),
)


def refuses_cleanly(fn, *args, **kwargs):
    """``fn(*args)``, or None when it raised a ConvlensError with a one-line message; any other
    exception propagates (and fails the test)."""
    try:
        return fn(*args, **kwargs)
    except ConvlensError as exc:
        msg = str(exc)
        assert msg.strip() and "\n" not in msg and "\r" not in msg, repr(msg)
        return None


# -- robustness: every parser on arbitrary text ------------------------------------------------

# Inputs that once escaped as another exception are pinned as explicit examples (run every time).
HUGE = "9" * 5000  # int() refuses over 4300 digits
BIG_FRACTION = "1" + "0" * 400 + "/1"  # an exact fraction beyond float range


@bounded(250)
@given(typed_text)
@example(BIG_FRACTION)  # was OverflowError
@example("[[" + HUGE + "]]")  # was ValueError (json)
@example("[[" + "9" * 400 + "]]")  # was OverflowError (numpy)
@example("[[" * 5000)  # was RecursionError (json)
@example("x" * 300 + ".npy")  # was OSError: file name too long
def test_parse_kernel_on_any_text_gives_a_finite_matrix_or_a_convlens_error(text):
    out = refuses_cleanly(parse_kernel, text)
    if out is not None:
        name, m = out
        assert isinstance(name, str) and name
        assert isinstance(m, np.ndarray) and m.dtype == np.float64 and m.ndim == 2 and m.size > 0
        assert np.isfinite(m).all()


@bounded(250)
@given(typed_text)
@example("conv" + HUGE)  # was ValueError
@example("fc1-pool" + HUGE)  # was ValueError
def test_parse_arch_on_any_text_gives_an_arch_or_a_convlens_error(text):
    info = refuses_cleanly(parse_arch, text)
    if info is not None:
        assert info.kind in ("spec", "transfer")
        if info.kind == "spec":
            assert parse_arch(info.spec) == info  # whatever is accepted is canonical and re-parses


@bounded(250)
@given(typed_text)
@example("rotate=0.6796875")  # its canonical spec was rotate=0.679688
def test_parse_augment_on_any_text_gives_an_augment_within_limits_or_a_convlens_error(text):
    aug = refuses_cleanly(parse_augment, text)
    if aug is not None:
        for key, (lo, hi) in _LIMITS.items():
            assert lo <= getattr(aug, key) <= hi
        assert aug.flip in ("", "h", "v", "vh") and aug.fill in ("reflect", "border", "zeros")
        assert parse_augment(aug.spec) == aug


@bounded(250)
@given(typed_text, st.integers(1, 64), st.booleans())
@example("²", 8, True)  # was ValueError: isdigit() but not int()
@example(HUGE, 8, True)  # was ValueError
@example("0-" + HUGE, 8, False)  # was ValueError
@example("0-999999999999", 8, False)  # listed 10**12 channels before dropping them (minutes, gigabytes)
def test_parse_channels_on_any_text_gives_distinct_channels_in_range_or_a_convlens_error(text, n, strict):
    chans = refuses_cleanly(parse_channels, text, n, strict=strict)
    if chans is not None:
        assert chans and len(set(chans)) == len(chans)
        assert all(isinstance(c, int) and 0 <= c < n for c in chans)


@bounded(200)
@given(typed_text)
@example("²x9")
@example(HUGE + "x" + HUGE)
def test_sizes_on_any_text_give_a_valid_pair_or_a_convlens_error(text):
    hw = refuses_cleanly(vis_size, text, (64, 60))
    if hw is not None:
        assert len(hw) == 2 and all(isinstance(v, int) and 8 <= v <= 2048 for v in hw)
    hw = refuses_cleanly(data_size, text)
    if hw is not None:
        assert len(hw) == 2 and all(isinstance(v, int) and 1 <= v <= 4096 for v in hw)


@bounded(200)
@given(typed_text)
def test_parse_targets_on_any_text_gives_stripped_items_without_commas(text):
    items = refuses_cleanly(parse_targets, text)
    assert items is not None  # a string of targets is never refused here (resolution comes later)
    for item in items:
        assert item and item == item.strip() and "," not in item


@bounded(200)
@given(typed_text)
def test_metric_and_method_lists_on_any_text_give_known_names_or_a_convlens_error(text):
    for fn, known in ((parse_metrics, METRICS), (parse_methods, METHODS)):
        names = refuses_cleanly(fn, text)
        if names is not None:
            assert names and len(set(names)) == len(names) and set(names) <= set(known)


@pytest.fixture(scope="module")
def box_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("boxes")


@bounded(150)
@given(typed_text, st.sampled_from([".json", ".csv"]))
@example("[" * 100000, ".json")  # was RecursionError
@example('{"a": [[1, 2, 3, ' + HUGE + ']]}', ".json")  # was ValueError
@example('{"a": [[1, 2, 3, 1' + "0" * 400 + ']]}', ".json")  # was OverflowError
@example('image,x0,y0,x1,y1\n"' + "a" * 200000 + '",1,2,3,4\n', ".csv")  # was csv.Error (field limit)
def test_load_boxes_on_any_file_text_gives_boxes_or_a_convlens_error(box_dir, text, suffix):
    path = box_dir / f"any{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    boxes = refuses_cleanly(load_boxes, path)
    if boxes is not None:
        assert isinstance(boxes, dict) and all(isinstance(k, str) for k in boxes)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(10 ** 308, 10 ** 400)
    | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


@bounded(150)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values)
@example({"a": [[1, 2, 3, 10 ** 400]]})  # was OverflowError
@example({"a": "x" * 300})  # a mask path too long for the file system: was OSError
def test_load_boxes_on_any_json_gives_checked_boxes_or_a_convlens_error(box_dir, value):
    """Any JSON document (huge ints, NaN, nested lists, strings naming no mask) as a file and as a dict."""
    path = box_dir / "doc.json"
    path.write_text(json.dumps(value), encoding="utf-8", errors="surrogatepass")
    for given_boxes in (path, value):
        boxes = refuses_cleanly(load_boxes, given_boxes)
        if boxes is None:
            continue
        for regions in boxes.values():
            for region_list in (regions.values() if isinstance(regions, dict) else [regions]):
                for b in region_list:
                    assert len(b) == 4 and all(math.isfinite(v) for v in b) and b[0] < b[2] and b[1] < b[3]


# -- kernels -----------------------------------------------------------------------------------

finite = st.floats(min_value=-3.4e38, max_value=3.4e38)  # float32's range: beyond it a kernel is refused


@st.composite
def matrices(draw, min_side=1, max_side=6):
    rows, cols = draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side))
    return np.array(draw(st.lists(st.lists(finite, min_size=cols, max_size=cols), min_size=rows, max_size=rows)))


def matrix_text(rows: list[list[float]], style: str) -> str:
    cells = [[repr(float(v)) for v in row] for row in rows]
    if style == "json":
        return json.dumps(rows)
    entry, row_sep, wrap = {"comma": (",", ";", "{}"), "spaced": (", ", " ; ", "{}"),
                            "lines": (" ", "\n", "{}"), "matlab": (" ", "; ", "[{}]"),
                            "trailing": (",", ";", "{};")}[style]
    return wrap.format(row_sep.join(entry.join(r) for r in cells))


STYLES = ["comma", "spaced", "lines", "matlab", "trailing", "json"]


@bounded(200)
@given(matrices(), st.sampled_from(STYLES))
def test_kernel_matrix_text_parses_back_to_the_same_matrix(m, style):
    name, parsed = parse_kernel(matrix_text(m.tolist(), style))
    assert name == "custom" and parsed.shape == m.shape
    np.testing.assert_array_equal(parsed, m)  # repr() of a float reads back exactly


@bounded(100)
@given(st.lists(st.lists(st.integers(-9, 9), min_size=1, max_size=5), min_size=2, max_size=5),
       st.sampled_from(["comma", "lines", "json"]))
def test_kernel_with_ragged_rows_is_a_spec_error(rows, style):
    assume(len({len(r) for r in rows}) > 1)
    with pytest.raises(SpecError, match="ragged"):
        parse_kernel(matrix_text(rows, style))


@bounded(100)
@given(matrices(max_side=4), st.sampled_from(["nan", "inf", "-inf", "1e999", "1" + "0" * 400 + "/1"]),
       st.data())
def test_kernel_with_a_non_finite_entry_is_a_spec_error(m, bad, data):
    rows = [[repr(float(v)) for v in row] for row in m.tolist()]
    r, c = data.draw(st.integers(0, len(rows) - 1)), data.draw(st.integers(0, len(rows[0]) - 1))
    rows[r][c] = bad
    with pytest.raises(SpecError):
        parse_kernel(";".join(",".join(row) for row in rows))


@bounded(100)
@given(st.sampled_from(kernel_names(aliases=True)), st.data())
def test_kernel_names_match_in_any_case_and_separator(name, data):
    sep = data.draw(st.sampled_from(["-", "_", " ", ""]))
    typed = "".join(ch.upper() if data.draw(st.booleans()) else ch for ch in name.replace("-", sep))
    got, m = parse_kernel(f" {typed} ")
    assert got == KERNEL_ALIASES.get(name, name)
    np.testing.assert_array_equal(m, KERNELS[name])


# -- arch specs --------------------------------------------------------------------------------

size = st.integers(1, 512).map(str)
conv_tok = st.builds(lambda n, k, v: f"conv{n}{k}{v}", size,
                     st.sampled_from(["", "k1", "k3", "k5", "k7"]), st.sampled_from(["", "v"]))
fc_tok = size.map(lambda n: f"fc{n}")
drop_tok = st.one_of(st.just("drop0"), st.integers(0, 999).map(lambda p: f"drop0.{p:03d}"),
                     st.integers(0, 99).map(lambda p: f"drop.{p}"))
other_tok = st.one_of(st.sampled_from(["pool", "maxpool", "avgpool", "gap", "gmp", "bn", "relu", "sigmoid", "tanh"]),
                      st.builds(lambda kind, k: f"{kind}{k}", st.sampled_from(["pool", "maxpool", "avgpool"]),
                                st.integers(1, 8)),
                      drop_tok)


@st.composite
def arch_specs(draw):
    tokens = draw(st.lists(st.one_of(conv_tok, fc_tok, other_tok), max_size=8))
    tokens.insert(draw(st.integers(0, len(tokens))), draw(st.one_of(conv_tok, fc_tok)))  # one layer at least
    return "-".join(tokens)


def random_case(data, text: str) -> str:
    return "".join(ch.upper() if data.draw(st.booleans()) else ch for ch in text)


@bounded(200)
@given(arch_specs(), st.data())
def test_arch_spec_from_valid_tokens_parses_and_its_canonical_spec_is_idempotent(spec, data):
    typed = data.draw(st.sampled_from(["", " ", "\t"])) + random_case(data, spec) \
        + data.draw(st.sampled_from(["", " "]))
    info = parse_arch(typed)
    assert info == ArchInfo("spec", spec)  # canonical: lower case, stripped, tokens as given
    assert parse_arch(info.spec) == info


@bounded(100)
@given(arch_specs(), st.sampled_from(["", "drop1.0", "drop1", "conv0", "fc0", "conv16k0", "pool0", "conv16x",
                                      "dropout", "fc-1", "conv" + "9" * 5000]), st.data())
def test_arch_spec_with_a_bad_token_is_a_spec_error_naming_arch(spec, bad, data):
    tokens = spec.split("-")
    tokens.insert(data.draw(st.integers(0, len(tokens))), bad)
    with pytest.raises(SpecError) as info:
        parse_arch("-".join(tokens))
    assert info.value.param == "arch" and str(info.value).startswith("arch")


@bounded(30)
@given(st.sampled_from(["effnet-lite0", "EfficientNet-Lite0", "builtin", " effnet "]),
       st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True))
def test_transfer_arch_names_parse(builtin, timm_name):
    assert parse_arch(builtin) == ArchInfo("transfer", BUILTIN, "tf_efficientnet_lite0")
    assert parse_arch(f"timm:{timm_name}") == ArchInfo("transfer", f"timm:{timm_name}", timm_name)


# -- augment specs -----------------------------------------------------------------------------

FLIPS = {"h": "h", "v": "v", "hv": "vh", "vh": "vh", "none": ""}


@st.composite
def augment_values(draw):
    keys = draw(st.lists(st.sampled_from([*_LIMITS, "flip", "fill"]), unique=True, max_size=8))
    values = {}
    for key in keys:
        if key == "flip":
            values[key] = draw(st.sampled_from(sorted(FLIPS)))
        elif key == "fill":
            values[key] = draw(st.sampled_from(["reflect", "border", "zeros"]))
        else:
            lo, hi = _LIMITS[key]
            values[key] = draw(st.floats(lo, hi))
    return values


@bounded(200)
@given(augment_values(), st.data())
def test_augment_spec_parses_to_its_values_and_the_canonical_spec_round_trips(values, data):
    tokens = [f"{random_case(data, k)}{data.draw(st.sampled_from(['=', ' = ']))}"
              f"{repr(v) if isinstance(v, float) else random_case(data, v)}" for k, v in values.items()]
    aug = parse_augment(data.draw(st.sampled_from([",", ", ", " ,"])).join(tokens))
    expected = Augment(**{k: FLIPS[v] if k == "flip" else v for k, v in values.items()})
    assert aug == expected
    assert parse_augment(aug.spec) == aug  # every digit survives the canonical spec
    assert parse_augment(parse_augment(aug.spec).spec).spec == aug.spec


@bounded(100)
@given(st.sampled_from(sorted(_LIMITS)), st.data())
def test_augment_values_outside_their_limits_are_spec_errors(key, data):
    lo, hi = _LIMITS[key]
    bad = data.draw(st.one_of(st.floats(max_value=lo, exclude_max=True, allow_nan=False),
                              st.floats(min_value=hi, exclude_min=True), st.just(math.nan)))
    with pytest.raises(SpecError, match=key):
        parse_augment(f"{key}={bad!r}")


# -- channels ----------------------------------------------------------------------------------

@st.composite
def channel_specs(draw, n):
    """(text, expected channels) for parts all within ``n`` channels."""
    parts, expected = [], []
    for _ in range(draw(st.integers(1, 6))):
        a = draw(st.integers(0, n - 1))
        if draw(st.booleans()):
            b = draw(st.integers(a, n - 1))
            sep = draw(st.sampled_from(["-", ":", "..", " - "]))
            parts.append(f"{a}{sep}{b}")
            expected.extend(range(a, b + 1))
        else:
            parts.append(str(a))
            expected.append(a)
    return draw(st.sampled_from([",", ", "])).join(parts), list(dict.fromkeys(expected))


@bounded(200)
@given(st.integers(1, 128).flatmap(lambda n: st.tuples(st.just(n), channel_specs(n))))
def test_channel_ranges_give_the_channels_in_order_without_repeats(args):
    n, (text, expected) = args
    assert parse_channels(text, n) == expected
    assert parse_channels(text, n, strict=False) == expected
    assert parse_channels(expected, n) == expected


@bounded(150)
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), channel_specs(n))),
       st.integers(0, 10 ** 12), st.booleans(), st.booleans(), st.data())
def test_channels_out_of_range_are_errors_when_strict_and_dropped_otherwise(args, past, as_range, last, data):
    """Including ranges reaching 10**12 channels past the end (answered at once, not by listing them)."""
    n, (text, expected) = args
    start = data.draw(st.integers(0, n - 1)) if as_range else n + past
    extra = f"{start}-{n + past}" if as_range else str(start)
    spec = f"{text},{extra}" if last else f"{extra},{text}"
    with pytest.raises(SpecError, match="out of range"):
        parse_channels(spec, n)
    in_range = list(range(start, n)) if as_range else []
    lenient = parse_channels(spec, n, strict=False)
    assert lenient == list(dict.fromkeys(expected + in_range if last else in_range + expected))


@bounded(60)
@given(st.integers(1, 64), st.integers(1, 1000), st.integers(0, 1000))
def test_backward_channel_ranges_are_spec_errors(n, a, gap):
    with pytest.raises(SpecError, match="backwards"):
        parse_channels(f"{a + gap}-{a - 1}", n)


# -- sizes -------------------------------------------------------------------------------------

@bounded(150)
@given(st.integers(1, 4096), st.integers(1, 4096), st.sampled_from(["x", "X", " x ", "x "]))
def test_data_size_wxh_round_trips(h, w, sep):
    assert data_size(f"{w}{sep}{h}") == (h, w)  # strings are width x height, the result (h, w)
    assert data_size((h, w)) == (h, w) and data_size(str(h)) == (h, h) and data_size(h) == (h, h)


@bounded(100)
@given(st.one_of(st.integers(max_value=0), st.integers(min_value=4097)), st.integers(1, 4096), st.booleans())
def test_data_size_out_of_range_is_a_data_error(bad, good, first):
    hw = (bad, good) if first else (good, bad)
    with pytest.raises(DataError):
        data_size(f"{hw[0]}x{hw[1]}")
    with pytest.raises(DataError):
        data_size(hw)


@pytest.mark.parametrize("size", [[math.inf, 8], [math.nan, 8], 8.5, object()])
def test_featurevis_size_that_is_no_pair_of_ints_is_a_spec_error(size):
    with pytest.raises(SpecError, match="size"):  # was OverflowError / TypeError
        vis_size(size, (64, 60))


def test_one_size_convention_for_featurevis_and_data():
    """``visualize --size 64x60`` means what ``train --size 64x60`` means: 64 wide, 60 tall."""
    assert vis_size("64x60", (1, 1)) == data_size("64x60") == (60, 64)


def test_data_size_of_an_array_is_a_data_error():
    with pytest.raises(DataError, match="size"):  # was ValueError (an array's truth value)
        data_size(np.array([28, 28]))


@bounded(150)
@given(st.integers(8, 2048), st.integers(8, 2048), st.sampled_from(["x", "X", ",", " x "]))
def test_featurevis_size_wxh_round_trips(h, w, sep):
    """Text sizes are width x height, as everywhere (``--size`` of train, show-data, visualize)."""
    assert vis_size(f"{w}{sep}{h}", (64, 60)) == (h, w)
    assert vis_size((h, w), (64, 60)) == (h, w) and vis_size(str(h), (1, 1)) == (h, h)
    assert vis_size(None, (h, w)) == (h, w)


@bounded(100)
@given(st.one_of(st.integers(max_value=7), st.integers(min_value=2049)), st.integers(8, 2048))
def test_featurevis_size_out_of_range_is_a_spec_error(bad, good):
    for text in (f"{bad}x{good}", f"{good}x{bad}", str(bad)):
        with pytest.raises(SpecError, match="size"):
            vis_size(text, (64, 60))


# -- targets, metrics, methods -----------------------------------------------------------------

@bounded(100)
@given(st.lists(st.text(min_size=1, max_size=10).map(str.strip).filter(lambda s: s and "," not in s),
                min_size=1, max_size=6), st.sampled_from([",", ", ", " , "]))
def test_parse_targets_round_trips_a_comma_list(items, sep):
    assert parse_targets(sep.join(items)) == items
    assert parse_targets(items) == items


#: score's aliases also name the baselines ("center"), which are no metrics
METRIC_NAME_ALIASES = {k: v for k, v in METRIC_ALIASES.items() if v in METRICS}


def typed_names(canonical, aliases):
    """(typed name, canonical name): any case, ``_`` for ``-``, spaces around."""
    words = sorted(set(canonical) | set(aliases))

    @st.composite
    def draw_one(draw):
        word = draw(st.sampled_from(words))
        typed = "".join(ch.upper() if draw(st.booleans()) else ch for ch in word)
        return f" {typed} ", aliases.get(word, word)

    return draw_one()


@bounded(150)
@given(st.lists(typed_names(METRICS, METRIC_NAME_ALIASES), min_size=1, max_size=8))
def test_metric_lists_give_canonical_names_in_order_without_repeats(pairs):
    text = ",".join(t.replace("-", "_") if i % 2 else t for i, (t, _) in enumerate(pairs))
    assert parse_metrics(text) == list(dict.fromkeys(c for _, c in pairs))
    assert parse_metrics("all") == list(METRICS)


@bounded(150)
@given(st.lists(typed_names(METHODS, METHOD_ALIASES), min_size=1, max_size=8))
def test_method_lists_give_canonical_names_in_order_without_repeats(pairs):
    assert parse_methods(",".join(t for t, _ in pairs)) == list(dict.fromkeys(c for _, c in pairs))
    assert parse_methods([t for t, _ in pairs]) == list(dict.fromkeys(c for _, c in pairs))


@bounded(100)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz+-", min_size=1, max_size=12))
def test_unknown_metric_or_method_is_a_spec_error(word):
    if word not in set(METRICS) | set(METRIC_NAME_ALIASES) | {"all"}:
        with pytest.raises(SpecError, match="unknown metric"):
            parse_metrics(f"deletion,{word}")
    if word not in set(METHODS) | set(METHOD_ALIASES):
        with pytest.raises(SpecError, match="unknown method"):
            parse_methods(f"gradcam,{word}")


# -- boxes -------------------------------------------------------------------------------------

coordinate = st.floats(-1e6, 1e6, allow_nan=False)
box = st.tuples(st.lists(coordinate, min_size=2, max_size=2, unique=True).map(sorted),
                st.lists(coordinate, min_size=2, max_size=2, unique=True).map(sorted)
                ).map(lambda xy: [xy[0][0], xy[1][0], xy[0][1], xy[1][1]])
image_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-./ ,", min_size=1, max_size=16).filter(
    lambda s: s.strip() == s)
box_dicts = st.dictionaries(image_name, st.lists(box, min_size=1, max_size=4), min_size=1, max_size=5)


def write_csv(path, rows, header=("image", "x0", "y0", "x1", "y1")):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


@bounded(150)
@given(box_dicts)
def test_boxes_load_the_same_from_a_dict_json_and_csv(box_dir, boxes):
    as_json, as_csv = box_dir / "boxes.json", box_dir / "boxes.csv"
    as_json.write_text(json.dumps(boxes), encoding="utf-8")
    write_csv(as_csv, [[name, *map(repr, b)] for name, bs in boxes.items() for b in bs])
    assert load_boxes(boxes) == boxes
    assert load_boxes(as_json) == boxes
    assert load_boxes(as_csv) == boxes  # repr() of a float reads back exactly
    assert load_boxes(str(as_csv)) == boxes


@bounded(100)
@given(st.dictionaries(image_name, st.lists(st.tuples(box, st.sampled_from(["", " ", "243", "tabby cat", "7"])),
                                            min_size=1, max_size=5), min_size=1, max_size=4))
def test_boxes_csv_target_column_groups_boxes_per_target(box_dir, rows):
    path = box_dir / "targets.csv"
    write_csv(path, [[name, *map(repr, b), t] for name, bs in rows.items() for b, t in bs],
              header=("image", "x0", "y0", "x1", "y1", "target"))
    expected = {}
    for name, bs in rows.items():
        groups: dict = {}
        for b, t in bs:
            groups.setdefault(t.strip() or "*", []).append(b)
        expected[name] = groups["*"] if set(groups) == {"*"} else groups
    assert load_boxes(path) == expected


@bounded(150)
@given(box_dicts, st.sampled_from(["swap-x", "swap-y", "flat-x", "flat-y", "three", "five", "nan", "text"]),
       st.data())
def test_boxes_that_are_empty_inverted_or_of_the_wrong_arity_are_spec_errors(box_dir, boxes, flaw, data):
    name = data.draw(st.sampled_from(sorted(boxes)))
    i = data.draw(st.integers(0, len(boxes[name]) - 1))
    x0, y0, x1, y1 = boxes[name][i]
    bad = {"swap-x": [x1, y0, x0, y1], "swap-y": [x0, y1, x1, y0], "flat-x": [x0, y0, x0, y1],
           "flat-y": [x0, y0, x1, y0], "three": [x0, y0, x1], "five": [x0, y0, x1, y1, y1],
           "nan": [x0, y0, x1, math.nan], "text": [x0, y0, "wide", y1]}[flaw]
    broken = {k: [list(b) for b in v] for k, v in boxes.items()}
    broken[name][i] = bad
    with pytest.raises(SpecError, match="boxes"):
        load_boxes(broken)
    as_json = box_dir / "broken.json"
    as_json.write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(SpecError, match="boxes"):
        load_boxes(as_json)
    if len(bad) == 4:  # a CSV row always has four cells
        as_csv = box_dir / "broken.csv"
        write_csv(as_csv, [[k, *map(str, b)] for k, bs in broken.items() for b in bs])
        with pytest.raises(SpecError, match="boxes"):
            load_boxes(as_csv)
