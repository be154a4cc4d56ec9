//! The `likewise` binary: parses arguments, runs the library, turns the outcome into an exit code.

use clap::Parser;

// candle allocates a fresh buffer for every tensor op; with glibc's allocator each large one is an
// mmap/munmap pair and fresh pages to fault in (a third of embedding time went to the kernel).
// mimalloc keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use likewise::cli::{self, exit, Cli};

/// mimalloc's `mi_option_purge_delay` (v3 `mi_option_e`, index 15 in libmimalloc-sys 0.1.49, pinned
/// by Cargo.lock).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Keep freed memory instead of returning it to the OS 10 ms later: the next batch needs the
    // same buffers, and fresh pages cost a kernel page fault and zeroing each (+7% tokens/s).
    // SAFETY: sets a process-wide allocator option; valid at any time, and done before any thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
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
        Err(cli::CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::SUCCESS,
        Err(e) => {
            eprintln!("likewise: error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
