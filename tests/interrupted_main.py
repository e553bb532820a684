"""`python -m tests.interrupted_main --config=... --workdir=...`: lightcls.main, which SIGKILLs itself at the
moment named by the environment variable LIGHTCLS_KILL_AT (tests/test_resume.py runs it):

  train_step:N   just after the step that makes the state's step N is dispatched (it is still running)
  eval:N         just after the Nth batch of the process's first evaluation is dispatched
                 (both wait for a checkpoint being written to be in place: the test knows where a resumed run
                 starts)
  checkpoint:N   while the checkpoint of step N is being written: its files are complete under Orbax's
                 temporary name, not yet renamed into place
"""
import glob
import os
import signal
import sys
import time

from absl import app

from lightcls import cli, main, train


def kill() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


def kill_once_saved() -> None:
  """Kills once the checkpoint being written (asynchronously) is in place, so the test knows which one a
  resumed run starts from."""
  workdir = next(arg.split('=', 1)[1] for arg in sys.argv if arg.startswith('--workdir='))
  deadline = time.time() + 120
  while glob.glob(os.path.join(workdir, 'checkpoints', '*tmp*')) and time.time() < deadline:
    time.sleep(0.01)
  kill()


def kill_in_train_step(step: int) -> None:
  compiled_parts = train.compiled_parts

  def patched(*args, **kwargs):
    parts = compiled_parts(*args, **kwargs)

    def train_step(state, batch, learning_rate):
      before = int(state.step)  # (waits for the previous step, not for this one)
      out = parts.train_step(state, batch, learning_rate)
      if before + 1 == step:
        kill_once_saved()
      return out
    return parts._replace(train_step=train_step)
  train.compiled_parts = patched


def kill_in_eval(batch_number: int) -> None:
  compiled_parts = train.compiled_parts
  calls = [0]

  def patched(*args, **kwargs):
    parts = compiled_parts(*args, **kwargs)

    def eval_step(state, batch):
      out = parts.eval_step(state, batch)
      calls[0] += 1
      if calls[0] == batch_number:
        kill_once_saved()
      return out
    return parts._replace(eval_step=eval_step)
  train.compiled_parts = patched


def kill_in_checkpoint(step: int) -> None:
  from orbax.checkpoint._src.path import atomicity
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def patched(self, *args, **kwargs):
    if self._final_path.name == str(step):
      kill()
    return await finalize(self, *args, **kwargs)
  atomicity.AtomicRenameTemporaryPath.finalize = patched


if __name__ == '__main__':
  point, number = os.environ['LIGHTCLS_KILL_AT'].split(':')
  {'train_step': kill_in_train_step, 'eval': kill_in_eval, 'checkpoint': kill_in_checkpoint}[point](int(number))
  app.run(main.main, flags_parser=cli.parse_flags)
