//! Generates the protobuf payload types of `proto/cmdm/v1/events.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.btree_map(["."]);
    config.compile_protos(&["../../proto/cmdm/v1/events.proto"], &["../../proto"])?;
    println!("cargo:rerun-if-changed=../../proto/cmdm/v1/events.proto");
    Ok(())
}
