"""Data: sources (-> uint8 arrays) and the host pipeline (resize, shuffle, batch, shard per process)."""
from __future__ import annotations

import ml_collections


def load(config: ml_collections.ConfigDict):
  """The dataset a run of `config` (a whole config, or its `data` section) trains on: loaded, decoded,
  resized and cached as uint8 (`.train.images` NHWC, `.train.labels`, `.eval`, `.class_names`)."""
  from lightcls.data import pipeline, sources
  data = config.data if 'data' in config else config
  return pipeline.prepared(sources.load(data), data)[0]
