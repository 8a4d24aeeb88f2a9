//! Builds the XDP program (`src/driver/xdp/steer.bpf.c`) with clang when it
//! is installed. Without clang the build still succeeds: the binary then
//! carries no program and the xdp driver says so when it starts.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/driver/xdp/steer.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=RVS_CLANG");
    println!("cargo::rustc-check-cfg=cfg(rvs_xdp_program)");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("steer.bpf.o");
    let clang = std::env::var("RVS_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let status = Command::new(&clang)
        .args(["-O2", "-g0", "-Wall", "-Werror", "-target", "bpf", "-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => println!("cargo:rustc-cfg=rvs_xdp_program"),
        Ok(s) => panic!("{clang} failed to build {src} ({s})"),
        Err(e) => {
            let hint = "install clang for the xdp driver";
            println!("cargo:warning=XDP program not built ({clang}: {e}); {hint}");
        }
    }
}
