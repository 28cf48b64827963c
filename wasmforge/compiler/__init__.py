"""The compiler: what runs inside the builder image (ONNX -> kernels, plan, params -> .wasm).

Data flows one way: the host sends one `request.BuildRequest` (JSON) to
`python -m wasmforge.compiler build`, and reads one `request.JobResult` line
per model back from the container's output. Modules:

- `request`: the request/result data (no heavy imports; the host uses it too);
- `frontend`: load and vet the ONNX file, fix input shapes, import into Relax;
- `prepare`: ONNX-level fixes of real-world exports before the frontend, with
  `onnx_fold` (constant folding, constant If/Where) and `onnx_versions`
  (opset conversion, function bodies);
- `optimize`: blocked-layout convolutions with a hand schedule, falling back
  to TVM's default pipeline; the wasm TIR pipeline;
- `plan`: the execution plan (docs/plan-format.md) from the lowered `main`;
- `graph_lib`: lower + compile -> `libgraph_wasm32.a`, `plan.json`, `params.bin`;
- `module`: run a request, cargo-building one `.wasm` per model;
- `native_plan`: run a plan with host-compiled kernels (tests, bench);
- `tune`: MetaSchedule tuning databases.
"""
