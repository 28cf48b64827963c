"""ONNX backend conformance: the onnx package's backend test cases through the
real pipeline (builder image -> .wasm -> wasmtime), judged against the cases'
own outputs. `invoke conformance` calls `run.conformance`; docs/conformance.md
describes the result.

- `cases`: the suites, node/light data generation, seeded sampling, reading a case;
- `results`: statuses, classification, output comparison, the resumable cache;
- `run`: chunked builder runs and judging each case;
- `report`: docs/conformance.json and the markdown generated from it.
"""
