//! The release binary lays out the functions a running server uses together
//! (the list is `link-order.txt`, written by `benches/link-order.sh`): the
//! kernel maps code around each page it faults in, and with those functions
//! spread over the 104 MB of code a server that had answered one SQL query
//! held 67 MiB of it resident, against 48 MiB laid out (README, Performance).
//! Only for release builds with the toolchain's own linker (LLD) on x86-64
//! Linux, the one that reads such a list; tests and other targets link as usual.

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let lld_target = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let list = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("link-order.txt");
    if var("PROFILE") == "release" && lld_target && list.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        // Functions of the list that a build no longer has are no error.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
