""""shapes": the built-in multimodal few-shot benchmark, generated in-process from a seed.

Each class is a concept: a combination of four attributes,

    shape  (circle, square, triangle, diamond, hexagon, star)     seen in the image
    colour (red, green, blue, yellow, purple, cyan)               seen in the image
    fill   (solid, striped, outline)                              seen in the image
    sound  (hums, clicks, whistles, rings)                        never seen: text only

and each example is an RGB image of one object of that concept, paired with a caption.

How the design makes the modalities complementary:
- Images are ambiguous. The object varies in position, size and rotation, its colour is
  jittered, the background is tinted and noisy, and a smaller clutter object of random
  attributes shares the picture. Above all, concepts come in "twins": each visual combination
  (shape, colour, fill) belongs to two classes of the same split that differ only in their
  sound, so no image can tell twins apart.
- Captions are incomplete. A caption names each attribute independently with probability
  `mention_prob` (at least one), e.g. "a striped circle", "something red that hums". One
  caption rarely pins the concept down, and a support caption and a query caption often name
  different attributes.
- Together they are more than either: the image fixes the visual attributes of the concept
  and the caption, when it names the sound, separates twins.
Each class also has a complete description ("a red striped circle that hums"), its
class-level text.

Meta-train, meta-val and meta-test classes use disjoint visual combinations (so disjoint
classes); the default split is 64 / 16 / 20 classes, as for mini-ImageNet and CIFAR-FS.
Everything is a deterministic function of `seed`; the default build (100 classes x 40
examples, 32x32) takes about two seconds.
"""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
from PIL import Image, ImageDraw

from mmfsl_jax.data.dataset import ClassDataset
from mmfsl_jax.errors import UserError

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star")
COLOURS = {
    "red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 80, 220),
    "yellow": (230, 205, 35), "purple": (145, 55, 195), "cyan": (35, 195, 205)}
FILLS = ("solid", "striped", "outline")
SOUNDS = ("hums", "clicks", "whistles", "rings")
ATTRIBUTES = ("shape", "colour", "fill", "sound")


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
  """Knobs of the generator; the defaults are the benchmark."""
  image_size: int = 32
  examples_per_class: int = 40
  classes_per_split: tuple[int, int, int] = (64, 16, 20)  # train, val, test; each even (twins)
  mention_prob: float = 0.5
  colour_jitter: float = 30.0
  noise_std: float = 0.06
  clutter: int = 1
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Concept:
  shape: str
  colour: str
  fill: str
  sound: str

  def describe(self, mentioned=ATTRIBUTES) -> str:
    """'a red striped circle that hums'; only `mentioned` attributes are named."""
    colour = self.colour if "colour" in mentioned else None
    fill = self.fill if "fill" in mentioned else None
    noun = self.shape if "shape" in mentioned else ("thing" if colour or fill else "something")
    words = ["a"] if noun != "something" else []
    words += [w for w in (colour, fill, noun) if w]
    if "sound" in mentioned:
      words += ["that", self.sound]
    return " ".join(words)


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list:
  if shape == "star":
    points = [(radius if i % 2 == 0 else 0.45 * radius, math.pi * i / 5) for i in range(10)]
  else:
    sides = {"square": 4, "triangle": 3, "diamond": 4, "hexagon": 6}[shape]
    points = [(radius, 2 * math.pi * i / sides) for i in range(sides)]
    if shape == "square":
      points = [(r, t + math.pi / 4) for r, t in points]
    if shape == "diamond":  # a thin rhombus, unlike the square
      points = [(r * (1.0 if i % 2 == 0 else 0.55), t) for i, (r, t) in enumerate(points)]
  return [(cx + r * math.cos(t + angle), cy + r * math.sin(t + angle)) for r, t in points]


