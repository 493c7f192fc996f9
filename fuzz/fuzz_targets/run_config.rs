//! config.json parsing (RunConfig), a round trip through its own serialization, and the graph a loaded config
//! describes at its batch (built on the CPU: shapes only, nothing allocated on a GPU).
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
    // The graph `latent sample`, `eval` and `--resume` build from it, once the model's recipe has checked the
    // config (the ddpm's own section, at the config's batch).
    let Ok(model) = config.model.parse::<latent::models::ModelKind>() else {
        return;
    };
    if model.recipe().check_config(&config).is_err() {
        return;
    }
    let _ = model.recipe().train_graph(config.batch, config.image);
    if config.model == "ddpm" {
        let ddpm: latent::models::ddpm::DdpmConfig = config.model_config().expect("checked above");
        let _ = latent::models::ddpm::objective(&ddpm, config.batch, config.image);
    }
});
