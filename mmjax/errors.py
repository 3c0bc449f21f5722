"""The one exception type for problems in what the user gave us (config, data, machine set-up).

`main.py` prints these as a single message without a traceback; everything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
  """Bad input from the user: the message names what is wrong and how to fix it."""


class NonFiniteError(UserError):
  """Training produced NaN or Inf; the message names the step and the metric."""


class NotApplicable(UserError):
  """An evaluator that cannot run on this dataset (zero-shot without class names, image
  reconstruction without images): switched off unless the user asked for it by name."""
