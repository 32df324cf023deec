"""A second synthetic segmentation task: textured geometric shapes on textured backgrounds.

The built-in data set (``nni_rspnet/seg/builtin.py``) is handwritten digits on photo crops; a claim
measured on it alone may rest on that one data set. This generator makes a task unlike it and writes
it in the product's ``folder:`` layout, so every command reads it with ``--data folder:DIR``::

    python -m benchmarks.shapes --out runs/shapes            # 2000 train / 400 val images, 48x96
    nni-rspnet train ... --data folder:runs/shapes --set space.num_classes=7 --set data.crop_size=[48,96]

(``search_spaces/tiny.yaml`` crops 64x128, which pads 48x96 images with ignored pixels.)

Classes are the background and six shapes (``SHAPE_CLASSES``). Each image holds 1 .. 4 of them at a
random size (0.15 .. 0.7 of the image height), rotation and position, later ones covering earlier
ones in the image and in the mask. The texture and colours of an object are drawn independently of
its class (solid, stripes, checkerboard, dots, noise), so only the outline tells the class; the
backgrounds are smooth colour noise, gradients or crops of scikit-learn's two sample photos.
Everything is drawn at ``SUPERSAMPLE`` times the size and box-filtered down: edges are anti-aliased,
a pixel's label is the class that covers most of it, and a pixel whose majority covers less than
``RIM_SHARE`` of it (the thin rim along every edge) is 255 (ignore).

The same arguments give byte-identical files; image ``i`` of a split depends only on the seed, the
split and ``i`` (a smaller set is a prefix of a larger one), and train and val use separate streams.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ["background", "disc", "ring", "square", "triangle", "star", "cross"]
TEXTURES = ("solid", "stripes", "checker", "dots", "noise")
BACKGROUNDS = ("noise", "gradient", "photo")
SPLITS = ("train", "val")
SUPERSAMPLE = 4           # drawn at 4x and box-filtered down: anti-aliased edges, fractional coverage
RIM_SHARE = 0.75          # a pixel whose majority class covers less than this share of it is ignored
IGNORE = 255
MAX_OBJECTS = 4
SIZE_RANGE = (0.15, 0.7)  # object extent (circumscribed diameter) as a fraction of the image height
MAX_OCCLUDED = 0.6        # a new object may hide at most this share of what is visible of an earlier one
MIN_CONTRAST = 60.0       # RGB distance between an object's mean colour and its surroundings' mean
FORMAT_VERSION = 1        # stored in meta.json; bump it when the pictures change, so old copies are redone

_PHOTOS: List[np.ndarray] = []


def _photos() -> List[np.ndarray]:
    if not _PHOTOS:
        from sklearn.datasets import load_sample_images  # scikit-learn: only for photo backgrounds

        _PHOTOS.extend(np.asarray(p) for p in load_sample_images().images)
    return _PHOTOS


# --- shapes ------------------------------------------------------------------------------------------

def _regular(n: int, radius: float, angle: float, offset: float = 0.0) -> np.ndarray:
    t = angle + offset + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], 1)


def shape_polygons(kind: str, radius: float, angle: float, rng: np.random.Generator) -> List[Tuple[np.ndarray, int]]:
    """The outline of a shape centred on the origin, as ``(vertices [N, 2] as x, y; fill)`` polygons drawn
    in order (fill 0 cuts a hole). ``radius`` is the circumscribed radius, the same for every class."""
    if kind == "disc":
        return [(_regular(64, radius, 0.0), 1)]
    if kind == "ring":
        return [(_regular(64, radius, 0.0), 1), (_regular(64, radius * rng.uniform(0.4, 0.6), 0.0), 0)]
    if kind == "square":
        return [(_regular(4, radius, angle), 1)]
    if kind == "triangle":
        return [(_regular(3, radius, angle), 1)]
    if kind == "star":
        outer, inner = _regular(5, radius, angle), _regular(5, radius * rng.uniform(0.4, 0.5), angle, np.pi / 5)
        return [(np.stack([outer, inner], 1).reshape(10, 2), 1)]
    if kind == "cross":
        w = rng.uniform(0.22, 0.32)  # arm half-width, as a share of the arm length
        length = radius / np.hypot(1.0, w)
        arm = np.array([[w, w], [1, w], [1, -w], [w, -w]])  # a quarter of the outline, then rotated round
        pts = np.concatenate([arm @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
                              for a in np.pi / 2 * np.arange(4)])
        c, s = np.cos(angle), np.sin(angle)
        return [(length * pts @ np.array([[c, s], [-s, c]]), 1)]
    raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPE_CLASSES[1:]}")


def rasterise(polygons: Sequence[Tuple[np.ndarray, int]], centre: Tuple[float, float],
              canvas_shape: Tuple[int, int]) -> np.ndarray:
    """A bool mask of the canvas (``SUPERSAMPLE`` times the image size) covered by the polygons, placed
    at ``centre`` (``y, x`` in image pixels)."""
    img = Image.new("L", (canvas_shape[1], canvas_shape[0]), 0)
    draw = ImageDraw.Draw(img)
    for verts, fill in polygons:
        # Image pixel (y, x) spans [y, y+1) x [x, x+1); canvas pixel centres sit at integer coordinates.
        xy = (verts + [centre[1], centre[0]]) * SUPERSAMPLE - 0.5
        draw.polygon([tuple(p) for p in xy.tolist()], fill=255 * fill)
    return np.asarray(img) > 0


# --- textures ----------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int], cell: float, channels: int = 1) -> np.ndarray:
    """Values in [0, 1] that vary over about ``cell`` canvas pixels: a random grid resized bicubically."""
    gh, gw = max(2, int(np.ceil(shape[0] / cell)) + 1), max(2, int(np.ceil(shape[1] / cell)) + 1)
    grid = rng.integers(0, 256, (gh, gw, channels), dtype=np.uint8)
    out = np.stack([np.asarray(Image.fromarray(grid[..., c]).resize((shape[1], shape[0]), Image.BICUBIC))
                    for c in range(channels)], -1)
    return out.astype(np.float32) / 255.0


def texture_pattern(kind: str, shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The weight of an object's first colour over a canvas box, ``float32 [h, w]`` in [0, 1]; sizes are
    in image pixels (periods of 2.5 .. 8), orientations random."""
    if kind == "solid":
        return np.ones(shape, np.float32)
    if kind == "noise":
        return _smooth_noise(rng, shape, SUPERSAMPLE * rng.uniform(1.0, 2.5))[..., 0]
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32) / SUPERSAMPLE
    t = rng.uniform(0, np.pi)
    u, v = xs * np.cos(t) + ys * np.sin(t), -xs * np.sin(t) + ys * np.cos(t)
    period = rng.uniform(2.5, 8.0)
    u, v = u / period + rng.uniform(), v / period + rng.uniform()
    if kind == "stripes":
        return (u % 1.0 < 0.5).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    if kind == "dots":
        return (np.hypot(u % 1.0 - 0.5, v % 1.0 - 0.5) > rng.uniform(0.2, 0.35)).astype(np.float32)
    raise ValueError(f"unknown texture {kind!r}; expected one of {TEXTURES}")


