"""What a workdir keeps for its run: one run at a time (a lock) and the config history.

  with workdir.lock(path):               # refuses a second run; takes over a dead run's lock
    workdir.check_resume(path, config)   # a resume must keep the run's config
    workdir.record_launch(path, config)  # appends to WORKDIR/config.jsonl

WORKDIR/config.json is the config of the run's first launch and is never rewritten; every
launch (the first and each resume) appends its resolved config to WORKDIR/config.jsonl with the
time, host, commit and the keys it changed. Only process 0 touches these files.
"""
import contextlib
import datetime
import json
import os
import socket
import threading
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from mmjax import provenance
from mmjax.errors import UserError

LOCK_FILE = "lock.json"
HISTORY_FILE = "config.jsonl"
FIRST_CONFIG_FILE = "config.json"
HEARTBEAT_SECONDS = 30.0  # The running process touches its lock this often...
STALE_SECONDS = 300.0  # ...so a lock untouched this long (another host) belongs to a dead run.

# Keys a resume may change freely (logged): how long to train, how often to log, evaluate and
# save, what to record; none changes the math of the steps already taken. `evals.*` only decides
# what is measured. A pattern 'a.*' is the subtree under 'a'.
RESUMABLE = ("total_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
             "on_nonfinite", "record_example_ids", "check_memory", "resume_overrides",
             "profile.*", "evals.*", "data.num_workers")


# ----------------------------------------------------------------------------------------------
# The lock.

def _raise_on_every_process(error, what):
  """Raises `error` (process 0's verdict, or None) on every process, so that all stop together
  rather than the others waiting for process 0 at the next collective."""
  if jax.process_count() > 1:
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not ok and error is None:
      error = UserError(f"{what}; see its message.")
  if error is not None:
    raise error


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Alive, someone else's.
    return True
  return True


