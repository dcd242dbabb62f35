//! Builds the worker's optional native fast path, `src/worker/native/amy_native.c`,
//! into a shared object that `contract::NATIVE_MODULE` embeds (the module's own
//! comment says why; `python/amy_worker/native.py` how a worker loads it). It needs only a C compiler — the one that links Rust on
//! Linux — and no Python headers (`stable_abi.h`). Without a compiler the build
//! still succeeds: the embedded module is empty and every worker uses its stdlib
//! parser (a cargo warning says so).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/worker/native/amy_native.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=src/worker/native/stable_abi.h");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("amy_native.so");
    let built =
        std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") && compile(src, &out);
    if !built {
        std::fs::write(&out, b"").expect("write the empty native module");
    }
}

/// `cc -shared` with the target's C compiler as the `cc` crate finds it (CC,
/// CFLAGS, cross-compilers). Freestanding: the object needs no libc, only the
/// symbols of the CPython that loads it, so it works under glibc and musl alike.
fn compile(src: &str, out: &std::path::Path) -> bool {
    let compiler = match cc::Build::new()
        .cargo_metadata(false)
        .opt_level(2)
        .debug(false)
        .try_get_compiler()
    {
        Ok(c) => c,
        Err(e) => {
            println!("cargo:warning=no C compiler ({e}): workers use the stdlib uwsgi parser");
            return false;
        }
    };
    let mut cmd: Command = compiler.to_command();
    cmd.args([
        "-shared",
        "-fPIC",
        "-ffreestanding",
        "-fno-builtin",
        "-fno-tree-loop-distribute-patterns",
        "-nostdlib",
        "-fvisibility=hidden",
        "-Wall",
        "-Wextra",
        "-o",
    ])
    .arg(out)
    .arg(src);
    match cmd.status() {
        Ok(s) if s.success() => true,
        other => {
            println!("cargo:warning=building {src} failed ({other:?}): workers use the stdlib uwsgi parser");
            false
        }
    }
}
