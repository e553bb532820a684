import jax
import jax.numpy as jnp
import numpy as np

from configs import default
from lightcls import checkpoint, optim, state as state_lib


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


def adamw_state(tx, params):
  return state_lib.TrainState(step=jnp.asarray(0), params=params, batch_stats={}, opt_state=tx.init(params),
                              rng=jax.random.PRNGKey(0), ema=None, apply_fn=None, tx=tx)


def test_a_checkpoint_with_per_parameter_moments_resumes_as_it_would_have(tmp_path, monkeypatch):
  config = default.get_config().optimizer  # adamw
  rng = np.random.default_rng(0)
  shapes = {'conv': {'kernel': (3, 3, 2, 4), 'bias': (4,)}, 'fc': {'kernel': (4, 3), 'bias': (3,)}}
  draw = lambda: {layer: {name: jnp.asarray(rng.standard_normal(shape), jnp.float32)
                          for name, shape in leaves.items()} for layer, leaves in shapes.items()}
  params, grads = draw(), [draw() for _ in range(3)]
  with monkeypatch.context() as patch:  # the optimizer as versions before 2026-11-24 built it
    patch.setattr(optim.optax, 'flatten', lambda inner: inner)
    old = adamw_state(optim.create_optimizer(config), params)
    assert any(isinstance(leaf, dict) for leaf in old.opt_state.inner_state[0])  # moments per parameter
    for g in grads[:2]:
      old = old.apply_gradients(g, {}, 0.1)
    expected = old.apply_gradients(grads[2], {}, 0.05)
  manager = checkpoint.create_manager(str(tmp_path))
  checkpoint.save(manager, 2, old, {'epoch': 1}, None)
  manager.wait_until_finished()

  like = adamw_state(optim.create_optimizer(config), jax.tree.map(jnp.zeros_like, params))
  assert checkpoint.incompatibility(manager, 2, like) is None
  restored, meta = checkpoint.restore(manager, 2, like)
  size = sum(p.size for p in jax.tree.leaves(params))
  assert [m.shape for m in restored.opt_state.inner_state[0][1:]] == [(size,), (size,)]  # mu, nu as vectors
  resumed = restored.apply_gradients(grads[2], {}, 0.05)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), expected.params, resumed.params)
  assert meta == {'epoch': 1} and int(resumed.step) == 3

  sgd = default.get_config().optimizer
  sgd.name = 'sgd'
  assert 'optimizer state' in checkpoint.incompatibility(manager, 2, adamw_state(optim.create_optimizer(sgd), params))
  manager.close()
