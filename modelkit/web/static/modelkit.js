// modelkit browser runtime: the same Signature as every other modelkit engine.
// load() reads signature.json and model.onnx next to this file; predict() binds inputs BY NAME,
// checks rank, fixed dimensions and dtype before onnxruntime-web sees them, and returns
// {name: {data: Float32Array|..., shape: [...]}} for every output.
import * as ort from "./ort/ort.wasm.min.mjs";

ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
ort.env.wasm.numThreads = 1; // no SharedArrayBuffer needed: works from any static host

const TYPES = { float32: ["float32", Float32Array], float64: ["float64", Float64Array], int64: ["int64", BigInt64Array],
                int32: ["int32", Int32Array], uint8: ["uint8", Uint8Array], int8: ["int8", Int8Array], bool: ["bool", Uint8Array] };
let session = null;
let signature = null;

export class InputError extends Error {}

export async function load(modelUrl = new URL("./model.onnx", import.meta.url).href,
                           signatureUrl = new URL("./signature.json", import.meta.url).href) {
  signature = await (await fetch(signatureUrl)).json();
  session = await ort.InferenceSession.create(modelUrl, { executionProviders: ["wasm"] });
  return signature;
}

export function getSignature() { return signature; }

function toTensor(spec, value) {
  const [type, Ctor] = TYPES[spec.dtype] || [];
  if (!type) throw new InputError(`input '${spec.name}': unsupported dtype ${spec.dtype}`);
  let data = value.data !== undefined ? value.data : value;
  let shape = value.shape;
  const rest = spec.shape.slice(1);
  if (!shape) {  // a flat array: infer the batch from the fixed dimensions
    if (rest.some((d) => d === null)) throw new InputError(`input '${spec.name}': give {data, shape}; it has dynamic dims`);
    const per = rest.reduce((a, b) => a * b, 1);
    if (data.length % per !== 0) throw new InputError(`input '${spec.name}': ${data.length} values is not a multiple of ${per}`);
    shape = [data.length / per, ...rest];
  }
  if (shape.length !== spec.shape.length) {
    throw new InputError(`input '${spec.name}': expected rank ${spec.shape.length}, got shape [${shape}]`);
  }
  spec.shape.forEach((d, i) => {
    if (d !== null && d !== shape[i]) throw new InputError(`input '${spec.name}': dimension ${i} must be ${d}, got shape [${shape}]`);
  });
  const count = shape.reduce((a, b) => a * b, 1);
  if (data.length !== count) throw new InputError(`input '${spec.name}': shape [${shape}] needs ${count} values, got ${data.length}`);
  if (!(data instanceof Ctor)) data = Ctor === BigInt64Array ? BigInt64Array.from(data, BigInt) : Ctor.from(data);
  return new ort.Tensor(type, data, shape);
}

export async function predict(inputs) {
  if (!session) throw new Error("call load() first");
  const names = signature.inputs.map((s) => s.name);
  if (!(inputs && typeof inputs === "object" && !ArrayBuffer.isView(inputs) && !Array.isArray(inputs))) {
    if (names.length !== 1) throw new InputError(`model has inputs ${names}: pass an object keyed by input name`);
    inputs = { [names[0]]: inputs };
  }
  const missing = names.filter((n) => !(n in inputs));
  const extra = Object.keys(inputs).filter((n) => !names.includes(n));
  if (missing.length || extra.length) throw new InputError(`input names: missing [${missing}], unexpected [${extra}]; expected [${names}]`);
  const feeds = {};
  for (const spec of signature.inputs) feeds[spec.name] = toTensor(spec, inputs[spec.name]);
  const results = await session.run(feeds);
  const out = {};
  for (const spec of signature.outputs) out[spec.name] = { data: results[spec.name].data, shape: results[spec.name].dims };
  return out;
}
