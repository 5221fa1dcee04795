# The public API of mmfsl_jax, imported explicitly: what IDEs and type checkers read, and what
# __init__.py loads on first use (lazy_loader.attach_stub reads this file).
from . import data as data
from . import meta as meta
from .core.component import Component as Component
from .core.component import from_linen as from_linen
from .core.model import MultimodalModel as MultimodalModel
from .core.model import multimodal_model as multimodal_model
from .data import ClassDataset as ClassDataset
from .data import EpisodeSampler as EpisodeSampler
from .data import ShapesConfig as ShapesConfig
from .data import WordVocabulary as WordVocabulary
from .data import shapes_splits as shapes_splits
from .meta import InnerLoop as InnerLoop
from .meta import MetaLearner as MetaLearner
from .meta import TrainState as TrainState
from .meta import init_train_state as init_train_state
from .meta import make_meta_step as make_meta_step
from .meta import maml as maml
from .meta import protonet as protonet
from .nn import align as align
from .nn import fuse as fuse
from .nn.encoders import conv4 as conv4
from .nn.encoders.image_backbones import ImageFeatureCache as ImageFeatureCache
from .nn.encoders.image_backbones import backbone_encoder as backbone_encoder
from .nn.encoders.image_backbones import load_image_backbone as load_image_backbone
from .nn.encoders.image_backbones import lora_encoder as lora_encoder
from .nn.encoders import resnet12 as resnet12
from .nn.encoders import token_text_encoder as token_text_encoder
from .nn.encoders import vector_encoder as vector_encoder
from .run import sharding as sharding
from .run.evaluators.episodic import evaluate_episodes as evaluate_episodes
from .run.evaluators.episodic import evaluate_workdir as evaluate_workdir
from .run.evaluators.episodic import make_batched_predict as make_batched_predict
from .run.evaluators.metrics import episode_metrics as episode_metrics
from .run.evaluators.metrics import mean_and_ci95 as mean_and_ci95
from .run.predict import Predictions as Predictions
from .run.predict import embed as embed
from .run.predict import predict as predict
from .run.train import train_and_evaluate as train_and_evaluate

__version__: str
