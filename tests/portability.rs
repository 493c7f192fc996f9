//! Every shader translates with naga to SPIR-V (Vulkan), MSL (Metal) and HLSL (DX12).
//!
//! We can only run on Vulkan here; this is how Metal and DX12 users keep working. A failure names the shader,
//! the backend and naga's error.

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

use latent::shaders::{self, Capability, Shader};

#[derive(Clone, Copy, Debug)]
enum Target {
    SpirV,
    Msl,
    Hlsl,
}

impl Target {
    const ALL: [Target; 3] = [Target::SpirV, Target::Msl, Target::Hlsl];

    fn capabilities(self) -> Capabilities {
        match self {
            Target::SpirV => spv::supported_capabilities(),
            Target::Msl => msl::supported_capabilities(),
            Target::Hlsl => hlsl::supported_capabilities(),
        }
    }
}

fn naga_capability(capability: Capability) -> Capabilities {
    match capability {
        Capability::Subgroups => Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER,
        Capability::F16 => Capabilities::SHADER_FLOAT16,
        Capability::CooperativeMatrix => Capabilities::COOPERATIVE_MATRIX,
    }
}

/// Translates one shader for one target; `Err` carries naga's message.
fn translate(shader: &Shader, target: Target) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(shader.source).map_err(|e| format!("parse: {}", e.message()))?;
    // The registry names capability groups (`Capability::Subgroups` is subgroup operations and subgroup
    // barriers); what decides whether a backend can run the shader is whether it validates with the
    // capabilities naga's writer for that backend supports.
    let needed = shader
        .requires
        .iter()
        .fold(Capabilities::empty(), |acc, c| acc | naga_capability(*c));
    let info = Validator::new(ValidationFlags::all(), target.capabilities())
        .validate(&module)
        .map_err(|e| {
            let missing = needed - target.capabilities();
            format!(
                "validation with naga's {target:?} capabilities (it lacks {missing:?}): {}",
                e.as_inner()
            )
        })?;
    match target {
        Target::SpirV => {
            let options = spv::Options {
                lang_version: (1, 3),
                ..Default::default()
            };
            spv::write_vec(&module, &info, &options, None).map_err(|e| e.to_string())?;
        }
        Target::Msl => {
            let options = msl::Options {
                lang_version: (2, 4),
                ..Default::default()
            };
            for entry in &module.entry_points {
                let pipeline = msl::PipelineOptions {
                    entry_point: Some((entry.stage, entry.name.clone())),
                    ..Default::default()
                };
                msl::write_string(&module, &info, &options, &pipeline)
                    .map_err(|e| format!("entry point {}: {e}", entry.name))?;
            }
        }
        Target::Hlsl => {
            let options = hlsl::Options {
                shader_model: hlsl::ShaderModel::V6_2,
                ..Default::default()
            };
            let pipeline = hlsl::PipelineOptions::default();
            let mut out = String::new();
            hlsl::Writer::new(&mut out, &options, &pipeline)
                .write(&module, &info, None)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[test]
fn every_shader_translates_to_spirv_msl_and_hlsl() {
    let mut failures = Vec::new();
    for shader in shaders::ALL {
        for target in Target::ALL {
            if let Err(message) = translate(shader, target) {
                failures.push(format!("{} -> {target:?}: {message}", shader.path));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} translation(s) failed (these shaders would not run on that backend):\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{} shaders translate to SPIR-V, MSL and HLSL", shaders::ALL.len());
}
