from lightcls import schedules


def test_multistep_multiplies_by_gamma_at_each_milestone_like_torch():
  schedule = schedules.multistep(1.0, milestones=[30, 10], gamma=0.1)
  # torch.optim.lr_scheduler.MultiStepLR: the new rate applies from the milestone step itself.
  assert [schedule(s) for s in (0, 9, 10, 29)] == [1.0, 1.0, 0.1, 0.1]
  assert abs(schedule(30) - 0.01) < 1e-15 and abs(schedule(1000) - 0.01) < 1e-15


def test_constant_never_changes():
  assert {schedules.constant(0.3)(s) for s in range(0, 10_000, 997)} == {0.3}
