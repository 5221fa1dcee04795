"""notebooks/scale.ipynb in a fresh kernel at the small size: 8 fake CPU devices, the task axis
split over them, the sharded meta-step equal to the one-device step, and `mmfsl train`'s
function training over them."""
import re

import pytest

from notebooks import check_training, printed_lines, run_notebook


@pytest.mark.slow
def test_scale_splits_tasks_over_8_devices_with_the_same_step(tmp_path):
  cells = run_notebook("scale.ipynb", tmp_path)
  text = "\n".join(printed_lines(cells))
  assert re.search(r"on cpu: 8 devices", text), text
  assert "16 tasks per meta-step" in text
  # each device holds its 2 of the 16 tasks
  assert re.search(r"P\('tasks',?\) over 8 devices; each holds \(2, 5, 16, 16, 3\)", text), text
  losses = re.search(r"loss: one device (\S+), 8 devices (\S+)", text)
  assert abs(float(losses[1]) - float(losses[2])) < 1e-5, losses[0]
  difference = float(re.search(r"largest difference between the updated parameters: (\S+)",
                               text)[1])
  assert 0.0 <= difference < 1e-5
  speeds = re.search(r"one device: (\S+) tasks/s; 8 devices: (\S+) tasks/s", text)
  assert float(speeds[1]) > 0 and float(speeds[2]) > 0
  # the config-level run split its meta-batch too, and trained to its last step
  assert "meta-batch of 16 tasks split over 8 devices" in text
  check_training(tmp_path / "runs" / "sharded", steps=6)
