"""The base config: every setting of a run, in sections. Named configs start from it.

    data     the dataset, its modalities and image size, train-time augmentation
    task     the shape of meta-training tasks (way, shot, queries) and the meta-batch
    model    encoders per modality, the shared space (alignment) and the fuser
    learner  the meta-learner (`learner.name`, meta/registry.py) and its own settings
    inner    the MAML family's inner loop (steps, rate, order, MAML++ options)
    optim    the meta-optimiser and its rate schedule
    run      how long and how often (log, validate, save), and how the step is computed
    eval     validation and test tasks (way, shot, queries, episodes)

Override any field on the command line with its dotted name (`learner.name=maml
inner.steps=5 model.image.encoder=resnet12`). `run/build.py` is the only reader of these
values; `run/legacy.py` translates the flat names of older versions (`method=maml`).
"""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.smoke = False                 # shrink everything for a quick check of the pipeline

  c.data = ml_collections.ConfigDict()
  c.data.name = "shapes"          # shapes | omniglot (zip files) | tfds_omniglot, cifar_fs,
  #                                 fc100, cub, flowers102 (TFDS; `mmfsl data prepare NAME`) |
  #                                 files (your own: data.files below)
  c.data.dir = ""                 # omniglot: the zips' directory (else $MMFSL_OMNIGLOT_DIR);
  #                                 TFDS datasets: the TFDS data_dir (else TFDS's default)
  c.data.modalities = ("image", "text")   # a subset gives the unimodal ablations; files:
  #                                 any names of the kinds image, text, vector (image_ct, ...)
  c.data.image_size = 0           # 0 = the dataset's own (data.shapes.image_size, 28, 32 or 84)
  c.data.augment = "auto"         # train images: auto (the dataset's default) | none | crop_flip
  c.data.shapes = ml_collections.ConfigDict(dict(
      image_size=32, examples_per_class=40, classes_per_split=(64, 16, 20), mention_prob=0.5,
      colour_jitter=30.0, noise_std=0.06, clutter=1, seed=0))
  c.data.omniglot = ml_collections.ConfigDict(dict(
      val_alphabets=("Early_Aramaic",), test_alphabets=("Korean", "Tagalog"),  # held out
      rotations=True,
      tfds_splits="full",         # tfds_omniglot: full (TFDS train/test) | small (small1+2)
      resize="box"))              # downsampling filter: box (area) | bilinear (PIL's, as
  #                                 PyTorch pipelines; the one-shot runs are read the same way)
  c.data.files = ml_collections.ConfigDict(dict(   # data.name=files: your own data
      manifest="",          # a CSV, TSV or JSON-lines file, one row per example (paths in it
      #                       relative to it), or an ImageFolder root: root/<class>/<image>
      image_column="image", text_column="text", label_column="label",
      split_column="",      # a column naming each row's split (train | val | test), or:
      train_classes=(), val_classes=(), test_classes=(),   # the classes of each split, or:
      split_fractions=(0.6, 0.2, 0.2), split_seed=0,       # a seeded split of the classes
      class_texts="",       # a CSV/TSV/JSON-lines file of (label, text): class-level text
      color="rgb",          # images read as rgb | ink (1 channel: luminance inverted, dark
      #                       strokes on white -> 1.0, as Omniglot's)
      resize="bilinear",    # the filter that resizes them: bilinear | box
      columns=()))          # more modalities' columns: ("image_side=side_photo",
  #                           "vector_labs=labs"); by default a modality's column is its name

  c.task = ml_collections.ConfigDict()
  c.task.n_way = 5
  c.task.k_shot = 1
  c.task.q_query = 5
  c.task.meta_batch = 4

  c.model = ml_collections.ConfigDict()
  c.model.image = ml_collections.ConfigDict()
  c.model.image.encoder = "conv4"           # conv4 | resnet12 (from scratch) | pretrained
  c.model.image.channels = 32               # conv4's filters per layer
  c.model.image.resnet_channels = (64, 160, 320, 640)
  c.model.image.conv_impl = "auto"  # convolutions as patch matmuls (matmul: fast on CPUs) or
  #                                   XLA's own (xla: fast on accelerators); auto picks by backend
  c.model.image.pool = "same"       # 2x2 max-pools on an odd side: same (pool the last row on
  #                                   its own; Conv4 on 28x28 -> 2x2x64 features) | floor (drop
  #                                   it, as PyTorch's MaxPool2d: 1x1x64); needs 16+ pixels
  c.model.image.init = "lecun_normal"  # lecun_normal (Flax's nn.Conv) | torch (PyTorch's
  #                                      Conv2d: kernel and bias U(+-1/sqrt(fan_in)))
  c.model.image.pretrained = "efficientnet_lite0"  # encoder=pretrained: efficientnet_lite0
  #                                   (the packaged ImageNet weights, offline), its checkpoint
  #                                   file, or a Hugging Face CLIP, ViT, DINOv2 or ResNet
  #                                   directory (or model id, online)
  c.model.image.input_size = 0      # pretrained: the side images are resized to (0: the model's)
  c.model.image.trainable = False   # pretrained: fine-tune it in the meta-step, or (False)
  #                                   compute its frozen features once per image and cache them
  c.model.image.finetune = ""       # trainable: regex over the weights' paths fine-tuned ("" = all)
  c.model.image.lora_rank = 0       # trainable: > 0 adapts only LoRA adapters of this rank on
  #                                   the attention projections (ViT, DINOv2, CLIP), frozen rest
  c.model.image.head = "standardize"  # frozen features: standardize (meta-train statistics) |
  #                                     none (as they are: keeps a shared space such as CLIP's)
  c.model.image.compute_dtype = "auto"  # conv4, resnet12: float32 | bfloat16 (activations and
  #                                   products; parameters, optimiser state, losses float32) |
  #                                   auto: bfloat16 on GPU/TPU, float32 on CPU
  c.model.text = ml_collections.ConfigDict()
  c.model.text.encoder = "bow"      # bow | gru (trainable, word ids) | pretrained (transformers)
  c.model.text.pretrained = "minilm"  # encoder=pretrained: a directory or model id
  c.model.text.trainable = False    # pretrained: fine-tune it, or cache its frozen features
  c.model.text.head = "mlp"         # frozen features: mlp (standardised, then an MLP to dim) |
  #                                   standardize | none (as they are: CLIP's shared space)
  c.model.text.prompts = ()         # frozen features: templates for class-level text, averaged
  #                                   as CLIP does, e.g. ("a photo of a {}.", "a drawing of a {}.")
  c.model.text.dim = 64
  c.model.text.max_length = 32
  c.model.vector = ml_collections.ConfigDict()   # vector modalities (data.name=files):
  c.model.vector.hidden = (128,)    # standardised with meta-train statistics, then this MLP
  c.model.vector.dim = 64
  c.model.embed_dim = 64            # the shared space; 0: no projection (features as they are)
  c.model.projection_hidden = ()
  c.model.fuser = "weighted"        # weighted | concat | gated | attention
  c.model.fuse_weights = ()         # () = learned; else fixed weights, one per modality

  c.learner = ml_collections.ConfigDict()
  c.learner.name = "protonet"       # protonet | maml | anil | metasgd | reptile | baselinepp |
  #                                   am3 | zeroshot | linear_probe | tip_adapter |
  #                                   tip_adapter_f | lp_plus_plus (meta/registry.py)
  c.learner.distance = "euclidean"  # protonet, am3: euclidean | cosine
  c.learner.cosine_scale = 10.0     # cosine logits (protonet, am3), Baseline++'s classifier,
  #                                   and the image-text logits (zeroshot, tip_adapter(_f),
  #                                   lp_plus_plus; CLIP's own is 100)
  c.learner.fuse_level = "example"  # protonet: fuse each example, or each class's means
  c.learner.batch_norm = "transductive"  # transductive (batch statistics) | inductive (support
  #                                        statistics for support and query; meta/base.py)
  c.learner.align_weight = 0.0      # weight of the InfoNCE alignment term
  c.learner.align_temperature = 0.1
  c.learner.support_loss_weight = 0.0  # protonet and the MAML family: + this x the support
  #                                      loss at the initial parameters (0: the query loss only)
  c.learner.zero_head = False       # maml, anil, metasgd: every task starts from a zero head,
  #                                   not a meta-learned one (the "zeroing trick"; meta/maml.py)
  c.learner.reptile = ml_collections.ConfigDict(dict(
      inner_batch=10))  # each training inner step fits a random minibatch of this many
  #                       support+query examples (0 = the whole support set)
  c.learner.baselinepp = ml_collections.ConfigDict(dict(
      finetune_steps=100, finetune_lr=0.5))   # the head fitted per test task
  c.learner.am3 = ml_collections.ConfigDict(dict(
      example_modalities=()))   # modalities of the examples (() = all of data.modalities);
  #                               ('image',) is the original AM3 (text per class only)
  c.learner.tip_adapter = ml_collections.ConfigDict(dict(   # tip_adapter, tip_adapter_f
      alpha=1.0, beta=5.5,       # the cache's weight and sharpness (Zhang et al.'s ImageNet)
      finetune_steps=50, finetune_lr=0.01))   # tip_adapter_f: Adam on the cache keys per task
  c.learner.linear_probe = ml_collections.ConfigDict(dict(
      steps=300, weight_decay=1e-3))   # logistic regression per task, step 1/L (no rate)
  c.learner.lp_plus_plus = ml_collections.ConfigDict(dict(
      alpha_init=1.0, steps=100))      # the text's initial weight per class; fitting rounds

  c.inner = ml_collections.ConfigDict()
  c.inner.steps = 1
  c.inner.lr = 0.4
  c.inner.first_order = False
  c.inner.loop = "scan"             # scan | fori (same result)
  c.inner.params = ""               # regex over param paths adapted in the inner loop; "" = the
  #                                   method's own (maml, metasgd, reptile: all; anil: "head/.*")
  c.inner.eval_steps = 0            # inner steps at test time; 0 = inner.steps
  c.inner.per_step_lr = False       # MAML++: a learned inner rate per step and tensor (maml,
  #                                   anil; metasgd: per step and parameter)
  c.inner.multi_step_loss = False   # MAML++: mean query loss after every inner step
  c.inner.checkpoint = False        # jax.checkpoint each inner step (memory flat in steps)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"             # adam | sgd (momentum 0.9)
  c.optim.lr = 1e-3
  c.optim.schedule = "constant"     # constant | step: x decay_factor every decay_every meta-steps
  c.optim.decay_every = 0           #   (PyTorch's StepLR) | cosine: to 0 at run.num_steps
  c.optim.decay_factor = 0.5
  c.optim.grad_clip = 10.0          # global-norm clip; 0 = none

  c.run = ml_collections.ConfigDict()
  c.run.num_steps = 1200
  c.run.log_every = 25
  c.run.eval_every = 200
  c.run.checkpoint_every = 200
  c.run.val_episodes = 200          # 0: no validation (all steps train; eval uses the last
  #                                   checkpoint), e.g. with data.omniglot.val_alphabets=()
  c.run.skip_nonfinite_steps = False  # drop updates with a non-finite loss/gradient (counted
  #                                     as skipped_steps) instead of stopping with an error
  c.run.task_chunk = 0              # meta-step and evaluation: vmap this many tasks at a time
  #                                   and scan over the chunks (same results, one chunk's
  #                                   memory); 0 = automatic: 1 on a CPU, all at once on GPU/TPU
  c.run.autotune = "auto"           # conv_impl=auto and task_chunk=0 chosen by measuring the
  #                                   candidates once per machine and step shape (cached;
  #                                   run/autotune.py): on | off (the fixed rules) | auto (on
  #                                   for runs of 200 steps or more)
  c.run.shard_tasks = True          # with several devices, split each meta-batch's tasks over
  #                                   all of them (meta_batch a multiple of the device count)

  c.eval = ml_collections.ConfigDict()
  c.eval.n_way = 0                  # validation and test tasks: way and shot, 0 = the training
  c.eval.k_shot = 0                 #   ones (e.g. train 60-way, evaluate 20-way, as ProtoNets do)
  c.eval.q_query = 15
  c.eval.episodes = 600
  c.eval.batch = 50                 # tasks a predict call takes
  c.eval.seed = 1234
  return c


def get_config() -> ml_collections.ConfigDict:
  return base_config()
