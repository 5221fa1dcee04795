"""The "files" source (your own data: a manifest or an ImageFolder) on files the tests write."""
from __future__ import annotations

import csv
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from mmfsl_jax.data.sampler import EpisodeSampler
from mmfsl_jax.data.sources import files, omniglot
from mmfsl_jax.errors import UserError
from mmfsl_jax.run import config as config_lib
from mmfsl_jax.run import data as run_data

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220),
           "yellow": (230, 210, 40), "purple": (140, 50, 190), "cyan": (30, 190, 200),
           "orange": (240, 140, 20), "grey": (128, 128, 128)}
PER_CLASS = 5
SIZE = 8


def pixels(colour: str, i: int) -> np.ndarray:
  """8x8 uint8 RGB: the class colour, with example i's own dark pixel (distinct images)."""
  image = np.tile(np.array(COLOURS[colour], np.uint8), (SIZE, SIZE, 1))
  image[i // SIZE, i % SIZE] = 0
  return image


def caption(colour: str, i: int) -> str:
  return f"a {colour} square, number {i}"


def write_images(root: pathlib.Path, classes=tuple(COLOURS), per_class=PER_CLASS,
                 captions=True) -> list[dict]:
  """root/<class>/<i>.png (and <i>.txt captions); the rows of a manifest in root's parent."""
  rows = []
  for colour in classes:
    (root / colour).mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
      Image.fromarray(pixels(colour, i)).save(root / colour / f"{i}.png")
      if captions:
        (root / colour / f"{i}.txt").write_text(caption(colour, i) + "\n")
      rows.append({"image": f"{root.name}/{colour}/{i}.png", "text": caption(colour, i),
                   "label": colour})
  return rows


def write_table(path: pathlib.Path, rows: list[dict], columns=None) -> pathlib.Path:
  columns = columns or list(rows[0])
  if path.suffix in (".csv", ".tsv"):
    with path.open("w", newline="") as f:
      writer = csv.writer(f, delimiter="," if path.suffix == ".csv" else "\t")
      writer.writerow(columns)
      writer.writerows([[row[c] for c in columns] for row in rows])
  elif path.suffix == ".json":
    path.write_text(json.dumps([{c: row[c] for c in columns} for row in rows], indent=1))
  else:
    path.write_text("".join(json.dumps({c: row[c] for c in columns}) + "\n" for row in rows))
  return path


@pytest.fixture
def data(tmp_path):
  """tmp_path/images/<colour>/<i>.png + .txt, and tmp_path/manifest.csv over them."""
  rows = write_images(tmp_path / "images")
  return tmp_path, rows, write_table(tmp_path / "manifest.csv", rows)


def splits_of(manifest, tmp_path, **kwargs):
  kwargs.setdefault("image_size", SIZE)
  kwargs.setdefault("cache_dir", tmp_path / "cache")
  return files.files_splits(manifest, **kwargs)


def assert_same(a: dict, b: dict):
  assert list(a) == list(b)
  for name in a:
    x, y = a[name], b[name]
    assert x.class_names == y.class_names and list(x.examples) == list(y.examples)
    np.testing.assert_array_equal(x.labels, y.labels)
    for m in x.examples:
      np.testing.assert_array_equal(x.examples[m], y.examples[m])
    assert list(x.class_texts) == list(y.class_texts)
    for m in x.class_texts:
      np.testing.assert_array_equal(x.class_texts[m], y.class_texts[m])


# ---------------------------------------------------------------------------------------------
# Formats


def test_csv_tsv_jsonl_json_and_image_folder_give_the_same_datasets(data, monkeypatch):
  tmp_path, rows, manifest = data
  lists = dict(train_classes=("red", "green", "blue", "yellow"), val_classes=("purple",),
               test_classes=("cyan", "orange", "grey"))
  reference = splits_of(manifest, tmp_path, cache_dir=tmp_path / "c0", **lists)
  for i, name in enumerate(("manifest.tsv", "manifest.jsonl", "manifest.json")):
    other = write_table(tmp_path / name, rows)
    assert_same(splits_of(other, tmp_path, cache_dir=tmp_path / f"c{i + 1}", **lists), reference)
  folder = splits_of(tmp_path / "images", tmp_path, cache_dir=tmp_path / "c9", **lists)
  assert_same(folder, reference)
  monkeypatch.setattr(files, "_PARALLEL_FROM", 2)  # decoded in threads: the same arrays
  assert_same(splits_of(manifest, tmp_path, cache_dir=tmp_path / "c10", **lists), reference)

  train = reference["train"]
  assert train.class_names == ("blue", "green", "red", "yellow")  # sorted within a split
  assert train.examples["image"].shape == (4 * PER_CLASS, SIZE, SIZE, 3)
  assert train.examples["image"].dtype == np.float32 and train.examples["text"].dtype == object
  assert train.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5  # class by class
  np.testing.assert_allclose(train.examples["image"][6], pixels("green", 1) / 255.0, atol=1e-7)
  assert train.examples["text"][6] == caption("green", 1)
  assert reference["val"].num_examples == PER_CLASS and reference["test"].num_classes == 3
  assert reference["train"].class_texts == {}


def test_only_the_modalities_asked_for_are_read(tmp_path):
  rows = [{"caption": f"word{i} thing", "cls": f"c{i % 3}"} for i in range(9)]
  manifest = write_table(tmp_path / "text_only.jsonl", rows)  # no image column, no images
  splits = splits_of(manifest, tmp_path, text_column="caption", label_column="cls",
                     modalities=("text",), train_classes=("c0", "c1"), test_classes=("c2",))
  assert list(splits) == ["train", "test"]
  assert list(splits["train"].examples) == ["text"]
  assert splits["train"].examples["text"].tolist()[:2] == ["word0 thing", "word3 thing"]
  # image only: an ImageFolder without captions, and a manifest without a text column
  write_images(tmp_path / "bare", classes=("red", "blue"), per_class=2, captions=False)
  folder = splits_of(tmp_path / "bare", tmp_path, modalities=("image",),
                     split_fractions=(0.5, 0.5, 0.0), class_texts="/no/such/file.csv")
  assert list(folder["train"].examples) == ["image"] and folder["train"].class_texts == {}
  image_rows = [{"image": f"bare/{c}/{i}.png", "label": c} for c in ("red", "blue")
                for i in range(2)]
  manifest = write_table(tmp_path / "images_only.csv", image_rows)
  assert_same(splits_of(manifest, tmp_path, modalities=("image",),
                        split_fractions=(0.5, 0.5, 0.0)), folder)
  with pytest.raises(UserError, match=r"no column 'text' .*columns are 'image', 'label'"):
    splits_of(manifest, tmp_path)


def test_rows_differing_only_in_a_column_not_read_are_not_duplicates(tmp_path):
  """Read as text only, two examples with the same caption but their own images are two
  examples (an exported image-and-text set read as text); the same row twice is refused."""
  rows = [{"image": f"{i}.png", "text": "a red square", "label": "red"} for i in range(2)]
  manifest = write_table(tmp_path / "m.csv", rows)
  read = lambda m: files.files_dataset(m, modalities=("text",), cache_dir=tmp_path / "cache")
  assert read(manifest).examples["text"].tolist() == ["a red square"] * 2
  with pytest.raises(UserError, match=r"row 3 \(line 4\): the same text and label as "
                                      r".*row 1 \(line 2\) \(and the same other columns\)"):
    read(write_table(tmp_path / "twice.csv", rows + rows[:1]))


def test_image_modes_are_converted_to_rgb_and_resized(tmp_path):
  d = tmp_path / "modes"
  d.mkdir()
  grey = np.full((8, 8), 100, np.uint8)
  Image.fromarray(grey).save(d / "grey.png")                             # L
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 255, 128                                  # half-transparent red
  Image.fromarray(rgba).save(d / "rgba.png")
  Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(d / "deep.png")  # 16-bit grey
  Image.fromarray(pixels("blue", 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(
      d / "palette.gif")
  checker = ((np.indices((16, 16)).sum(0) % 2) * 255).astype(np.uint8)
  Image.fromarray(np.stack([checker] * 3, -1)).save(d / "checker.bmp")    # RGB, 16x16
  Image.new("RGB", (4, 8), COLOURS["red"]).save(d / "narrow.jpg", quality=95)  # 4 wide, 8 high
  names = ["grey.png", "rgba.png", "deep.png", "palette.gif", "checker.bmp", "narrow.jpg"]
  images = files.load_images([d / n for n in names], 8, cache_dir=tmp_path / "cache")
  assert images.shape == (6, 8, 8, 3) and images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0
  np.testing.assert_allclose(images[0], 100 / 255, atol=1e-6)            # grey in all channels
  # RGBA on white: red 255, green and blue 255 * (1 - 128/255) = 127
  np.testing.assert_allclose(images[1][..., 0], 1.0, atol=1e-6)
  np.testing.assert_allclose(images[1][..., 1:], 127 / 255, atol=1.5 / 255)
  np.testing.assert_allclose(images[2], round(40000 / 257) / 255, atol=1e-6)
  np.testing.assert_allclose(images[3], pixels("blue", 0) / 255, atol=1e-6)
  # bilinear with antialiasing halves a 1-pixel checkerboard to grey, not to black or white
  np.testing.assert_allclose(images[4][1:-1, 1:-1], 0.5, atol=0.03)
  np.testing.assert_allclose(images[5], np.broadcast_to(np.array(COLOURS["red"]) / 255,
                                                        (8, 8, 3)), atol=6 / 255)  # stretched


def test_ink_reads_dark_strokes_on_white_as_omniglot_does(tmp_path):
  """color="ink": one channel, the luminance inverted (dark 1.0, white 0.0), resized by
  omniglot.ink_image with the filter asked for; cached apart from the RGB reading."""
  drawing = np.full((35, 35, 3), 255, np.uint8)
  drawing[5:30, 14:21] = (0, 0, 0)                        # a black stroke
  drawing[5:30, 28:35] = (255, 0, 0)                      # a red one: luminance 76
  Image.fromarray(drawing).save(tmp_path / "drawing.png")
  path, cache_dir = [tmp_path / "drawing.png"], tmp_path / "cache"
  ink = files.load_images(path, 7, cache_dir=cache_dir, color="ink", resize="box")
  assert ink.shape == (1, 7, 7, 1) and ink.dtype == np.float32
  np.testing.assert_allclose(ink[0, 1:6, 3, 0], 1.0)      # the black stroke's 5x5 boxes
  np.testing.assert_allclose(ink[0, 1:6, 6, 0], round(255 - 76) / 255, atol=1e-6)
  np.testing.assert_allclose(ink[0, :, [0, 1]], 0.0)      # paper
  luminance = np.asarray(Image.open(tmp_path / "drawing.png").convert("L"), np.float32) / 255
  for resize in ("box", "bilinear"):                      # Omniglot's pixels, to 8 bits
    expected = omniglot.ink_image(luminance, 7, resize)
    got = files.load_images(path, 7, cache_dir=cache_dir, color="ink", resize=resize)[0]
    assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-6
  rgb = files.load_images(path, 7, cache_dir=cache_dir)
  assert rgb.shape == (1, 7, 7, 3) and rgb[0, 0, 0].tolist() == [1.0, 1.0, 1.0]
  assert len(list(cache_dir.glob("files_7px_*.npz"))) == 3
  assert files.load_images([], 7, color="ink").shape == (0, 7, 7, 1)
  with pytest.raises(UserError, match="unknown image color 'grey'; choose one of rgb, ink"):
    files.load_images(path, 7, color="grey")
  with pytest.raises(UserError, match="unknown resize filter 'cubic'"):
    files.files_splits(tmp_path / "m.csv", resize="cubic")


# ---------------------------------------------------------------------------------------------
# Splits


def test_split_column(data):
  tmp_path, rows, _ = data
  split = {"red": "train", "green": "Train", "blue": "train", "yellow": "test",
           "purple": "test", "cyan": "train", "orange": "test", "grey": "train"}
  manifest = write_table(tmp_path / "split.tsv",
                         [{**row, "part": split[row["label"]]} for row in rows])
  splits = splits_of(manifest, tmp_path, split_column="part", split_fractions=(1, 0, 0))
  assert list(splits) == ["train", "test"]  # no val rows: val left out
  assert splits["train"].class_names == ("blue", "cyan", "green", "grey", "red")
  assert splits["test"].class_names == ("orange", "purple", "yellow")
  bad = [{**row, "part": "validation" if row["label"] == "grey" else "train"} for row in rows]
  with pytest.raises(UserError, match=r"bad\.csv', row 36 \(line 37\): split 'validation' in "
                                      r"column 'part' is not one of train, val, test"):
    splits_of(write_table(tmp_path / "bad.csv", bad), tmp_path, split_column="part")
  mixed = [{**row, "part": "val" if row["image"].endswith("3.png") else "train"} for row in rows]
  with pytest.raises(UserError, match=r"row 4 .*class 'red' is in split 'val' here but in "
                                      r"'train' at .*row 1"):
    splits_of(write_table(tmp_path / "mixed.csv", mixed), tmp_path, split_column="part")
  with pytest.raises(UserError, match="give one of them"):
    splits_of(manifest, tmp_path, split_column="part", train_classes=("red",))
  with pytest.raises(UserError, match="needs a manifest file"):
    splits_of(tmp_path / "images", tmp_path, split_column="part")
  with pytest.raises(UserError, match="no class .* is in the train split"):
    only_test = [{**row, "part": "test"} for row in rows]
    splits_of(write_table(tmp_path / "t.csv", only_test), tmp_path, split_column="part")


def test_class_lists(data):
  tmp_path, _, manifest = data
  splits = splits_of(manifest, tmp_path, modalities=("text",),
                     train_classes=("red", "green", "blue", "yellow", "purple"),
                     test_classes=("cyan", "orange", "grey"))
  assert list(splits) == ["train", "test"]
  with pytest.raises(UserError, match=r"class\(es\) 'grey', 'orange' are in none of the class "
                                      r"lists; with only train_classes, test_classes given, list "
                                      r"them there or also give val_classes"):
    splits_of(manifest, tmp_path, modalities=("text",),
              train_classes=("red", "green", "blue", "yellow", "purple"), test_classes=("cyan",))
  with pytest.raises(UserError, match=r"val_classes names class\(es\) 'pink' that the data does "
                                      r"not have; its classes are 'blue', 'cyan'"):
    splits_of(manifest, tmp_path, modalities=("text",), val_classes=("pink",))
  with pytest.raises(UserError, match="'red' is in both train_classes and test_classes"):
    splits_of(manifest, tmp_path, modalities=("text",), train_classes=tuple(COLOURS),
              test_classes=("red",))
  with pytest.raises(UserError, match="no class .* is in the train split"):
    splits_of(manifest, tmp_path, modalities=("text",), val_classes=tuple(COLOURS))


def test_seeded_fraction_split(data):
  tmp_path, _, manifest = data
  kwargs = dict(modalities=("text",), split_fractions=(0.5, 0.25, 0.25))
  a = splits_of(manifest, tmp_path, split_seed=3, **kwargs)
  b = splits_of(manifest, tmp_path, split_seed=3, **kwargs)
  assert_same(a, b)
  assert [a[s].num_classes for s in ("train", "val", "test")] == [4, 2, 2]
  names = [set(a[s].class_names) for s in ("train", "val", "test")]
  assert set().union(*names) == set(COLOURS) and sum(map(len, names)) == len(COLOURS)
  seeds = {tuple(splits_of(manifest, tmp_path, split_seed=s, **kwargs)["train"].class_names)
           for s in range(6)}
  assert len(seeds) > 1
  # each split with a positive fraction gets a class; a zero fraction leaves its split out
  tiny = splits_of(manifest, tmp_path, modalities=("text",), split_fractions=(0.9, 0.05, 0.05))
  assert [tiny[s].num_classes for s in ("train", "val", "test")] == [6, 1, 1]
  no_val = splits_of(manifest, tmp_path, modalities=("text",), split_fractions=(0.75, 0, 0.25))
  assert list(no_val) == ["train", "test"] and no_val["test"].num_classes == 2
  assert files._fraction_counts(3, (0.6, 0.2, 0.2)) == [1, 1, 1]
  assert files._fraction_counts(10, (0.64, 0.16, 0.2)) == [6, 2, 2]
  for bad in ((0.5, 0.5), (0.7, 0.4, -0.1), (0.5, 0.2, 0.2), (0.6, float("nan"), 0.4), "abc"):
    with pytest.raises(UserError, match="3 non-negative numbers .* sum to 1"):
      splits_of(manifest, tmp_path, modalities=("text",), split_fractions=bad)
  with pytest.raises(UserError, match="gives train no classes"):
    splits_of(manifest, tmp_path, modalities=("text",), split_fractions=(0, 0.5, 0.5))
  two = write_table(tmp_path / "two.csv", [{"text": "x y", "label": "a"},
                                           {"text": "y z", "label": "b"}])
  with pytest.raises(UserError, match=r"2 class\(es\) cannot fill the 3 splits"):
    splits_of(two, tmp_path, modalities=("text",))


# ---------------------------------------------------------------------------------------------
# Cache and class texts


def test_images_are_decoded_once_then_read_from_the_cache(data, monkeypatch):
  tmp_path, rows, manifest = data
  decoded = []
  real = files.decode_image
  monkeypatch.setattr(files, "decode_image", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
  first = splits_of(manifest, tmp_path)
  assert len(decoded) == len(rows)
  assert len(list((tmp_path / "cache").glob("files_8px_*.npz"))) == 1
  assert_same(splits_of(manifest, tmp_path), first)
  assert len(decoded) == len(rows)                       # nothing decoded the second time
  for row in rows:                                       # the images are gone: still works
    (tmp_path / row["image"]).unlink()
  with pytest.warns(UserWarning, match=r"40 image file\(s\) are gone"):
    assert_same(splits_of(manifest, tmp_path), first)
  assert len(decoded) == len(rows)
  # a changed image (new size and mtime) is decoded again, with every other image
  write_images(tmp_path / "images")
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images/red/0.png")
  os.utime(tmp_path / "images/red/0.png", ns=(1, 1))
  again = splits_of(manifest, tmp_path)
  assert len(decoded) == 2 * len(rows)
  red = [s for s in again.values() if "red" in s.class_names][0]
  first_red = int(np.flatnonzero(red.labels == red.class_names.index("red"))[0])
  assert red.examples["image"][first_red].max() == 0.0
  splits_of(manifest, tmp_path, image_size=4)          # another size: another cache file
  assert len(decoded) == 3 * len(rows)
  assert len(list((tmp_path / "cache").glob("files_4px_*.npz"))) == 1


def test_class_texts(data):
  tmp_path, _, manifest = data
  texts = [{"label": c, "text": f"the colour {c}"} for c in reversed(COLOURS)]
  path = write_table(tmp_path / "classes.tsv", texts)
  splits = splits_of(manifest, tmp_path, class_texts=path, modalities=("text",))
  for ds in splits.values():
    assert ds.class_texts["text"].tolist() == [f"the colour {c}" for c in ds.class_names]
    assert "the colour" not in " ".join(ds.examples["text"])
  with pytest.raises(UserError, match=r"no text for class\(es\) 'blue'; add a row"):
    splits_of(manifest, tmp_path, modalities=("text",),
              class_texts=write_table(tmp_path / "few.csv", [t for t in texts
                                                              if t["label"] != "blue"]))
  with pytest.raises(UserError, match=r"text for class\(es\) 'pink' that the data does not "
                                      r"have \(.*extra.jsonl', line 9\)"):
    splits_of(manifest, tmp_path, modalities=("text",), class_texts=write_table(
        tmp_path / "extra.jsonl", texts + [{"label": "pink", "text": "pink"}]))
  with pytest.raises(UserError, match=r"row 9 \(line 10\): class 'red' already has a text"):
    splits_of(manifest, tmp_path, modalities=("text",), class_texts=write_table(
        tmp_path / "twice.csv", texts + [{"label": "red", "text": "again"}]))
  with pytest.raises(UserError, match=r"row 1 \(line 2\): column 'text' is empty"):
    splits_of(manifest, tmp_path, modalities=("text",), class_texts=write_table(
        tmp_path / "blank.csv", [{"label": "grey", "text": " "}] + texts[1:]))
  with pytest.raises(UserError, match="class_texts file .*nothing.csv' does not exist"):
    splits_of(manifest, tmp_path, modalities=("text",), class_texts=tmp_path / "nothing.csv")
  with pytest.raises(UserError, match="class_texts file .* has no column 'label'"):
    splits_of(manifest, tmp_path, modalities=("text",), class_texts=write_table(
        tmp_path / "cols.csv", [{"name": "red", "text": "x"}]))


# ---------------------------------------------------------------------------------------------
# Errors


def test_manifest_errors(tmp_path):
  rows = write_images(tmp_path / "images", classes=("red", "blue", "green"), per_class=2)
  cases = []

  def case(name, content, pattern, **kwargs):
    path = tmp_path / name
    if isinstance(content, bytes):
      path.write_bytes(content)
    elif isinstance(content, str):
      path.write_text(content)
    else:
      write_table(path, content)
    cases.append((path, pattern, kwargs))

  case("empty.csv", "", r"empty.csv' is empty: it needs a header row")
  case("header.csv", "image,text,label\n\n", r"has a header but no data rows")
  case("empty.jsonl", "\n", r"empty.jsonl' is empty")
  case("latin1.csv", "image,text,label\nimages/red/0.png,caf\xe9,red\n".encode("latin-1"),
       r"cannot read manifest .*latin1.csv'.*readable UTF-8")
  case("manifest.txt", "x", r"unknown file type '.txt'; give a CSV .*or an ImageFolder")
  case("columns.csv", [{"path": r["image"], "text": r["text"], "label": r["label"]}
                       for r in rows],
       r"no column 'image' \(the image paths: pass image_column=<column>.*\); its columns are "
       r"'path', 'text', 'label'")
  case("label.csv", rows, r"no column 'class' \(each example's class", label_column="class")
  case("missing.csv", rows[:3] + [{**rows[3], "image": "images/blue/9.png"}] + rows[4:],
       r"missing.csv', row 4 \(line 5\): image file .*images/blue/9.png' does not exist")
  case("noimage.csv", rows[:1] + [{**rows[1], "image": ""}], r"row 2 .*column 'image' is empty")
  case("dir.csv", [{**rows[0], "image": "images/red"}] + rows[1:],
       r"row 1 .*image path .*images/red' is not a file")
  case("corrupt.csv", [{**rows[0], "image": "images/red/0.txt"}] + rows[1:],
       r"row 1 \(line 2\): cannot decode image file .*0.txt' \(UnidentifiedImageError")
  case("notext.csv", rows[:4] + [{**rows[4], "text": "  "}] + rows[5:],
       r"row 5 \(line 6\): column 'text' is empty; give every example a caption")
  case("nolabel.jsonl", rows[:2] + [{**rows[2], "label": ""}],
       r"nolabel.jsonl', line 3: column 'label' is empty")
  case("duplicate.csv", rows + [rows[2]],
       r"row 7 \(line 8\): the same image, text and label as .*row 3 \(line 4\)")
  case("fields.csv", "image,text,label\nimages/red/0.png,a,b,red\n",
       r"row 1 \(line 2\): 4 fields, but the header has 3 columns")
  case("repeat.csv", "image,text,image\na,b,c\n", r"column\(s\) 'image' more than once")
  case("bad.jsonl", json.dumps(rows[0]) + "\n{not json\n", r"bad.jsonl', line 2: not valid JSON")
  case("list.jsonl", json.dumps(rows[0]) + "\n[1, 2]\n",
       r"list.jsonl', line 2: expected a JSON object")
  case("nested.jsonl", [rows[0], {**rows[1], "text": ["a", "b"]}],
       r"line 2: column 'text' holds \[\"a\", \"b\"\]; give a string")
  case("lacking.jsonl", "".join(json.dumps(r) + "\n" for r in rows[:2])
       + json.dumps({"image": rows[2]["image"], "label": "blue"}) + "\n",
       r"lacking.jsonl', line 3: no 'text' key")
  for path, pattern, kwargs in cases:
    with pytest.raises(UserError, match=pattern):
      splits_of(path, tmp_path, split_fractions=(1, 0, 0), **kwargs)
  # decoded in threads, the error is still the first bad row's
  bad = [{**r, "image": "images/red/0.txt"} if i in (1, 4) else r for i, r in enumerate(rows)]
  with pytest.raises(UserError, match=r"row 2 \(line 3\): cannot decode"):
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(files, "_PARALLEL_FROM", 2)
      splits_of(write_table(tmp_path / "two_bad.csv", bad), tmp_path, split_fractions=(1, 0, 0))
  with pytest.raises(UserError, match=r"manifest .*absent.csv' does not exist"):
    splits_of(tmp_path / "absent.csv", tmp_path)
  with pytest.raises(UserError, match="no manifest given"):
    splits_of("", tmp_path)
  with pytest.raises(UserError, match="modality 'audio' has no kind"):
    splits_of(tmp_path / "x.csv", tmp_path, modalities=("audio",))
  with pytest.raises(UserError, match="distinct modality names"):
    splits_of(tmp_path / "x.csv", tmp_path, modalities=("image", "image"))
  with pytest.raises(UserError, match="image_size must be a positive integer"):
    splits_of(tmp_path / "x.csv", tmp_path, image_size=0)


def test_image_folder_errors(tmp_path):
  write_images(tmp_path / "ok", classes=("red", "blue"), per_class=2)
  (tmp_path / "ok/blue/1.txt").unlink()
  with pytest.raises(UserError, match=r"image .*ok/blue/1.png' has no caption '1.txt' beside "
                                      r"it"):
    splits_of(tmp_path / "ok", tmp_path, split_fractions=(1, 0, 0))
  (tmp_path / "ok/blue/1.txt").write_text("\n")
  with pytest.raises(UserError, match=r"caption .*ok/blue/1.txt' is empty"):
    splits_of(tmp_path / "ok", tmp_path, split_fractions=(1, 0, 0))
  (tmp_path / "ok/empty").mkdir()
  (tmp_path / "ok/empty/notes.md").write_text("nothing")
  with pytest.raises(UserError, match=r"class directory .*ok/empty' holds no image files"):
    splits_of(tmp_path / "ok", tmp_path, modalities=("image",), split_fractions=(1, 0, 0))
  (tmp_path / "flat").mkdir()
  Image.fromarray(pixels("red", 0)).save(tmp_path / "flat/0.png")
  with pytest.raises(UserError, match=r"ImageFolder .*flat' has no class directories"):
    splits_of(tmp_path / "flat", tmp_path)
  (tmp_path / "bad/red").mkdir(parents=True)
  (tmp_path / "bad/red/0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  with pytest.raises(UserError, match=r"cannot decode image file .*bad/red/0.png'"):
    splits_of(tmp_path / "bad", tmp_path, modalities=("image",), split_fractions=(1, 0, 0))


def test_the_sampler_names_a_class_that_is_too_small(tmp_path):
  rows = [{"text": f"w{i}", "label": c} for c, n in (("big", 5), ("small", 2)) for i in range(n)]
  manifest = write_table(tmp_path / "small.csv", rows)
  train = splits_of(manifest, tmp_path, modalities=("text",), split_fractions=(1, 0, 0))["train"]
  train = train.with_modality("text", np.zeros((train.num_examples, 1), np.int32))
  with pytest.raises(UserError, match=r"only 1 classes of the train split have that many "
                                      r"\(n_way=2 needed\); the smallest class, 'small', has 2.*"
                                      r"classes with fewer than 4: 'small' \(2\)$"):
    EpisodeSampler(train, n_way=2, k_shot=1, q_query=3, split_name="train")


# ---------------------------------------------------------------------------------------------
# run/data.py: the config's data.files section


def files_config(manifest, *overrides):
  config = config_lib.load_config("tiny")
  config_lib.apply_overrides(config, ["data.name=files", f"data.files.manifest={manifest}",
                                      "data.image_size=16", *overrides])
  return config


def test_the_config_builds_the_splits(data, monkeypatch):
  tmp_path, rows, _ = data
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  split = {c: s for c, s in zip(COLOURS, ["train"] * 4 + ["val"] * 2 + ["test"] * 2)}
  manifest = write_table(tmp_path / "m.jsonl", [{**r, "s": split[r["label"]]} for r in rows])
  texts = write_table(tmp_path / "ct.csv", [{"label": c, "text": f"all {c}"} for c in COLOURS])
  config = files_config(manifest, "data.files.split_column=s",
                        f"data.files.class_texts={texts}")
  assert run_data.dataset_channels("files") == 3 and run_data.train_augmentation(config) == "none"
  splits, info = run_data.prepare_splits(config)
  assert [splits[s].num_classes for s in ("train", "val", "test")] == [4, 2, 2]
  assert splits["train"].examples["image"].shape == (20, 16, 16, 3)
  assert splits["train"].examples["text"].dtype == np.int32 and info["text"].kind == "ids"
  assert splits["train"].class_texts["text"].shape[0] == 4
  assert list((tmp_path / "xdg" / "mmfsl_jax").glob("files_16px_*.npz"))
  image_only = files_config(manifest, "data.files.split_column=s", "data.modalities=('image',)",
                            "data.files.text_column=nothing")
  assert list(run_data.prepare_splits(image_only)[0]["val"].examples) == ["image"]
  default = files_config(tmp_path / "images")
  assert run_data.dataset_image_size(default) == 16
  with pytest.raises(UserError, match="data.name=files needs data.files.manifest"):
    run_data.build_splits(files_config(""))


@pytest.mark.slow
def test_train_and_evaluate_on_files(data, monkeypatch):
  from mmfsl_jax.run.evaluators.episodic import evaluate_workdir
  from mmfsl_jax.run.train import train_and_evaluate
  tmp_path, _, _ = data
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  config = files_config(tmp_path / "images", "data.files.split_fractions=(0.5, 0.25, 0.25)",
                        "task.n_way=2", "run.num_steps=2", "run.eval_every=2",
                        "run.checkpoint_every=2", "run.log_every=1", "run.val_episodes=2",
                        "eval.episodes=2")
  record = train_and_evaluate(config, tmp_path / "run", progress=False)
  assert record["step"] == 2 and np.isfinite(record["loss"])
  lines = [json.loads(l) for l in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
  assert any(l["split"] == "val" for l in lines)
  result = evaluate_workdir(tmp_path / "run")
  assert result["settings"]["dataset"] == "files" and 0.0 <= result["accuracy"]["mean"] <= 1.0
