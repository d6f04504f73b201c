//! Empty on purpose: this crate exists for its `[dependencies]`, which give every Lambda
//! function the same feature set so that `sam build`'s one-function-at-a-time builds share
//! their compiled dependencies (see Cargo.toml).
