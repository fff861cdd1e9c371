"""Schemas of the base groups: static trainer, models, data, logger, dist."""

from dataflex.config.data import DataConfig
from dataflex.config.dist import DistConfig
from dataflex.config.logger import JsonlLoggerConfig, WandbLoggerConfig
from dataflex.config.model import HFModelConfig, TinyModelConfig
from dataflex.config.trainer import StaticTrainerConfig

SCHEMAS: dict[str, dict[str, type]] = {
    "trainer": {"static": StaticTrainerConfig},
    "model": {"tiny": TinyModelConfig, "hf": HFModelConfig},
    "data": {"engine": DataConfig},
    "logger": {"default": JsonlLoggerConfig, "wandb": WandbLoggerConfig},
    "dist": {"dist": DistConfig},
}
