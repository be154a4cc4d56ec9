//! The `likewise` binary: parses arguments, runs the library, turns the outcome into an exit code.

use clap::Parser;

// candle allocates a fresh buffer for every tensor op; with glibc's allocator each large one is an
// mmap/munmap pair and fresh pages to fault in (a third of embedding time went to the kernel).
// mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use likewise::cli::{self, exit, Cli};

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let code = if e.use_stderr() {
            exit::USAGE
        } else {
            exit::SUCCESS
        };
        let _ = e.print();
        std::process::exit(code);
    });
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("likewise: error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
