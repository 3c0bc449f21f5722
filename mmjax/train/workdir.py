"""What a workdir keeps for its run: one run at a time (a lock) and the config history.

  with workdir.lock(path):               # refuses a second run; takes over a dead run's lock
    workdir.check_resume(path, config)   # a resume must keep the run's config
    ...                                  # set up, restore or initialize
    workdir.record_launch(path, config)  # appends to WORKDIR/config.jsonl, once training starts

WORKDIR/config.json is the config of the launch that started the run's checkpoints and is not
rewritten once there are any; every launch that gets as far as training (the first and each
resume) appends its resolved config to WORKDIR/config.jsonl with the time, host, commit and the
keys it changed. A launch that fails before (a bad batch size, a refused restore) records
nothing, so a resume is compared with the last launch that trained. Only process 0 touches
these files.
"""
import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from mmjax import provenance
from mmjax import paths
from mmjax.errors import UserError
from mmjax.train import validate

LOCK_FILE = "lock.json"
TAKEOVER_FILE = "lock.takeover"  # flock()ed while a launch takes over a dead run's lock.
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
    # Ours only if a lock of this process still holds it; else it was left by a dead process
    # whose pid this one reuses (a restarted container numbers its processes alike).
    if owner.get("token") in _HELD:
      return f"this process (pid {os.getpid()}), which is running in it already"
    return None
  if here and not _pid_alive(owner.get("pid", -1)):
    return None
  age = time.time() - os.path.getmtime(path)
  if not here and age > STALE_SECONDS:
    return None
  return (f"process {owner.get('pid')} on host {owner.get('host')!r} (started "
          f"{owner.get('started')}, lock touched {age:.0f} s ago)")


_HELD = set()  # The tokens of the locks this process holds.


def _in_use(path, holder):
  return UserError(
      f"{os.path.dirname(path)} is in use by {holder}: two runs in one workdir would "
      f"overwrite each other's checkpoints. Stop that run, or use another --workdir. (If that "
      f"process is gone, delete {path}.)")


@contextlib.contextmanager
def _takeover_guard(directory):
  """Holds an exclusive flock on WORKDIR/lock.takeover, so that judging a dead run's lock,
  removing it and creating ours is one step for launches that race for it. A launch that
  finds the guard held is refused at once: the other one is taking over, and would hold the
  lock a moment later anyway. Where the filesystem has no flock, the takeover goes on
  unguarded (not atomic), with a warning."""
  path = os.path.join(directory, TAKEOVER_FILE)
  fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)  # Never removed: that would race too.
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UserError(f"{directory}: another launch is taking over its lock at this moment; "
                      "two runs in one workdir would overwrite each other's checkpoints. "
                      "Start one run per workdir.") from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        raise
      logging.warning("%s: no flock on this filesystem (%s), so two launches at the same "
                      "moment could both take over a dead run's lock.", directory, e.strerror)
    yield
  finally:
    os.close(fd)  # Releases the flock.


class _Lock:
  """WORKDIR/lock.json: {host, pid, started, token}, created exclusively, touched every
  HEARTBEAT_SECONDS by a daemon thread, removed on release.

  Taking over a dead run's lock (judge it stale, remove it, create ours) runs under an
  exclusive flock on WORKDIR/lock.takeover (_takeover_guard): of launches that find the same
  stale lock at once, exactly one takes it over and the others are refused. Without the
  guard, one could remove the lock another had just created and both would run. flock is
  atomic on local filesystems and, as Linux emulates it with NFS byte-range locks, across the
  hosts of an NFS mount (NFSv4, or v3 with lockd); not with NFS's `nolock` mount option,
  where each host sees only its own locks. Where a filesystem has no flock at all (some FUSE
  mounts, Lustre without `-o flock`), the takeover goes on without the guard and says so.
  Creating lock.json itself relies on O_EXCL, which NFS v3 and later make atomic.
  """

  def __init__(self, directory):
    self.path = os.path.join(directory, LOCK_FILE)
    self._stop = threading.Event()
    self._thread = None
    self._token = uuid.uuid4().hex

  def _create(self):
    return os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)

  def _take_over(self):
    """Ours in place of a dead run's lock: a file descriptor, or None if a live launch created
    the lock meanwhile (the caller looks again). Raises UserError if the lock is held."""
    holder = _holder(self.path, _read_lock(self.path))
    if holder is not None:  # Live: no need for the guard to say so.
      raise _in_use(self.path, holder)
    with _takeover_guard(os.path.dirname(self.path)):
      # Judged again under the guard: another launch may have taken it over since.
      owner = _read_lock(self.path)
      holder = _holder(self.path, owner)
      if holder is not None:
        raise _in_use(self.path, holder)
      if owner is not None:
        logging.warning("Taking over the lock of a run that is no longer running (process "
                        "%s on %s, started %s).", owner.get("pid"), owner.get("host"),
                        owner.get("started"))
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)
      try:
        return self._create()
      except FileExistsError:  # A launch that found no lock at all: it holds it now.
        return None

  def acquire(self):
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "token": self._token}
    for _ in range(3):
      try:
        fd = self._create()
      except FileExistsError:
        fd = self._take_over()
      if fd is None:
        continue
      _HELD.add(self._token)
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
      _HELD.discard(self._token)
      if (_read_lock(self.path) or {}).get("token") == self._token:
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
  """A resume (the workdir has checkpoints) must keep the config of the run's last launch
  that trained (record_launch), except the RESUMABLE keys and those config.resume_overrides
  lists. Returns the changed keys {key: (old, new)} it allows; raises UserError listing the
  others (process 0 decides, from its view of the workdir; every process raises)."""
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
  last = launches[-1]["config"]
  try:  # Its paths as this launch's are (validate.expand_paths): '~/data' is the same folder.
    last = validate.expand_paths(last)[0]
  except UserError:  # A variable unset now: compared as recorded.
    pass
  changed = changes(last, config)
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
  """Appends this launch to WORKDIR/config.jsonl. Call it as the launch starts training (set
  up, state restored or initialized): one that fails before trained nothing, and must not
  become the launch a resume is compared with. Writes config.json while the run has no
  checkpoint: until then, a new launch starts the run afresh (one that failed before its
  first save left nothing to resume)."""
  if jax.process_index() != 0:
    return
  resolved = json.loads(config.to_json_best_effort())
  first_config = os.path.join(directory, FIRST_CONFIG_FILE)
  if not os.path.exists(first_config) or not has_checkpoints(directory):
    with paths.atomic_open(first_config) as f:  # Never half written.
      json.dump(resolved, f, indent=2)
  record = {"time": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": socket.gethostname(), "pid": os.getpid(), "commit": provenance.commit(),
            "changed": {k: list(v) for k, v in (changed or {}).items()}, "config": resolved}
  with open(os.path.join(directory, HISTORY_FILE), "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")
