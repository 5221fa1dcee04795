"""Tiny randomly initialised Hugging Face models saved to disk, for the loaders' tests: CLIP
(both towers, with a word-level tokenizer), ViT, DINOv2 and ResNet, each with an image
processor config."""
from __future__ import annotations

import json

from mmfsl_jax.data.sources.shapes import COLOURS, FILLS, SHAPES, SOUNDS

SIZE = 32
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# The tokenizer's words; [EOS] closes every text, and CLIP pools its state.
WORDS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "a", "photo", "of", "the", "drawing", "that", ".",
         *SHAPES, *COLOURS, *FILLS, *SOUNDS)   # the shapes dataset's class texts
EOS_ID = WORDS.index("[EOS]")


def tiny_model(model_type: str):
  import transformers as tf
  if model_type == "clip":
    text = dict(TINY, vocab_size=len(WORDS), max_position_embeddings=16, eos_token_id=EOS_ID,
                bos_token_id=2, pad_token_id=0)
    config = tf.CLIPConfig(text_config=text,
                           vision_config=dict(TINY, image_size=SIZE, patch_size=8),
                           projection_dim=8)
    return tf.FlaxCLIPModel(config, seed=0)
  if model_type == "vit":
    return tf.FlaxViTModel(tf.ViTConfig(**TINY, image_size=SIZE, patch_size=8), seed=0)
  if model_type == "dinov2":
    return tf.FlaxDinov2Model(tf.Dinov2Config(**TINY, image_size=SIZE, patch_size=8), seed=0)
  return tf.FlaxResNetModel(tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16],
                                            depths=[1, 1], layer_type="basic"), seed=0)


def save_processor(path, shortest=SIZE, crop=SIZE):
  (path / "preprocessor_config.json").write_text(json.dumps({
      "do_resize": True, "size": {"shortest_edge": shortest}, "do_center_crop": True,
      "crop_size": {"height": crop, "width": crop}, "do_normalize": True,
      "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "resample": 3,
      "do_rescale": True, "rescale_factor": 1 / 255, "image_processor_type": "CLIPImageProcessor"}))


def save_tokenizer(path):
  """A word-level tokenizer over WORDS that appends [EOS] (as CLIP's closes each text)."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  from transformers import PreTrainedTokenizerFast
  tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
      [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
  tokenizer.post_processor = processors.TemplateProcessing(
      single="$A [EOS]", special_tokens=[("[EOS]", EOS_ID)])
  PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                          eos_token="[EOS]").save_pretrained(path)


def save_tiny(model_type: str, path):
  """The tiny model of `model_type` saved in `path` with its processor (and, for CLIP, its
  tokenizer); -> the transformers model."""
  model = tiny_model(model_type)
  model.save_pretrained(path)
  save_processor(path)
  if model_type == "clip":
    save_tokenizer(path)
  return model
