"""The TVM compiler: ONNX in, a verified `.tvm.so` library out, for a target of the registry (modelkit.targets).

- compile: simplify, import into Relax, (tune,) build, export, verify, manifest.
- edge: the onnx -> tvm converter edge (named by the converters' route table) and TVM's parity tolerance.
- tuning, scheduler, builder: MetaSchedule tuning with a database per model and target, budgets, Ctrl-C
  that keeps the records, and a builder worker that lives across batches.
- cross, emulate: cross toolchains for arm64 / armv7, and running an arm64 library under qemu.

TVM itself is imported only inside the functions that need it.
"""
