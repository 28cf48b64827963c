// wasmforge in JavaScript: load a wasmforge .wasm and run it through its
// embedding ABI (docs/embedding.md). Shared by the browser demo (web/) and the
// Node example (examples/node/); an ES module with no dependency.
//
// The module imports only `wasi_snapshot_preview1`, and the ABI calls none of
// those functions: the import object below answers every one with ENOSYS
// (and `proc_exit` with an exception), so no file, clock or environment is
// ever handed to the module.

export const ABI_VERSION = 1;
const ENOSYS = 52;

// Two tiny modules: one f32x4.add (simd128) and one f32x4.relaxed_madd
// (relaxed-simd), to ask the engine what it supports before compiling.
function probe(simdBody) {
  const v128 = [0xfd, 0x0c, ...new Array(16).fill(0)];
  const body = [0x00, ...v128, ...v128, ...v128, ...simdBody, 0x1a, 0x0b];
  const code = [0x01, body.length, ...body];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
    0x03, 0x02, 0x01, 0x00, // one function of type 0
    0x0a, code.length, ...code,
  ]);
}

/** Which of the features wasmforge builds use the engine running this code supports. */
export function engineFeatures() {
  return {
    // Three v128.const; f32x4.add and a drop leave one, dropped by probe().
    simd128: WebAssembly.validate(probe([0xfd, 0xe4, 0x01, 0x1a])),
    "relaxed-simd": WebAssembly.validate(probe([0xfd, 0x85, 0x02])),
  };
}

/** An error a host can show as is: one line saying what to do. */
export class WasmforgeError extends Error {}

function explainCompileError(error) {
  const supported = engineFeatures();
  if (!supported["relaxed-simd"]) {
    return new WasmforgeError(
      "this engine has no relaxed SIMD, which the module needs (a default build, " +
        "--features relaxed-simd): use a portable build (invoke build --features simd128), " +
        "or an engine with relaxed SIMD (Node 22+, Chromium 114+; Node 20 only with " +
        `--experimental-wasm-relaxed-simd). The engine said: ${error.message}`,
    );
  }
  if (!supported.simd128) {
    return new WasmforgeError(`this engine has no WebAssembly SIMD: ${error.message}`);
  }
  return new WasmforgeError(`the module does not compile here: ${error.message}`);
}

/** Import object for a module: every WASI function a stub (see the top of this file). */
export function stubImports(module) {
  const wasi = {};
  for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
    if (from !== "wasi_snapshot_preview1" || kind !== "function") {
      throw new WasmforgeError(`not a wasmforge module: it imports ${from}.${name}`);
    }
    wasi[name] =
      name === "proc_exit"
        ? (code) => {
            throw new WasmforgeError(`the module exited with code ${code}`);
          }
        : () => ENOSYS;
  }
  return { wasi_snapshot_preview1: wasi };
}

const TYPED = {
  float32: Float32Array,
  float64: Float64Array,
  int8: Int8Array,
  int16: Int16Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
};

/** A wasmforge module instantiated once, run as often as wanted. */
export class Model {
  constructor(instance) {
    this.exports = instance.exports;
    const version = this.exports.wasmforge_abi_version?.();
    if (version !== ABI_VERSION) {
      throw new WasmforgeError(
        `the module exports embedding ABI ${version ?? "none"}, this code speaks ${ABI_VERSION}`,
      );
    }
    this.info = JSON.parse(this.#text(this.exports.wasmforge_info_ptr(), this.exports.wasmforge_info_len()));
    const status = this.exports.wasmforge_init();
    if (status !== 0) throw new WasmforgeError(this.#error());
  }

  get inputs() {
    return this.info.inputs;
  }

  get outputs() {
    return this.info.outputs;
  }

  // Views are made after every call: memory may grow, which detaches old buffers.
  #bytes(pointer, length) {
    return new Uint8Array(this.exports.memory.buffer, pointer, length);
  }

  #text(pointer, length) {
    return new TextDecoder().decode(this.#bytes(pointer, length));
  }

  #error() {
    return this.#text(this.exports.wasmforge_error_ptr(), this.exports.wasmforge_error_len());
  }

  /**
   * Runs the model. `inputs`: one typed array (or plain array of numbers) per
   * graph input, in order, row-major; returns one typed array per output (copies).
   */
  run(inputs) {
    if (inputs.length !== this.inputs.length) {
      throw new WasmforgeError(`expected ${this.inputs.length} inputs, got ${inputs.length}`);
    }
    this.inputs.forEach((spec, i) => {
      const Typed = TYPED[spec.dtype];
      const data = inputs[i] instanceof Typed ? inputs[i] : Typed.from(inputs[i]);
      const length = this.exports.wasmforge_input_len(i);
      if (data.byteLength !== length) {
        throw new WasmforgeError(
          `input '${spec.name}': expected ${length / Typed.BYTES_PER_ELEMENT} ${spec.dtype} ` +
            `values (shape [${spec.shape}]), got ${data.length}`,
        );
      }
      const pointer = this.exports.wasmforge_input_ptr(i);
      this.#bytes(pointer, length).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    });
    const status = this.exports.wasmforge_run();
    if (status !== 0) throw new WasmforgeError(`run failed (status ${status}): ${this.#error()}`);
    return this.outputs.map((spec, i) => {
      const bytes = this.#bytes(this.exports.wasmforge_output_ptr(i), this.exports.wasmforge_output_len(i));
      return new TYPED[spec.dtype](bytes.slice().buffer);
    });
  }
}

/** Compiles and instantiates `bytes` (a .wasm); a WasmforgeError says why not. */
export async function load(bytes) {
  let module;
  try {
    module = await WebAssembly.compile(bytes);
  } catch (error) {
    throw error instanceof WebAssembly.CompileError ? explainCompileError(error) : error;
  }
  const instance = await WebAssembly.instantiate(module, stubImports(module));
  return new Model(instance);
}

/** Index of the largest value: the class of a classifier's logits. */
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
