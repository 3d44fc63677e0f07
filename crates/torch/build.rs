//! Bake the LibTorch library folder that torch-sys linked against into `pipe-torch` as
//! its run-time search path, so the worker starts without LD_LIBRARY_PATH (torch-sys
//! passes the folder on as `DEP_TCH_LIBTORCH_LIB`; see its `links = "tch"`).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        println!("cargo:rustc-env=PIPE_TORCH_LIBTORCH_LIB={dir}");
    }
}
