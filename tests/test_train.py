"""One real epoch in process: a tfds dataset by name (mocked), TensorBoard events, exact evaluation."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lightcls import checkpoint, losses, models, optim, state as state_lib, steps, train
from lightcls.data import dataset, pipeline, sources
from tests.helpers import read_jsonl, small_config, tensorboard_scalars


@pytest.fixture(scope='module')
def mock_tfds_run(tmp_path_factory):
  """One real epoch of GhostNet on a tfds dataset by name (mnist, mocked: 40 random images per split)."""
  tfds = pytest.importorskip('tensorflow_datasets')
  workdir = str(tmp_path_factory.mktemp('mock_tfds'))
  config = small_config(**{'data.source': 'tfds', 'data.name': 'mnist'})
  with tfds.testing.mock_data(num_examples=40):
    summary = train.train_and_evaluate(config, workdir)
  return workdir, summary


def test_one_epoch_on_a_tfds_dataset_trains_evaluates_and_checkpoints(mock_tfds_run):
  workdir, summary = mock_tfds_run
  assert summary['steps'] == 2 and summary['epochs'] == 1  # 40 // 16
  assert summary['params'] == 3_914_030 and summary['final']['eval/examples'] == 40  # 16 + 16 + 8
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['2']
  assert json.load(open(os.path.join(workdir, 'config.json')))['data']['name'] == 'mnist'
  assert json.load(open(os.path.join(workdir, 'summary.json')))['best_top1'] == summary['best_top1']
  report = json.load(open(os.path.join(workdir, 'data_report.json')))
  assert report['train']['decoded'] == sum(report['train']['per_class']) == 40 and not report['train']['skipped']


def test_tensorboard_events_hold_the_train_and_eval_scalars_of_metrics_jsonl(mock_tfds_run):
  workdir, _ = mock_tfds_run
  events = tensorboard_scalars(os.path.join(workdir, 'tensorboard'))
  for tag in ('train/loss', 'train/top1', 'train/top5', 'train/learning_rate', 'train/images_per_second',
              'eval/loss', 'eval/top1', 'eval/top5'):
    assert tag in events, tag
  for row in read_jsonl(workdir):
    for tag, value in row.items():
      if tag.startswith(('train/', 'eval/')):
        assert events[tag][row['step']] == pytest.approx(value, rel=1e-6), tag


def test_eval_counts_every_example_once_when_the_split_is_not_a_multiple_of_the_batch():
  config = small_config(**{'model.name': 'linear'})  # any model: what is tested is the batching
  data, _ = pipeline.prepared(sources.load(config.data), config.data)
  split = dataset.Split(data.eval.images[:37], data.eval.labels[:37])  # 16 + 16 + 5 (padded to 16)
  mesh = train.data_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  model = models.create_model(config.model, 10)
  state = state_lib.create_train_state(model, optim.create_optimizer(config.optimizer), (32, 32, 1), 0, replicated)
  eval_step = jax.jit(steps.configured_eval_step(config, 10))
  results, logits, labels = train.evaluate(eval_step, state, split, 16, batch_sharding)

  # Reference: one forward pass over all 37 examples at once.
  reference = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                          steps.normalized(jnp.asarray(split.images), config.data.mean, config.data.std))
  loss_fn = losses.create_loss(config.loss, 10)
  assert results['eval/examples'] == 37 and logits.shape == (37, 10)
  np.testing.assert_array_equal(labels, split.labels)
  np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-5)
  assert results['eval/top1'] == pytest.approx(float(np.mean(np.argmax(reference, -1) == split.labels)))
  assert results['eval/loss'] == pytest.approx(float(loss_fn(reference, split.labels).mean()), rel=1e-5)


def test_fine_tuning_from_another_run_with_a_frozen_base_trains_only_the_classifier(mock_tfds_run, tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  source, _ = mock_tfds_run
  config = small_config(**{'data.source': 'tfds', 'data.name': 'mnist', 'init.checkpoint': source,
                           'freeze.trainable': 'classifier'})
  with tfds.testing.mock_data(num_examples=40):
    train.train_and_evaluate(config, str(tmp_path))
  before = checkpoint.restore_variables(source)
  after = checkpoint.restore_variables(str(tmp_path))
  for collection in ('params', 'batch_stats'):
    for block in before[collection]:
      same = jax.tree.map(np.array_equal, before[collection][block], after[collection][block])
      if block == 'classifier':
        assert not all(jax.tree.leaves(same))
      else:
        assert all(jax.tree.leaves(same)), (collection, block)


def test_a_finished_run_resumed_with_more_steps_trains_the_rest_of_its_last_epoch_as_a_longer_run_would(tmp_path):
  """Ended at step 6 of 4-step epochs (in epoch 2, which it evaluated), then run again with total_steps 8: it
  trains steps 7-8 on the batches an 8-step run trains there, to the same weights, and the plateau schedule
  and early stopping count epoch 2 once, on its full evaluation, as the 8-step run's do."""
  from tests.helpers import digits_subset
  dataset = digits_subset()  # 64 examples, batch 16: 4 steps an epoch
  # Every epoch that does not improve the loss by 90% is bad: each evaluation moves the controllers' counts.
  controlled = {'schedule.name': 'plateau', 'schedule.patience': 5, 'schedule.threshold': 0.9,
                'early_stop.patience': 5, 'early_stop.min_delta': 10.0}
  extended, straight = str(tmp_path / 'extended'), str(tmp_path / 'straight')
  train.train_and_evaluate(small_config(**controlled, **{'train.total_steps': 6}), extended, dataset=dataset)
  result = train.train_and_evaluate(small_config(**controlled, **{'train.total_steps': 8}), extended,
                                    dataset=dataset)
  want = train.train_and_evaluate(small_config(**controlled, **{'train.total_steps': 8}), straight,
                                  dataset=dataset)
  assert [r['step'] for r in read_jsonl(extended) if 'train/loss' in r][-1] == 8
  (params, meta), (want_params, want_meta) = [checkpoint.read(workdir, step=8)[:2] for workdir in (extended, straight)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), params['params'],
               want_params['params'])
  assert result['final'] == want['final']
  assert meta['learning_rate'] == want_meta['learning_rate'] and meta['early_stop'] == want_meta['early_stop']
  assert want_meta['learning_rate']['num_bad_epochs'] == 1  # epoch 1 sets the best; epoch 2 is bad
