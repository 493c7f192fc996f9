//! config.json parsing (RunConfig), a round trip through its own serialization, and the ddpm's U-Net graph a
//! loaded config describes (built on the CPU, nothing allocated on a GPU).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use latent::run::RunConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = RunConfig::from_json(text, Path::new("config.json")) else {
        return;
    };
    let again = serde_json::to_string(&config).expect("a parsed config serializes");
    let reparsed = RunConfig::from_json(&again, Path::new("config.json")).expect("a serialized config parses");
    assert_eq!(config, reparsed);
    // What `latent sample` and `--resume` build from a ddpm run's section, once its recipe has checked it.
    if config.model == "ddpm" && latent::models::ModelKind::Ddpm.recipe().check_config(&config).is_ok() {
        let ddpm: latent::models::ddpm::DdpmConfig = config.model_config().expect("checked above");
        let _ = latent::models::ddpm::objective(&ddpm, 1, (28, 28));
    }
});
