import jax
import jax.numpy as jnp
import numpy as np

from lightcls import checkpoint


def save_all(workdir, scores):
  manager = checkpoint.create_manager(workdir, keep_best=1)
  for step, top1 in scores:
    state = {'w': jnp.full((3,), float(step)), 'step': jnp.asarray(step)}
    checkpoint.save(manager, step, state, {'epoch': step}, {checkpoint.BEST_METRIC: top1})
  manager.wait_until_finished()
  return manager


def test_keeps_the_latest_and_the_best_and_restores_them(tmp_path):
  manager = save_all(str(tmp_path), [(1, 0.5), (2, 0.9), (3, 0.7), (4, 0.6)])
  assert manager.all_steps() == [2, 4]
  assert manager.best_step() == 2 and manager.latest_step() == 4
  state, meta = checkpoint.restore(manager, 2, {'w': jnp.zeros((3,)), 'step': jnp.asarray(0)})
  np.testing.assert_array_equal(state['w'], [2.0, 2.0, 2.0])
  assert meta == {'epoch': 2} and isinstance(state['w'], jax.Array)
  manager.close()


def test_a_resumed_run_still_ranks_and_keeps_the_earlier_best(tmp_path):
  save_all(str(tmp_path), [(1, 0.5), (2, 0.9), (3, 0.7)]).close()
  manager = save_all(str(tmp_path), [(4, 0.6), (5, 0.8)])  # a new process on the same workdir
  assert manager.all_steps() == [2, 5] and manager.best_step() == 2
  manager.close()
