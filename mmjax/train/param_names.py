"""Parameters by name: 'encoder/blocks/0/mlp/fc1/kernel' for a key path into a parameter tree
(an nnx.State, a nested dict, a checkpoint's metadata tree). Weight decay, layer-wise learning
rates (optimizer) and partial restores (init_from) all match parameters by these names."""


def key(entry):
  """One key-path entry as a string (a dict key, an attribute name or a sequence index)."""
  return str(getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))))


def name(path):
  """'encoder/norm/scale' for a key path (an nnx.State's trailing 'value' left out)."""
  parts = [key(k) for k in path]
  return "/".join(parts[:-1] if len(parts) > 1 and parts[-1] == "value" else parts)


def leaf(path):
  """The parameter's own name ('kernel', 'scale', ...): the last part of `name`."""
  return name(path).split("/")[-1]
