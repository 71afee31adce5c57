//! Warns, loudly, when the thumbnail decoder is about to be built without its SIMD
//! assembly: openh264's build script assembles its x86 kernels with nasm when nasm is
//! installed and otherwise, silently, builds without them (a thumbnail then costs
//! 2-3 % more CPU: BENCHMARKS.md, "Thumbnails: what nasm gains"). The suite fails on such a binary (`node/tests/thumbnails.rs`); this says
//! why at build time. `scripts/build-deps.sh` installs nasm and clears the stale
//! openh264 build.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PATH");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !matches!(arch.as_str(), "x86_64" | "x86") {
        return;
    }
    let nasm = std::process::Command::new("nasm").arg("-v").output();
    if !nasm.is_ok_and(|o| o.status.success()) {
        println!(
            "cargo:warning=nasm is not installed: openh264 (the H.264 thumbnail decoder) is built \
             WITHOUT its SIMD assembly (each thumbnail costs a few % more CPU). Install it (Debian: \
             apt-get install nasm, or bash scripts/build-deps.sh), then run \
             `cargo clean -p openh264-sys2` and build again."
        );
    }
}