def _read_lock(path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None  # Half written or removed meanwhile: treat as unreadable.


def _holder(path, owner):
  """Why `owner` (the lock file's contents) still holds the workdir, or None if it is stale."""
  if owner is None:
    age = time.time() - os.path.getmtime(path) if os.path.exists(path) else float("inf")
    return None if age > STALE_SECONDS else "an unreadable lock file"
  here = owner.get("host") == socket.gethostname()
  if here and owner.get("pid") == os.getpid():
    return None  # Ours (a previous call in this process that did not release it).
  if here and not _pid_alive(owner.get("pid", -1)):
    return None
  age = time.time() - os.path.getmtime(path)
  if not here and age > STALE_SECONDS:
    return None
  return (f"process {owner.get('pid')} on host {owner.get('host')!r} (started "
          f"{owner.get('started')}, lock touched {age:.0f} s ago)")


class _Lock:
  """WORKDIR/lock.json: {host, pid, started}, created exclusively, touched every
  HEARTBEAT_SECONDS by a daemon thread, removed on release."""

  def __init__(self, directory):
    self.path = os.path.join(directory, LOCK_FILE)
    self._stop = threading.Event()
    self._thread = None

  def acquire(self):
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = _read_lock(self.path)
        holder = _holder(self.path, owner)
        if holder is not None:
          raise UserError(
              f"{os.path.dirname(self.path)} is in use by {holder}: two runs in one workdir "
              "would overwrite each other's checkpoints. Stop that run, or use another "
              f"--workdir. (If that process is gone, delete {self.path}.)") from None
        if owner is not None and owner.get("pid") != os.getpid():
          logging.warning("Taking over the lock of a run that is no longer running (process "
                          "%s on %s, started %s).", owner.get("pid"), owner.get("host"),
                          owner.get("started"))
        with contextlib.suppress(FileNotFoundError):
          os.remove(self.path)
        continue
      with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
      self._thread = threading.Thread(target=self._beat, daemon=True, name="mmjax-workdir-lock")
      self._thread.start()
      return
    raise UserError(f"Could not lock {self.path}: another process keeps creating it.")

  def _beat(self):
    while not self._stop.wait(HEARTBEAT_SECONDS):
      with contextlib.suppress(OSError):
        os.utime(self.path)

  def release(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      if (_read_lock(self.path) or {}).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
          os.remove(self.path)


@contextlib.contextmanager
def lock(directory):
  """Holds WORKDIR/lock.json for the run (process 0 takes it; every process learns whether it
  did, so all stop together if it did not). A lock whose process is dead (this host), or
  untouched for STALE_SECONDS (another host), is taken over with a warning, so a SIGKILLed or
  preempted run resumes with the same command."""
  held = _Lock(directory) if jax.process_index() == 0 else None
  error = None
  if held is not None:
    try:
      held.acquire()
    except UserError as e:
      error = e
  _raise_on_every_process(error, f"process 0 could not lock the workdir {directory}")
  try:
    yield
  finally:
    if held is not None:
      held.release()


# ----------------------------------------------------------------------------------------------
# The config history.

def _flat(config):
  """{'a.b.c': value} of a ConfigDict, as JSON would store it (tuples become lists)."""
  tree = json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") \
      else config
  flat = {}

  def visit(node, prefix):
    if isinstance(node, dict) and node:
      for k, v in node.items():
        visit(v, f"{prefix}{k}.")
    else:
      flat[prefix[:-1]] = node
  visit(tree, "")
  return flat


def _matches(key, patterns):
  """Whether `key` is one of `patterns` or under one ('a.*' and 'a' both cover 'a.b.c')."""
  return any(key == p.removesuffix(".*") or key.startswith(p.removesuffix(".*") + ".")
             for p in patterns)


def history(directory):
  """The launches recorded in WORKDIR/config.jsonl, oldest first (each {'time', 'host',
  'commit', 'changed', 'config'}). A workdir from before the history has only config.json:
  it counts as one launch."""
  path = os.path.join(directory, HISTORY_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.strip()]
  first_config = os.path.join(directory, FIRST_CONFIG_FILE)
  if os.path.exists(first_config):
    with open(first_config, encoding="utf-8") as f:
      return [{"config": json.load(f)}]
  return []


def has_checkpoints(directory):
  """Whether WORKDIR/checkpoints holds a step (complete or not) to resume from."""
  path = os.path.join(directory, "checkpoints")
  return os.path.isdir(path) and any(d.isdigit() for d in os.listdir(path))


def changes(old, new):
  """{key: (old value, new value)} of the keys that differ ('<absent>' for a missing one)."""
  old, new = _flat(old), _flat(new)
  missing = "<absent>"
  return {k: (old.get(k, missing), new.get(k, missing)) for k in sorted(set(old) | set(new))
          if old.get(k, missing) != new.get(k, missing)}


def _overrides(config):
  spec = config.get("resume_overrides", "") or ""
  return tuple(k.strip() for k in str(spec).split(",") if k.strip())


def check_resume(directory, config):
  """A resume (the workdir has checkpoints) must keep the config of the run's last launch,
  except the RESUMABLE keys and those config.resume_overrides lists. Returns the changed keys
  {key: (old, new)} it allows; raises UserError listing the others (process 0 decides, from its
  view of the workdir; every process raises)."""
  changed, error = {}, None
  if jax.process_index() == 0:
    try:
      changed = _check_resume(directory, config)
    except UserError as e:
      error = e
  _raise_on_every_process(error, f"process 0 refused to resume in {directory}")
  return changed


def _check_resume(directory, config):
  launches = history(directory)
  if not launches or not has_checkpoints(directory):
    return {}
  changed = changes(launches[-1]["config"], config)
  refused = {k: v for k, v in changed.items()
             if not _matches(k, RESUMABLE) and not _matches(k, _overrides(config))}
  if refused:
    lines = "\n".join(f"  {k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
    raise UserError(
        f"{directory} holds a run whose config differs from this one in {len(refused)} "
        f"key(s) that a resume may not change:\n{lines}\n"
        "To start a new run, use another --workdir. To resume with these changes on purpose, "
        f"add --config.resume_overrides={','.join(refused)} (the history in "
        f"{os.path.join(directory, HISTORY_FILE)} keeps both configs).")
  for k, (old, new) in changed.items():
    logging.info("Resume changes config.%s: %r -> %r.", k, old, new)
  return changed


def record_launch(directory, config, changed=None):
  """Appends this launch to WORKDIR/config.jsonl; writes config.json if it is the first."""
  if jax.process_index() != 0:
    return
  resolved = json.loads(config.to_json_best_effort())
  first_config = os.path.join(directory, FIRST_CONFIG_FILE)
  if not os.path.exists(first_config):
    with open(first_config, "w", encoding="utf-8") as f:
      json.dump(resolved, f, indent=2)
  record = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": socket.gethostname(), "pid": os.getpid(), "commit": provenance.commit(),
            "changed": {k: list(v) for k, v in (changed or {}).items()}, "config": resolved}
  with open(os.path.join(directory, HISTORY_FILE), "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")
