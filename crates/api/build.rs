//! Generates the gRPC code and the descriptor set for reflection from `proto/`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // The CLI prints responses as JSON.
        .type_attribute(".cmdm.v1", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out.join("cmdm_descriptor.bin"))
        .compile_with_config(config, &["../../proto/cmdm/v1/hub.proto"], &["../../proto"])?;
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
