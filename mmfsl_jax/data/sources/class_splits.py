"""The class tables and class-split rules of the few-shot benchmarks built on TFDS datasets.

- CIFAR-FS (Bertinetto et al. 2019): CIFAR_FS_VAL (16) and CIFAR_FS_TEST (20) classes, the
  other 64 train; FC100 (Oreshkin et al. 2018): by CIFAR-100 superclass, FC100_VAL and
  FC100_TEST (4 each), the other 12 train.
- CUB (and this library's flowers102 split): a class's index in sorted order, even -> train,
  1 mod 4 -> val, 3 mod 4 -> test (`class_split_by_index`).
- `clean_class_name`: a class label as words, the class-level text.
"""
from __future__ import annotations

import re

# CIFAR-100 fine classes in label order, grouped by superclass (coarse label order).
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
# Fine label order of CIFAR-100 (and of TFDS cifar100's "label"): alphabetical.
CIFAR100_CLASSES: tuple[str, ...] = tuple(sorted(
    name for names in CIFAR100_SUPERCLASSES.values() for name in names))
CIFAR100_SUPERCLASS_OF = {name: sc for sc, names in CIFAR100_SUPERCLASSES.items()
                          for name in names}

CIFAR_FS_VAL = ("beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle",
                "butterfly", "sea", "camel", "cattle", "crab", "crocodile", "maple_tree",
                "motorcycle", "tractor")
CIFAR_FS_TEST = ("whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table",
                 "wardrobe", "leopard", "plain", "chimpanzee", "fox", "snail", "worm", "baby",
                 "man", "woman", "bicycle", "pickup_truck", "rocket")
FC100_VAL = ("large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates",
             "small_mammals")
FC100_TEST = ("aquatic_mammals", "insects", "medium_mammals", "people")


def clean_class_name(name: str) -> str:
  """A class label as words: "001.Black_footed_Albatross" -> "black footed albatross".

  Drops a leading "NNN." index, turns underscores into spaces, lowercases and collapses
  spaces; hyphens and apostrophes stay ("hard-leaved pocket orchid", "colt's foot").
  """
  name = re.sub(r"^\s*\d+\s*\.\s*", "", str(name))
  return " ".join(name.replace("_", " ").lower().split())


def class_split_by_index(index: int) -> str:
  """The CUB rule on a class's position in sorted order: even -> train, 1 mod 4 -> val,
  3 mod 4 -> test."""
  return "train" if index % 2 == 0 else ("val" if index % 4 == 1 else "test")


def cifar_fs_split(class_name: str) -> str:
  return ("val" if class_name in CIFAR_FS_VAL else
          "test" if class_name in CIFAR_FS_TEST else "train")


def fc100_split(class_name: str) -> str:
  superclass = CIFAR100_SUPERCLASS_OF[class_name]
  return ("val" if superclass in FC100_VAL else "test" if superclass in FC100_TEST else "train")
