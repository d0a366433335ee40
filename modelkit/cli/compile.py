"""`modelkit compile`: a TVM library for a named target, verified against its ONNX source, optionally tuned."""
from __future__ import annotations

import click

from ._common import check_outputs, echo_json, human_size, import_option, table


@click.command("compile")
@click.argument("model", type=click.Path(exists=True, dir_okay=True))
@click.option("--target", "target", default="server-cpu", show_default=True, metavar="NAME|JSON",
              help="A target from `modelkit targets`, or a TVM target dict as JSON.")
@click.option("--out", "-o", "out", type=click.Path(), default=None,
              help="Library path (*.tvm.so), or else a folder, created when missing (default: MODEL's stem + target "
                   "beside the ONNX model).")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Compile for this fixed batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Keep the batch dynamic (default on CPU when not tuning).")
@click.option("--tune", is_flag=True, help="Tune with MetaSchedule (fixes the batch; default 1).")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Tuning trials in total; stops at the first batch of 4 that reaches it (implies --tune; "
                   "default with --tune alone: 64).")
@click.option("--budget", default=None, metavar="TIME",
              help="Tuning time budget, e.g. 90s, 10m, 1h (implies --tune); stops early, keeps the records.")
@click.option("--rpc", default=None, metavar="HOST:PORT",
              help="Measure tuning candidates on a device registered with this TVM RPC tracker (with --device-key; "
                   "the target may be a cross target such as edge-arm64).")
@click.option("--device-key", default=None, metavar="KEY",
              help="The key the device's RPC server registered under (python -m tvm.exec.rpc_server --key KEY).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Tuning database folder (default: $MODELKIT_CACHE_DIR/tvm or ~/.cache/modelkit/tvm).")
@click.option("--force", is_flag=True, help="Overwrite an existing library.")
@click.option("--no-verify", is_flag=True, help="Skip the parity check against the ONNX source (not recommended).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Samples to verify on (.npz keyed by input name, or 'x' for a one-input model); default: the "
                   "training data set, else ranges inferred from the model, else [0, 1).")
@click.option("--input-spec", "input_spec", multiple=True, metavar="NAME:SHAPE[:DTYPE]",
              help="An input with open dimensions fixed, e.g. tokens:?,64:int32 for a sequence length TVM cannot "
                   "keep open ('?': as the model has it; the first dimension is the batch); repeat per input. A "
                   ".keras source is fixed on the way to ONNX; an ONNX source in its graph (its dtypes kept).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@import_option
def command(model: str, target: str, out: str | None, batch: int | None, dynamic_batch: bool, tune: bool,
            trials: int | None, budget: str | None, rpc: str | None, device_key: str | None, cache_dir: str | None,
            force: bool, no_verify: bool, data: str | None, input_spec: tuple[str, ...], as_json: bool) -> None:
    """Compile MODEL (ONNX, or .keras via ONNX) into a TVM shared library for a target.

    \b
    Examples:
      modelkit compile cnn.onnx --target server-cpu
      modelkit compile cnn.keras --target server-cpu --tune --budget 10m
      modelkit compile cnn.onnx --target edge-arm64 --out cnn.arm64.tvm.so
      modelkit compile cnn.onnx --target edge-arm64 --tune --rpc 192.168.1.20:9190 --device-key rpi4
      modelkit compile cnn.onnx --target '{"kind": "llvm", "mcpu": "znver4"}'
      modelkit compile tagger.keras --input-spec tokens:?,64:int32    # an open sequence length fixed
      modelkit compile upscaler.onnx --input-spec image:?,256,256,3   # an image of any size, fixed

    The library is verified against the ONNX model on this machine (at its batch when fixed); libraries
    for other machines (arm64, armv7, CUDA) are checked by their ELF header only, as their manifest says.
    The tuning database is shared by every model compiled for the target: a second compile of the same
    model applies it without tuning again, and another model's tasks already tuned there (same layer
    shapes) are taken from it, not tuned again. Ctrl-C during tuning keeps the records measured so far.
    """
    from ..targets import DEFAULT_TRIALS, compile

    check_outputs(out, cache_dir)
    if tune and trials is None and budget is None:
        trials = DEFAULT_TRIALS
    result = compile(model, target=target, out=out, batch=batch, dynamic_batch=dynamic_batch, trials=trials,
                     budget=budget, force=force, verify=False if no_verify else None, cache_dir=cache_dir,
                     data=data, rpc=rpc, device_key=device_key, input_spec=list(input_spec) or None)
    if as_json:
        echo_json(result.to_dict())
        return
    parity = "not verified" if result.parity is None else ("ok" if result.parity["ok"] else "FAILED")
    worst = max((o["max_abs"] for o in (result.parity or {}).get("outputs", [])), default=None)
    tuning = result.tuning or {}
    tuned = "-" if not tuning else ("no new trials" if tuning.get("reused") else f"{tuning.get('trials_run')} trials "
                                    f"on {tuning.get('tasks_tuned', 0)} tasks")
    if tuning:
        tuned += f", {tuning.get('tasks_from_db', 0)}/{tuning.get('tasks', 0)} tasks from the database"
        if tuning.get("tasks_default_faster"):
            tuned += f", default schedule kept on {tuning['tasks_default_faster']} (faster)"
    rows = [[result.target, result.path, "dynamic" if result.batch is None else result.batch,
             human_size(result.size_bytes), f"{result.seconds:.1f} s", tuned, parity,
             "-" if worst is None else f"{worst:.1e}", result.verified]]
    click.echo(table(["target", "path", "batch", "size", "time", "tuning", "parity", "max abs err", "verified"],
                     rows))
    if tuning.get("device"):
        d = tuning["device"]
        click.echo(f"tuned on the device '{d['key']}' via the RPC tracker at {d['tracker']}: the latencies are "
                   "that device's (meaningless if it is emulated, e.g. under qemu)")
