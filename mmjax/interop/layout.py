"""Weight layouts shared by the converters: torch's Linear [out, in] against mmjax's kernels
[in, out], and the fused q/k/v projection of mmjax's attention ([width, 3, heads, head_dim])."""
import numpy as np

from mmjax.errors import UserError


# transformers' hidden_act -> config.model.gelu, and back (the names transformers writes).
GELU = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "quick_gelu": "quick"}
HIDDEN_ACT = {"exact": "gelu", "tanh": "gelu_pytorch_tanh", "quick": "quick_gelu"}


def gelu(act):
  """config.model.gelu of a checkpoint's hidden_act; UserError for one mmjax does not have."""
  if act not in GELU:
    raise UserError(f"hidden_act={act!r} in the checkpoint's config.json: mmjax has "
                    f"{sorted(GELU)}.")
  return GELU[act]


def linear_in(weight):
  """A torch Linear weight [out, in] as an mmjax kernel [in, out] (and back: the same map)."""
  return np.ascontiguousarray(np.asarray(weight, np.float32).T)


def fuse_qkv(weights, biases, heads):
  """Separate q, k, v Linear weights [D, D] and biases [D] -> mmjax's qkv (kernel
  [D, 3, heads, D / heads], bias [3, heads, D / heads])."""
  width = weights[0].shape[1]
  kernel = np.stack([linear_in(w) for w in weights], 1).reshape(width, 3, heads, width // heads)
  bias = np.stack([np.asarray(b, np.float32) for b in biases]).reshape(3, heads, width // heads)
  return kernel, bias


def split_qkv(kernel, bias):
  """mmjax's qkv kernel and bias -> ([q, k, v] Linear weights [D, D], [q, k, v] biases)."""
  width = kernel.shape[0]
  k, b = np.asarray(kernel).reshape(width, 3, width), np.asarray(bias).reshape(3, width)
  return [linear_in(k[:, j]) for j in range(3)], [b[j] for j in range(3)]


def out_in(weight, heads):
  """The attention's output Linear [D, D] as mmjax's out kernel [heads, D / heads, D]."""
  width = weight.shape[0]
  return linear_in(weight).reshape(heads, width // heads, width)


def _get(model_cfg, dotted):
  node = model_cfg
  for part in dotted.split("."):
    node = node.get(part) if hasattr(node, "get") else None
  return node


def config_problems(model_cfg, settings):
  """The `--config.model.<key>=<value>` flags that config.model lacks to hold `settings`
  ({dotted key: value}, a converter's model_config)."""
  problems = []
  for key, want in settings.items():
    have = _get(model_cfg, key)
    if isinstance(want, tuple):
      same = have is not None and tuple(have) == want
    elif isinstance(want, float):
      same = have is not None and bool(np.isclose(float(have), want, rtol=1e-6))
    else:
      same = have == want
    if not same:
      problems.append(f"--config.model.{key}={want}")
  return problems


def apply(model_cfg, settings):
  """config.model with `settings` ({dotted key: value}) set in place."""
  with model_cfg.unlocked():
    model_cfg.update_from_flattened_dict(dict(settings))
  return model_cfg


def _bicubic_matrix(n_in, n_out, a=-0.75):
  """f64[n_out, n_in]: 1-D bicubic resampling as torch's interpolate(mode='bicubic',
  align_corners=False) computes it (Keys' cubic with a = -0.75, half-pixel centres, edge
  indices clamped)."""
  def w(x):
    x = abs(x)
    if x <= 1:
      return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
      return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    src = (i + 0.5) * n_in / n_out - 0.5
    base = int(np.floor(src))
    for j in range(base - 1, base + 3):
      m[i, min(max(j, 0), n_in - 1)] += w(src - j)
  return m


def resize_bicubic(table_hwd, rows, cols):
  """A [h, w, D] position table resized to [rows, cols, D] as transformers resizes ViT
  positions (interpolate_pos_encoding: torch bicubic, align_corners=False)."""
  t = np.asarray(table_hwd, np.float64)
  out = np.einsum("rh,hwd->rwd", _bicubic_matrix(t.shape[0], rows), t)
  return np.einsum("cw,rwd->rcd", _bicubic_matrix(t.shape[1], cols), out).astype(np.float32)


# A Transformer block's tensors by role, in the order `block` takes their HF names.
BLOCK_ROLES = ("q", "k", "v", "out", "norm1", "norm2", "fc1", "fc2")


def block(take, src, dst, heads, names, out):
  """One pre- or post-LN block's HF tensors -> mmjax's (in `out`, under `dst`): `take(name)`
  reads a tensor, `src` prefixes the HF names, `names` gives them by BLOCK_ROLES."""
  n = dict(zip(BLOCK_ROLES, names))
  out[dst + "attn/qkv/kernel"], out[dst + "attn/qkv/bias"] = fuse_qkv(
      [take(f"{src}{n[r]}.weight") for r in "qkv"], [take(f"{src}{n[r]}.bias") for r in "qkv"],
      heads)
  out[dst + "attn/out/kernel"] = out_in(take(f"{src}{n['out']}.weight"), heads)
  out[dst + "attn/out/bias"] = take(f"{src}{n['out']}.bias")
  for role in ("norm1", "norm2"):
    out[f"{dst}{role}/scale"] = take(f"{src}{n[role]}.weight")
    out[f"{dst}{role}/bias"] = take(f"{src}{n[role]}.bias")
  for role in ("fc1", "fc2"):
    out[f"{dst}mlp/{role}/kernel"] = linear_in(take(f"{src}{n[role]}.weight"))
    out[f"{dst}mlp/{role}/bias"] = take(f"{src}{n[role]}.bias")


def unblock(p, src, dst, names, out):
  """The inverse of `block`: one mmjax block's tensors in `p` (under `src`) -> HF tensors in
  `out` (under `dst`, named by `names` in BLOCK_ROLES order)."""
  n = dict(zip(BLOCK_ROLES, names))
  weights, biases = split_qkv(p[src + "attn/qkv/kernel"], p[src + "attn/qkv/bias"])
  for r, w, b in zip("qkv", weights, biases):
    out[f"{dst}{n[r]}.weight"], out[f"{dst}{n[r]}.bias"] = w, b
  kernel = np.asarray(p[src + "attn/out/kernel"])
  out[f"{dst}{n['out']}.weight"] = linear_in(kernel.reshape(-1, kernel.shape[-1]))
  out[f"{dst}{n['out']}.bias"] = p[src + "attn/out/bias"]
  for role in ("norm1", "norm2"):
    out[f"{dst}{n[role]}.weight"] = p[f"{src}{role}/scale"]
    out[f"{dst}{n[role]}.bias"] = p[f"{src}{role}/bias"]
  for role in ("fc1", "fc2"):
    out[f"{dst}{n[role]}.weight"] = linear_in(p[f"{src}mlp/{role}/kernel"])
    out[f"{dst}{n[role]}.bias"] = p[f"{src}mlp/{role}/bias"]


def patch_conv(kernel, channels):
  """mmjax's patch embedding kernel [p * p * C, D] -> a torch Conv2d weight [D, C, p, p]
  (the inverse of the importers' transpose)."""
  k = np.asarray(kernel, np.float32)
  p = int(round((k.shape[0] / channels) ** 0.5))
  return np.ascontiguousarray(k.reshape(p, p, channels, -1).transpose(3, 2, 0, 1))


def settings_problems(model_cfg, settings):
  """What config.model differs in from `settings` ({dotted key: value}), as 'key=value (this
  model has ...)' lines: why an export cannot express the model."""
  return [f"{key}={want!r} (this model has {_get(model_cfg, key)!r})"
          for key, want in settings.items() if config_problems(model_cfg, {key: want})]
