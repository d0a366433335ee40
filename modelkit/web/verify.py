"""Browser parity: run the bundle in headless Chromium on seeded (or real) inputs and compare every
output with the source model; the report goes into the bundle's manifest (bundle.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParityError
from ..spec import Signature
from .browser import BrowserSession
from .bundle import read_bundle, record_browser_parity

# onnxruntime-web's WebAssembly kernels against the source on the CPU: float32 sums in another order.
BROWSER_ATOL = 1e-4


def verify_bundle(bundle: str | Path, reference: str | Path | None = None, batch_sizes: tuple[int, ...] = (1, 7),
                  seed: int = 0, atol: float = BROWSER_ATOL, screenshot: str | Path | None = None) -> dict[str, Any]:
    """Compare the bundle in Chromium with `reference` (default: the bundle's source model)."""
    from .. import manifest as _manifest
    from ..converters.hop import reference_data
    from ..converters.verify import make_inputs
    from ..runtime import load

    bundle = Path(bundle)
    info = read_bundle(bundle)
    sig = Signature.from_dict(info["signature"])
    source = Path(info["source"]["path"])
    quantized = (info.get("model") or {}).get("quantization") not in (None, "none")
    # A quantized bundle is compared with its own ONNX model under onnxruntime (its accuracy drop against
    # the source was already gated by the conversion); a float one with the source itself.
    use_source = source.exists() and not quantized
    ref_path = Path(reference) if reference else (source if use_source else bundle / "model.onnx")
    ref = load(ref_path)
    data, label = reference_data(_manifest.read(ref_path), sig)
    worst: dict[str, float] = {o.name: 0.0 for o in sig.outputs}
    agree = total = 0
    cases = []
    with BrowserSession(bundle) as session:
        offset = 0
        for i, batch in enumerate(batch_sizes):
            feed = make_inputs(sig, batch, 16, seed + i, data, offset)
            offset += batch
            got, want = session.predict(feed), ref.predict(feed)
            for name in worst:
                worst[name] = max(worst[name], float(np.max(np.abs(got[name] - want[name]))))
                if want[name].ndim == 2 and want[name].shape[1] > 1:
                    agree += int(np.sum(got[name].argmax(-1) == want[name].argmax(-1)))
                    total += batch
            cases.append({"batch": batch})
        if screenshot:
            session.screenshot(screenshot)
    ok = all(v <= atol for v in worst.values())
    parity = {"ok": ok, "engine": "onnxruntime-web (wasm) in headless Chromium", "reference": str(ref_path),
              "atol": atol, "max_abs": worst, "argmax_agreement": agree / total if total else None,
              "inputs": label or f"seeded uniform [0,1), seed {seed}", "cases": cases}
    record_browser_parity(bundle, parity)
    if not ok:
        raise ParityError(f"the bundle in Chromium differs from {ref_path.name}: max abs {worst} > atol {atol}", parity)
    return parity
