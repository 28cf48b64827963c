#!/usr/bin/env node
// A wasmforge artifact in Node, through the embedding ABI (no npm, no flags).
//
//   node examples/node/classify.mjs dist/lenet-digits-simd128
//       runs the artifact's reference cases (reference/caseN/*.npy) and checks
//       the outputs against onnxruntime's with the manifest's tolerance;
//   node examples/node/classify.mjs dist/lenet-digits-simd128 --pixels 0,0,5,13,...
//       classifies one 8x8 digit given as 64 integers 0..16 (sklearn's
//       load_digits convention; the module's preprocessing divides by 16).
//
// Exit code 0: every case matches; 1: a mismatch; 2: the artifact cannot run
// here (e.g. a relaxed-SIMD build on Node 20) or a bad argument. Failures are
// one `error:` line on stderr.

import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

import { argmax, load, WasmforgeError } from "../../web/wasmforge.js";

const NPY_TYPES = {
  "<f4": Float32Array,
  "<f8": Float64Array,
  "<i4": Int32Array,
  "<i8": BigInt64Array,
  "|u1": Uint8Array,
  "|b1": Uint8Array,
  "|i1": Int8Array,
};

/** A little-endian, C-order .npy file as { data: TypedArray, shape }. */
function readNpy(path) {
  const bytes = readFileSync(path);
  if (bytes.toString("latin1", 1, 6) !== "NUMPY") throw new WasmforgeError(`${path} is not a .npy file`);
  const headerLength = bytes[6] === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const start = bytes[6] === 1 ? 10 : 12;
  const header = bytes.toString("latin1", start, start + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "")
    .split(",")
    .filter((d) => d.trim())
    .map(Number);
  if (/'fortran_order':\s*True/.test(header) || !NPY_TYPES[descr]) {
    throw new WasmforgeError(`${path}: only C-order ${Object.keys(NPY_TYPES).join(", ")} are read here`);
  }
  const body = bytes.subarray(start + headerLength);
  const copy = new Uint8Array(body.length);
  copy.set(body);
  return { data: new NPY_TYPES[descr](copy.buffer), shape };
}

function maxAbs(values) {
  let m = 0;
  for (const v of values) m = Math.max(m, Math.abs(Number(v)));
  return m;
}

function checkReferenceCases(model, directory, manifest) {
  const rule = manifest.reference;
  const cases = readdirSync(join(directory, "reference")).filter((c) => /^case\d+$/.test(c)).sort();
  let failed = 0;
  for (const name of cases) {
    const inputs = model.inputs.map((_, i) => readNpy(join(directory, "reference", name, `input${i}.npy`)).data);
    const outputs = model.run(inputs);
    let diff = 0;
    let reference = 0;
    let sameTop1 = true;
    outputs.forEach((got, i) => {
      const want = readNpy(join(directory, "reference", name, `output${i}.npy`)).data;
      for (let k = 0; k < want.length; k++) diff = Math.max(diff, Math.abs(Number(got[k]) - Number(want[k])));
      reference = Math.max(reference, maxAbs(want));
      if (want.length > 1 && want instanceof Float32Array) sameTop1 &&= argmax(got) === argmax(want);
    });
    const tolerance = Math.max(rule.relative_tolerance * reference, rule.absolute_floor);
    const ok = diff <= tolerance && sameTop1;
    failed += ok ? 0 : 1;
    console.log(
      `${name}: max abs diff ${diff.toExponential(2)} (tolerance ${tolerance.toExponential(2)}), ` +
        `top-1 ${sameTop1 ? "equal" : "DIFFERENT"}: ${ok ? "ok" : "MISMATCH"}`,
    );
  }
  return failed;
}

function parsePixels(text) {
  const values = text.split(",").map((v) => Number(v.trim()));
  if (values.length !== 64 || values.some((v) => !Number.isInteger(v) || v < 0 || v > 16)) {
    throw new WasmforgeError("--pixels needs 64 comma-separated integers 0..16 (an 8x8 digit, row by row)");
  }
  return values;
}

async function main(argv) {
  const [directory, flag, value, ...rest] = argv;
  if (!directory || (flag && (flag !== "--pixels" || !value)) || rest.length) {
    throw new WasmforgeError("usage: node examples/node/classify.mjs DIST_DIR [--pixels P0,...,P63]");
  }
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(directory, "manifest.json"), "utf8"));
  } catch (error) {
    throw new WasmforgeError(`${directory} is not a wasmforge artifact: ${error.message}`);
  }
  const model = await load(readFileSync(join(directory, manifest.wasm)));
  console.log(`${model.info.model}: needs ${model.info.features.join(", ")}`);
  if (model.info.preprocessing) console.log(`preprocessing: ${model.info.preprocessing}`);
  if (flag === "--pixels") {
    const pixels = parsePixels(value);
    const [logits] = model.run([Float32Array.from(pixels, (p) => p / 16)]);
    console.log(`digit: ${argmax(logits)}`);
    return 0;
  }
  return checkReferenceCases(model, directory, manifest) ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(`error: ${error instanceof WasmforgeError ? error.message : String(error)}`);
    process.exit(2);
  },
);
