//! Compiles every `.proto` under `tether/` with protox (pure Rust, no system `protoc`) and writes
//! the descriptor set next to the generated code so servers can offer reflection.
use std::{
    env,
    path::{Path, PathBuf},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    collect_protos(Path::new("tether"), &mut files)?;
    files.sort();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(&files, ["."])?;
    std::fs::write(out_dir.join("tether_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        // RPCs whose issue has not landed answer UNIMPLEMENTED through the generated default.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=tether");
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            out.push(path);
        }
    }
    Ok(())
}
