import os
import subprocess
import sys

import numpy as np
from PIL import Image

from configs import quickstart
from lightcls.data import pipeline, preview, sources
from tests.helpers import REPO
from tests.test_writers import tensorboard_images


def test_preview_rows_start_with_the_cached_image_and_show_independent_draws():
  config = quickstart.get_config()
  image = preview.preview(config, rows=3, draws=4, seed=1)
  cell, text = 128, 14
  assert image.shape == (3 * (cell + text), 5 * cell, 3)
  data, _ = pipeline.prepared(sources.load(config.data), config.data)
  picked = np.sort(np.random.default_rng(1).choice(len(data.train), 3, replace=False))
  first = np.asarray(Image.fromarray(data.train.images[picked[0], ..., 0]).resize((cell, cell), Image.NEAREST))
  np.testing.assert_array_equal(image[:cell, :cell, 0], first)
  draws = [image[:cell, c * cell:(c + 1) * cell] for c in range(1, 5)]
  assert len({d.tobytes() for d in draws}) > 1  # random crops differ between draws


def test_preview_command_writes_the_png_and_the_tensorboard_image(tmp_path):
  out, workdir = tmp_path / 'grid.png', tmp_path / 'run'
  subprocess.run([sys.executable, '-m', 'lightcls.data.preview', '--config=configs/quickstart.py',
                  f'--out={out}', f'--workdir={workdir}', '--rows=2', '--draws=2'], cwd=REPO, check=True,
                 capture_output=True)
  png = np.asarray(Image.open(out))
  assert png.shape == (2 * 142, 3 * 128, 3)
  np.testing.assert_array_equal(tensorboard_images(os.path.join(workdir, 'tensorboard'))['images/augmented'][0],
                                png)
