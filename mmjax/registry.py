"""One way to plug things in: a Registry per kind of plug-in (objectives, evaluators, models,
...). Each has the same three calls:

  register(name, thing)   adds one from anywhere (a test, a user's module); under a built-in's
                          name it replaces that one;
  get(name, key=...)      the thing called `name`; an unknown name is a UserError naming the
                          config key, the closest known name and all of them;
  names()                 the built-in ones and the registered ones, sorted.

Built-ins are discovered, not listed: the modules of the kind's package that define its
attribute (an objective module's `loss`, an evaluator module's `Evaluator`, a model module's
`MODEL`), imported when first looked up. Kinds with many built-ins per module register them as
they are imported (preprocessing ops: `discover` imports those modules first); a kind with a
table of built-ins (model sizes) gives it as `builtins`.
"""
import difflib
import importlib
import pkgutil

from mmjax.errors import UserError


def unknown(kind, name, known, key=None, how=None):
  """The one message for an unknown plug-in name: where it was given, the closest known name,
  every known one, and how to add one."""
  close = difflib.get_close_matches(str(name), list(known), n=1)
  return (f"{key + '=' if key else ''}{name!r}: no {kind} of that name."
          + (f" Did you mean {close[0]!r}?" if close else "")
          + f" Known: {', '.join(sorted(known))}."
          + (f" ({how})" if how else ""))


class Registry:
  """Plug-ins of one kind by name (see the module docstring)."""

  def __init__(self, kind, package=None, attribute=None, *, whole_module=False, builtins=None,
               discover=None):
    """kind: what the entries are, for messages ('evaluator'); package: the package whose
    modules hold the built-ins; attribute: what makes a module one, and is its entry (the
    module itself with whole_module: an objective's declarations sit beside its `loss`).
    builtins: {name: thing} given outright instead; discover: a function run once before the
    first lookup (it imports the modules that register the built-ins)."""
    self.kind, self.package, self.attribute = kind, package, attribute
    self.whole_module, self._discover = whole_module, discover
    self._builtins = dict(builtins or {})
    self._registered = {}

  def _discovered(self):
    if self._discover is not None:
      discover, self._discover = self._discover, None
      discover()

  def register(self, name, thing):
    """Makes `thing` the plug-in called `name`; returns it (usable as a decorator's end)."""
    if not isinstance(name, str) or not name.isidentifier():
      raise ValueError(f"A {self.kind}'s name must be an identifier, got {name!r}.")
    self._registered[name] = thing
    return thing

  def unregister(self, name):
    """Removes a registered plug-in (a built-in of that name comes back)."""
    self._registered.pop(name, None)

  def _builtin(self, name):
    """The built-in plug-in `name` (its module's attribute), or None."""
    if name in self._builtins:
      return self._builtins[name]
    if self.package is None or not name.isidentifier():
      return None
    try:
      module = importlib.import_module(f"{self.package}.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"{self.package}.{name}":
        raise  # A real import error inside the module: keep its traceback.
      return None
    if not hasattr(module, self.attribute):
      return None
    return module if self.whole_module else getattr(module, self.attribute)

  def names(self):
    """Every plug-in's name: the package's modules that define the attribute, and the
    registered ones."""
    self._discovered()
    found = set(self._builtins)
    if self.package is not None:
      package = importlib.import_module(self.package)
      found |= {info.name for info in pkgutil.iter_modules(package.__path__)
                if self._builtin(info.name) is not None}
    return sorted(found | set(self._registered))

  def get(self, name, key=None):
    """The plug-in `name`; UserError (naming config key `key`) when there is none."""
    self._discovered()
    thing = self._registered.get(name)
    if thing is None and isinstance(name, str):
      thing = self._builtin(name)
    if thing is None:
      raise UserError(unknown(self.kind, name, self.names(), key,
                              f"add one with {self.package}.register" if self.package else None))
    return thing

  def __contains__(self, name):
    self._discovered()
    return name in self._registered or (isinstance(name, str) and self._builtin(name) is not None)
