//! The `shakedown` binary: a thin layer over the library.

fn main() -> std::process::ExitCode {
    shakedown::cli::main()
}
