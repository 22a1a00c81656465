use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "shoal/v1/objects.proto",
        "shoal/v1/events.proto",
        "shoal/v1/logs.proto",
        "shoal/v1/control.proto",
        "shoal/v1/dispatcher.proto",
        "shoal/v1/ca.proto",
        "shoal/v1/resolver.proto",
    ];
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // RPCs a later issue implements answer UNIMPLEMENTED until then.
        .generate_default_stubs(true)
        .file_descriptor_set_path(out.join("shoal_v1_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