def _draw_object(canvas: Image.Image, rng: np.random.Generator, concept: Concept, radius: float,
                 jitter: float, background: tuple) -> None:
  size = canvas.size[0]
  cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
  angle = rng.uniform(0, 2 * math.pi)
  colour = np.clip(np.array(COLOURS[concept.colour]) + rng.normal(0, jitter, 3), 0, 255)
  colour = tuple(int(c) for c in colour)
  mask = Image.new("L", canvas.size, 0)
  draw = ImageDraw.Draw(mask)
  width = max(2, int(radius * 0.22))
  if concept.shape == "circle":
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if concept.fill == "outline":
      draw.ellipse(box, outline=255, width=width)
    else:
      draw.ellipse(box, fill=255)
  else:
    points = _polygon(concept.shape, cx, cy, radius, angle)
    if concept.fill == "outline":
      draw.polygon(points, outline=255, width=width)
    else:
      draw.polygon(points, fill=255)
  if concept.fill == "striped":
    period = max(4, int(radius * 0.5))
    yy, xx = np.mgrid[:size, :size]
    direction = rng.uniform(0, math.pi)
    stripes = ((xx * math.cos(direction) + yy * math.sin(direction)) // (period / 2)) % 2 == 0
    pixels = np.asarray(mask) * stripes
    outline = Image.new("L", canvas.size, 0)
    if concept.shape == "circle":
      ImageDraw.Draw(outline).ellipse((cx - radius, cy - radius, cx + radius, cy + radius),
                                      outline=255, width=max(1, width // 2))
    else:
      ImageDraw.Draw(outline).polygon(_polygon(concept.shape, cx, cy, radius, angle),
                                      outline=255, width=max(1, width // 2))
    mask = Image.fromarray(np.maximum(pixels, np.asarray(outline)).astype(np.uint8))
  canvas.paste(Image.new("RGB", canvas.size, colour), (0, 0), mask)


def render(concept: Concept, rng: np.random.Generator, cfg: ShapesConfig) -> np.ndarray:
  """One image float32 [S, S, 3] in [0, 1] of `concept` with clutter and noise."""
  big = cfg.image_size * 2  # draw at twice the size, then downsample (anti-aliasing)
  background = tuple(int(c) for c in rng.uniform(150, 245, 3))
  canvas = Image.new("RGB", (big, big), background)
  for _ in range(cfg.clutter):
    other = Concept(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(FILLS), "hums")
    _draw_object(canvas, rng, other, big * rng.uniform(0.12, 0.18), cfg.colour_jitter, background)
  _draw_object(canvas, rng, concept, big * rng.uniform(0.22, 0.36), cfg.colour_jitter, background)
  small = canvas.resize((cfg.image_size, cfg.image_size), Image.BOX)
  image = np.asarray(small, np.float32) / 255.0
  image = image + rng.normal(0.0, cfg.noise_std, image.shape)
  return np.clip(image, 0.0, 1.0).astype(np.float32)


def caption(concept: Concept, rng: np.random.Generator, mention_prob: float) -> str:
  """A caption naming a random, non-empty subset of the concept's attributes."""
  mentioned = [a for a in ATTRIBUTES if rng.random() < mention_prob]
  if not mentioned:
    mentioned = [ATTRIBUTES[rng.integers(len(ATTRIBUTES))]]
  return concept.describe(mentioned)


def split_concepts(cfg: ShapesConfig) -> dict[str, list[Concept]]:
  """Disjoint visual combinations per split, each given two different sounds (twins)."""
  for n in cfg.classes_per_split:
    if n % 2 or n < 2:
      raise UserError(f"classes_per_split must be even positive numbers (classes come in "
                       f"twins), got {cfg.classes_per_split}")
  visuals = list(itertools.product(SHAPES, COLOURS, FILLS))
  needed = sum(cfg.classes_per_split) // 2
  if needed > len(visuals):
    raise UserError(f"{sum(cfg.classes_per_split)} classes need {needed} visual combinations; "
                     f"only {len(visuals)} exist")
  rng = np.random.default_rng([cfg.seed, 0])
  order = rng.permutation(len(visuals))[:needed]
  splits, start = {}, 0
  for name, n in zip(("train", "val", "test"), cfg.classes_per_split):
    concepts = []
    for v in order[start:start + n // 2]:
      shape, colour, fill = visuals[v]
      for sound in rng.choice(SOUNDS, size=2, replace=False):
        concepts.append(Concept(shape, colour, fill, str(sound)))
    splits[name] = concepts
    start += n // 2
  return splits


def make_split(concepts: list[Concept], cfg: ShapesConfig, split_seed: int) -> ClassDataset:
  rng = np.random.default_rng([cfg.seed, 1, split_seed])
  n = cfg.examples_per_class
  images = np.empty((len(concepts) * n, cfg.image_size, cfg.image_size, 3), np.float32)
  captions = []
  for c, concept in enumerate(concepts):
    for i in range(n):
      images[c * n + i] = render(concept, rng, cfg)
      captions.append(caption(concept, rng, cfg.mention_prob))
  labels = np.repeat(np.arange(len(concepts), dtype=np.int32), n)
  names = tuple(c.describe() for c in concepts)
  return ClassDataset(
      examples={"image": images, "text": np.asarray(captions, dtype=object)},
      labels=labels, class_names=names,
      class_texts={"text": np.asarray(names, dtype=object)})


def shapes_splits(cfg: ShapesConfig | None = None, **overrides) -> dict[str, ClassDataset]:
  """The benchmark's {"train", "val", "test"} ClassDatasets (text as raw strings)."""
  cfg = dataclasses.replace(cfg or ShapesConfig(), **overrides)
  if cfg.image_size < 16:
    raise UserError(f"image_size must be at least 16, got {cfg.image_size}")
  if not 0.0 < cfg.mention_prob <= 1.0:
    raise UserError(f"mention_prob must be in (0, 1], got {cfg.mention_prob}")
  concepts = split_concepts(cfg)
  return {name: make_split(c, cfg, i) for i, (name, c) in enumerate(concepts.items())}
