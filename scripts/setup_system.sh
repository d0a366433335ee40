#!/usr/bin/env bash
# System packages some features need, installed when missing (run by `make setup`):
#   chromium                 browser bundles are proven in a real headless Chromium
#   *-linux-gnu cross gcc    TVM cross-compilation for arm64 / armv7 targets
#   qemu-user + libpython3.11:arm64   arm64 TVM libraries are run (not only linked) under emulation
# Needs root and apt-get; elsewhere it says what is missing, and the tests that need it are skipped.
set -u
want=()
command -v chromium >/dev/null 2>&1 || want+=(chromium)
for pkg in ${MODELKIT_APT_EXTRA:-}; do want+=("$pkg"); done
for bin_pkg in aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu aarch64-linux-gnu-g++:g++-aarch64-linux-gnu \
               arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf arm-linux-gnueabihf-g++:g++-arm-linux-gnueabihf; do
  command -v "${bin_pkg%%:*}" >/dev/null 2>&1 || want+=("${bin_pkg#*:}")
done
command -v qemu-aarch64 >/dev/null 2>&1 || want+=(qemu-user)
arm64_py=/usr/lib/aarch64-linux-gnu/libpython3.11.so.1.0
if [ ! -e "$arm64_py" ] && [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null 2>&1; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  want+=(libpython3.11:arm64)
fi
if [ ${#want[@]} -eq 0 ]; then
  echo "setup-system: chromium and cross toolchains present"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup-system: installing ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null \
    || echo "setup-system: apt-get could not install ${want[*]}; the tests that need them will be skipped"
else
  echo "setup-system: missing ${want[*]} (needs root + apt-get); the tests that need them will be skipped"
fi
# the aarch64 Python + TVM runtime that runs arm64 libraries under qemu (wheels from PyPI, cached)
if command -v qemu-aarch64 >/dev/null 2>&1 && [ -e "$arm64_py" ]; then
  "${PY:-.venv/bin/python}" -c "from modelkit.targets.tvm import emulate as e; e.available() is None or e.setup(); print('setup-system: aarch64 TVM runtime ready')" \
    || echo "setup-system: could not set up the aarch64 runtime; arm64 libraries will be checked by ELF header only"
fi
# onnxruntime-web for browser bundles, from the npm registry, cached under ~/.cache/modelkit/npm
if command -v npm >/dev/null 2>&1; then
  "${PY:-.venv/bin/python}" -c "from modelkit.web.npm import ort_web_dist; print('setup-system: onnxruntime-web at', ort_web_dist())" \
    || echo "setup-system: could not install onnxruntime-web; browser tests will be skipped"
fi
exit 0
