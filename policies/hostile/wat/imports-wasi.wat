;; A component that imports WASI (wasi:cli/environment) besides exporting a
;; `decide`-shaped function; the host must refuse it at load, naming the import.
(component
  (import "wasi:cli/environment@0.2.0" (instance
    (export "get-arguments" (func (result (list string))))
  ))
)