def pick_colours(rng: np.random.Generator, weight: float, surround: np.ndarray, two: bool,
                 tries: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """Two colours for a texture whose first colour covers ``weight`` of the object: distinct from each
    other (for patterns) and with a mean at least ``MIN_CONTRAST`` from ``surround``, else the farthest
    of ``tries`` candidates."""
    first = rng.uniform(0, 255, (tries, 3))
    second = rng.uniform(0, 255, (tries, 3)) if two else first
    mean = weight * first + (1 - weight) * second
    score = np.linalg.norm(mean - surround, axis=1)
    if two:
        score = np.where(np.linalg.norm(first - second, axis=1) >= 80, score, 0.0)
    good = np.flatnonzero(score >= MIN_CONTRAST)
    k = int(good[0]) if good.size else int(np.argmax(score))
    return first[k].astype(np.float32), second[k].astype(np.float32)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background at canvas size, ``float32 [S*h, S*w, 3]`` in [0, 255]."""
    ch, cw = SUPERSAMPLE * h, SUPERSAMPLE * w
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if kind == "photo":
        photo = _photos()[rng.integers(len(_photos()))]
        top = max(1.0, min(photo.shape[0] / h, photo.shape[1] / w) * 0.95)
        zoom = float(np.exp(rng.uniform(0.0, np.log(top))))
        ph, pw = min(photo.shape[0], int(h * zoom)), min(photo.shape[1], int(w * zoom))
        y0, x0 = rng.integers(photo.shape[0] - ph + 1), rng.integers(photo.shape[1] - pw + 1)
        crop = Image.fromarray(photo[y0:y0 + ph, x0:x0 + pw]).resize((cw, ch), Image.BILINEAR)
        out = np.asarray(crop, dtype=np.float32)[..., rng.permutation(3)]  # new colours, same structure
        return out[:, ::-1] if rng.random() < 0.5 else out
    if kind == "noise":
        coarse = _smooth_noise(rng, (ch, cw), ch * rng.uniform(0.2, 0.6), 3)
        fine = _smooth_noise(rng, (ch, cw), SUPERSAMPLE * rng.uniform(1.5, 4.0), 3)
        return 255 * np.clip(coarse + rng.uniform(0.1, 0.4) * (fine - 0.5), 0, 1)
    t = rng.uniform(0, 2 * np.pi)
    ramp = np.arange(cw, dtype=np.float32)[None, :] * np.cos(t) + np.arange(ch, dtype=np.float32)[:, None] * np.sin(t)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    a, b = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    return a + ramp[..., None] * (b - a)


# --- pictures ----------------------------------------------------------------------------------------

class Canvas:
    """One picture drawn at ``SUPERSAMPLE`` times its size: colours, a class map and an object map.

    Args:
        rgb: the background, ``float32 [S*h, S*w, 3]``.
    """

    def __init__(self, rgb: np.ndarray):
        self.rgb = np.array(rgb, np.float32)
        self.labels = np.zeros(rgb.shape[:2], np.uint8)
        self.owner = np.zeros(rgb.shape[:2], np.uint8)  # which object (1, 2, ...) shows at each pixel
        self.objects = 0

    def occludes(self, mask: np.ndarray) -> float:
        """The largest share of an earlier object's visible pixels that ``mask`` would cover."""
        if not self.objects:
            return 0.0
        visible = np.bincount(self.owner.ravel(), minlength=self.objects + 1)[1:]
        covered = np.bincount(self.owner[mask], minlength=self.objects + 1)[1:]
        return float(np.max(covered / np.maximum(visible, 1)))

    def paint(self, box: Tuple[slice, slice], inside: np.ndarray, class_id: int, colours: np.ndarray) -> None:
        """Puts an object on top: in the canvas box ``box``, ``colours`` (``[n, 3]``) at the True pixels
        of ``inside`` and its class."""
        self.objects += 1
        self.rgb[box][inside] = colours
        self.labels[box][inside] = class_id
        self.owner[box][inside] = self.objects

    def finish(self) -> Tuple[np.ndarray, np.ndarray]:
        """The picture at its size: ``float32 [h, w, 3]`` (box-filtered) and ``uint8 [h, w]`` class ids,
        with ``IGNORE`` where no class covers ``RIM_SHARE`` of the pixel."""
        s, n = SUPERSAMPLE, len(SHAPE_CLASSES)
        ch, cw = self.labels.shape
        h, w = ch // s, cw // s
        rows = self.rgb.reshape(h, s, cw * 3)
        rows = sum(rows[:, k] for k in range(1, s)) + rows[:, 0]  # slices, not a strided mean: 8x faster
        cols = rows.reshape(h, w, s, 3)
        image = (sum(cols[:, :, k] for k in range(1, s)) + cols[:, :, 0]) / (s * s)
        cell = (np.arange(ch)[:, None] // s) * w + np.arange(cw)[None, :] // s
        counts = np.bincount((cell * n + self.labels).ravel(), minlength=h * w * n).reshape(h, w, n)
        mask = counts.argmax(-1).astype(np.uint8)
        mask[counts.max(-1) < RIM_SHARE * s * s] = IGNORE
        return image, mask


def draw_object(canvas: Canvas, rng: np.random.Generator, kind: str, radius: float, angle: float,
                centre: Tuple[float, float], texture: str) -> None:
    """Rasterises one shape, textures it in colours that stand out from what it covers, and paints it."""
    mask = rasterise(shape_polygons(kind, radius, angle, rng), centre, canvas.labels.shape)
    _draw_texture(canvas, rng, mask, SHAPE_CLASSES.index(kind), texture)


def _draw_texture(canvas: Canvas, rng: np.random.Generator, mask: np.ndarray, class_id: int, texture: str) -> None:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return
    box = (slice(max(rows[0] - SUPERSAMPLE, 0), rows[-1] + 1 + SUPERSAMPLE),
           slice(max(cols[0] - SUPERSAMPLE, 0), cols[-1] + 1 + SUPERSAMPLE))
    inside = mask[box]
    pattern = texture_pattern(texture, inside.shape, rng)[inside][:, None]
    # What the object will be seen against: the canvas under it and one image pixel around it.
    surround = canvas.rgb[box].reshape(-1, 3).mean(0)
    first, second = pick_colours(rng, float(pattern.mean()), surround, two=texture != "solid")
    canvas.paint(box, inside, class_id, pattern * first + (1 - pattern) * second)


def render(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """One random picture: ``(uint8 [h, w, 3], uint8 [h, w])``."""
    canvas = Canvas(background(rng, h, w))
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        kind = SHAPE_CLASSES[1 + rng.integers(len(SHAPE_CLASSES) - 1)]
        texture = TEXTURES[rng.integers(len(TEXTURES))]
        lo, hi = SIZE_RANGE
        radius = 0.5 * h * float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # as many small as large
        radius = min(radius, 0.5 * min(h, w) - 0.5)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(8):  # a few positions, so no object is mostly hidden by a later one
            centre = (rng.uniform(radius, h - radius), rng.uniform(radius, w - radius))
            mask = rasterise(shape_polygons(kind, radius, angle, rng), centre, canvas.labels.shape)
            if canvas.occludes(mask) <= MAX_OCCLUDED:
                _draw_texture(canvas, rng, mask, SHAPE_CLASSES.index(kind), texture)
                break
    image, mask = canvas.finish()
    image += rng.normal(0.0, rng.uniform(0.0, 6.0), image.shape)  # sensor noise: no perfectly flat areas
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), mask


def sample(seed: int, split: str, index: int, image_size: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of ``split``: its own random stream, so it does not depend on the split's size."""
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
    return render(rng, int(image_size[0]), int(image_size[1]))


# --- the data set on disk ----------------------------------------------------------------------------

def _parameters(num_train: int, num_val: int, image_size: Sequence[int], seed: int) -> Dict[str, Any]:
    return {"generator": "benchmarks.shapes", "format_version": FORMAT_VERSION, "num_train": int(num_train),
            "num_val": int(num_val), "image_size": [int(image_size[0]), int(image_size[1])], "seed": int(seed),
            "classes": list(SHAPE_CLASSES)}


def _read_meta(out_dir: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(out_dir, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == "benchmarks.shapes" else None


def _complete(out_dir: str, params: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The stored meta data when ``out_dir`` holds every file of a data set made with ``params``."""
    meta = _read_meta(out_dir)
    if meta is None or any(meta.get(k) != v for k, v in params.items()):
        return None
    for split in SPLITS:
        expected = {f"{i:05d}.png" for i in range(params[f"num_{split}"])}
        for sub in ("images", "masks"):
            folder = os.path.join(out_dir, split, sub)
            if not os.path.isdir(folder) or not expected <= set(os.listdir(folder)):
                return None
    return meta


def _write_split(root: str, split: str, num: int, image_size: Sequence[int], seed: int) -> Dict[str, float]:
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, split, sub))
    counts = np.zeros(256, np.int64)
    for i in range(num):
        image, mask = sample(seed, split, i, image_size)
        Image.fromarray(image, "RGB").save(os.path.join(root, split, "images", f"{i:05d}.png"))
        Image.fromarray(mask, "L").save(os.path.join(root, split, "masks", f"{i:05d}.png"))
        counts += np.bincount(mask.ravel(), minlength=256)
    share = {name: round(float(counts[c] / counts.sum()), 4) for c, name in enumerate(SHAPE_CLASSES)}
    share["ignore"] = round(float(counts[IGNORE] / counts.sum()), 4)
    return share


def make_shapes(out_dir: str, num_train: int = 2000, num_val: int = 400, image_size: Sequence[int] = (48, 96),
                seed: int = 0) -> Dict[str, Any]:
    """Writes the shapes data set in the ``folder:`` layout, unless ``out_dir`` already holds it.

    Layout: ``classes.txt`` (background first), ``{train,val}/images/NNNNN.png`` (RGB),
    ``{train,val}/masks/NNNNN.png`` (class ids, 255 = ignore) and ``meta.json`` (the arguments and the
    pixel share of every class). The set is built in a temporary folder beside ``out_dir`` and renamed
    into place, so an interrupted run leaves no half data set; a stored set of other arguments is
    replaced, a folder that holds anything else is refused.

    Args:
        out_dir: the data set's folder.
        num_train, num_val: images per split.
        image_size: ``[H, W]`` (each at least 16).
        seed: the seed; the same arguments always give byte-identical files.

    Returns:
        The meta data (arguments, ``classes``, ``pixel_share`` per split), with ``path`` and ``reused``
        (True when the stored set was kept).

    Raises:
        ValueError: a bad argument.
        FileExistsError: ``out_dir`` holds something other than a shapes data set.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}")
    if len(image_size) != 2 or min(image_size) < 16:
        raise ValueError(f"image_size must be [H, W] with H, W >= 16, got {list(image_size)}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    params = _parameters(num_train, num_val, image_size, seed)
    meta = _complete(out_dir, params)
    if meta is not None:
        return dict(meta, path=out_dir, reused=True)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and _read_meta(out_dir) is None:
        raise FileExistsError(f"{out_dir}: exists and holds no shapes data set; not overwriting it")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out_dir)}.tmp-")
    try:
        with open(os.path.join(tmp, "classes.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(SHAPE_CLASSES) + "\n")
        shares = {split: _write_split(tmp, split, params[f"num_{split}"], image_size, seed) for split in SPLITS}
        meta = dict(params, pixel_share=shares)
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:  # last: marks it complete
            json.dump(meta, f, indent=1)
            f.write("\n")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp leaves 0700
        if _complete(out_dir, params) is None:  # another process may have finished the same set meanwhile
            _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dict(meta, path=out_dir, reused=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(new: str, target: str) -> None:
    """Renames ``new`` to ``target``; an existing ``target`` (empty, or an older data set) is moved aside
    first and deleted after, so ``target`` is never a mix of both."""
    if os.path.isdir(target):
        old = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.old-")
        os.replace(target, os.path.join(old, "data"))
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shapes", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the data set's folder (use as --data folder:DIR)")
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--num-val", type=int, default=400)
    p.add_argument("--image-size", type=int, nargs=2, default=[48, 96], metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        meta = make_shapes(args.out, args.num_train, args.num_val, args.image_size, args.seed)
    except (ValueError, FileExistsError) as err:
        print(f"python -m benchmarks.shapes: error: {err}", file=sys.stderr)
        return 2
    what = "kept the stored data set" if meta["reused"] else "wrote"
    print(f"{what} {meta['path']}: {meta['num_train']} train / {meta['num_val']} val images, "
          f"{meta['image_size'][0]}x{meta['image_size'][1]}, seed {meta['seed']}")
    print(f"classes ({len(meta['classes'])}, use --set space.num_classes={len(meta['classes'])}): "
          f"{', '.join(meta['classes'])}")
    print(f"{'pixel share':<12}" + "".join(f"{s:>8}" for s in SPLITS))
    for name in [*meta["classes"], "ignore"]:
        print(f"{name:<12}" + "".join(f"{meta['pixel_share'][s][name]:>8.4f}" for s in SPLITS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
