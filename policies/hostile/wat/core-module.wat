;; A core wasm module, not a component: the host must say so.
(module
  (func (export "decide") (result i32) i32.const 0)
)
