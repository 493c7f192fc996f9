//! The checkpoint loader on a safetensors file's bytes, then what loading a run asks of it: the model, the
//! step, and every tensor by its own name and shape.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use latent::checkpoint::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(checkpoint) = Checkpoint::from_bytes(data, Path::new("fuzz.safetensors")) else {
        return;
    };
    let _ = checkpoint.expect_model("vae");
    let _ = checkpoint.meta::<u64>("step");
    for (name, tensor) in &checkpoint.tensors {
        let _ = checkpoint.f32(name, &tensor.shape);
        let _ = checkpoint.i64(name, &tensor.shape);
    }
    // What loads also saves (the run goes on from it).
    let _ = checkpoint.to_bytes(Path::new("fuzz.safetensors"));
});
