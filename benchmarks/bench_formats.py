"""Benchmark every registered format against Keras: the digits CNN (trained) and an untrained MobileNetV2.

    python benchmarks/bench_formats.py [--out bench-out] [--duration 2s] [--batch 1,32] [--image-size 96]

Trains (or reuses) the CNN, builds MobileNetV2 (alpha 0.35, random init), converts each to every format
reachable by a registered converter (each hop verified), benchmarks all artifacts that have a runtime
engine plus the Keras baselines in one run, writes bench_formats.{json,csv,html} and prints each
artifact's speed-up over Keras model.predict. Numbers are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelkit import _child, manifest  # noqa: E402
from modelkit.errors import ModelkitError  # noqa: E402


def build_mobilenet(out: str, image_size: int, alpha: float = 0.35) -> str:
    """Runs in a child with Keras: save an untrained MobileNetV2 .keras with its manifest.

    The weights stay random, but the BatchNorm moving statistics are set to those of one batch of
    seeded inputs: with Keras' initial statistics (mean 0, variance 1) the activations saturate
    through 17 blocks and the output is the same for every input, which parity rightly refuses as vacuous.
    """
    import keras
    import numpy as np

    from modelkit.core import zoo
    from modelkit.keras_io.files import keras_signature

    net = zoo.build_model("mobilenetv2", input_shape=(image_size, image_size, 3), alpha=alpha, seed=0)
    bns = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        bn.momentum = 0.0  # moving statistics := this batch's statistics
    x = np.random.default_rng(0).random((32, image_size, image_size, 3), dtype=np.float32)
    net(x, training=True)
    for bn in bns:
        bn.momentum = 0.99
    net.save(out)
    manifest.write(out, manifest.Manifest(format="keras", signature=keras_signature(net).to_dict()))
    return out


def train_mobilenet(out: str, image_size: int, epochs: int = 12, alpha: float = 1.0) -> str:
    """Runs in a child with Keras: MobileNetV2 trained on the digits upscaled to image_size (grey as RGB).

    A trained network of realistic shape, so int8 and bf16 are judged by test accuracy rather than by
    agreement with a random one. BatchNorm momentum 0.9 (Keras' 0.99 leaves the moving statistics far from
    the data after ~500 steps) and a cosine learning-rate decay: test accuracy ~0.97 after 12 epochs (about
    3 minutes at 64 px on 2 cores). Seeded; the test split is never seen in training.
    """
    import keras
    import numpy as np

    from modelkit.core import data, zoo
    from modelkit.keras_io.files import keras_signature

    keras.utils.set_random_seed(0)
    ds = data.load_digits_split(seed=0)
    x = data.model_inputs("mobilenetv2", ds.x_train, image_size=image_size)["image"]
    net = zoo.build_model("mobilenetv2", input_shape=(image_size, image_size, 3), alpha=alpha, seed=0)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    steps = epochs * int(np.ceil(len(x) / 32))
    net.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
                loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    net.fit(x, ds.y_train, epochs=epochs, batch_size=32, verbose=0)
    net.save(out)
    manifest.write(out, manifest.Manifest(format="keras", signature=keras_signature(net).to_dict()))
    return out


def sources(models: Path, image_size: int) -> list[Path]:
    models.mkdir(parents=True, exist_ok=True)
    cnn = models / "cnn.keras"
    if not cnn.exists():
        print(f"training the digits CNN -> {cnn}", file=sys.stderr, flush=True)
        _child.run("modelkit.core.train:train", {"model": "cnn", "data": "digits", "epochs": 5, "out": str(cnn),
                                                  "force": True, "verbose": False}, backend="tensorflow")
    mnet = models / f"mobilenetv2_{image_size}.keras"
    if not mnet.exists():
        print(f"building MobileNetV2 (alpha 0.35, {image_size}x{image_size}, untrained) -> {mnet}",
              file=sys.stderr, flush=True)
        _child.run("benchmarks.bench_formats:build_mobilenet", {"out": str(mnet), "image_size": image_size},
                   backend="tensorflow")
    return [cnn, mnet]


def convert_all(src: Path, out_dir: Path) -> list[Path]:
    """Every format reachable from .keras, one target at a time so one failing edge spares the rest."""
    import modelkit
    from modelkit.converters import output_path, parse_targets
    from modelkit.formats import Format

    done = []
    for fmt in parse_targets("all", Format.KERAS):
        dest = output_path(src, fmt, out_dir)
        if dest.exists() and manifest.read(dest) is not None:
            done.append(dest)
            continue
        try:
            results = modelkit.convert(src, fmt.value, out_dir=out_dir, force=True)
            done.append(Path(results[-1].path))
        except ModelkitError as exc:
            print(f"skip {fmt.value} for {src.name}: {exc}", file=sys.stderr, flush=True)
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("BENCH_OUT", "bench-out"))
    ap.add_argument("--duration", default="2s")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--image-size", type=int, default=96)
    args = ap.parse_args()

    from modelkit.bench import run_bench
    from modelkit.bench.report import text_table, write_csv, write_html
    from modelkit.bench.stats import parse_duration
    from modelkit.formats import detect
    from modelkit.runtime import ENGINES

    out = Path(args.out)
    t0 = time.perf_counter()
    artifacts: list[Path] = []
    for src in sources(out / "models", args.image_size):
        for a in convert_all(src, out / "models"):
            if detect(a) in ENGINES:
                artifacts.append(a)
            else:
                print(f"skip {a.name}: no runtime engine for {detect(a).value} yet", file=sys.stderr)
    print(f"models ready in {time.perf_counter() - t0:.0f} s; benchmarking {len(artifacts)} artifacts",
          file=sys.stderr, flush=True)
    batches = tuple(int(b) for b in args.batch.split(","))
    result = run_bench(artifacts, batches=batches, duration=parse_duration(args.duration), warmup=3,
                       keep_going=True, timeout=600)
    (out / "bench_formats.json").write_text(json.dumps(result, indent=2))
    write_csv(result, out / "bench_formats.csv")
    write_html(result, out / "bench_formats.html")
    print(text_table(result))
    print("\nspeed-up over Keras model.predict (its p50 over the artifact's; > 1 is faster):")
    for r in result["rows"]:
        if r["kind"] == "artifact" and r.get("speedup_vs_predict"):
            print(f"  {r['name']:<30} b={r['batch']:<3} {r['speedup_vs_predict']:.1f}x; vs model(x) "
                  f"{r['speedup_vs_direct'] or float('nan'):.2f}x")
    print(f"\nwrote {out / 'bench_formats.html'} ({time.perf_counter() - t0:.0f} s in all)")
    return 1 if any(r.get("error") for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
